"""Kafka's ACL model and its authorization rule (`StandardAuthorizer`, `AclAuthorizer`).

An ACL binds a resource pattern (type, name, LITERAL or PREFIXED) to an entry (principal, host,
operation, ALLOW or DENY). A request by principal P from host H to do operation O on resource R is:

1. allowed if P is a super user (`super.users=User:admin;User:ops`);
2. denied if any DENY ACL matches: its pattern matches R (the literal name, the wildcard `*`, or a
   prefix of R's name), its principal is P or `User:*`, its host is H or `*`, its operation is O or ALL;
3. allowed if any ALLOW ACL matches in the same way, where an ALLOW of READ, WRITE, DELETE or ALTER
   also allows DESCRIBE, and an ALLOW of ALTER_CONFIGS also allows DESCRIBE_CONFIGS (Kafka's implied
   operations; DENY implies nothing);
4. otherwise allowed only if no ACL at all matches R and `allow.everyone.if.no.acl.found=true`.

Filters (DescribeAcls, DeleteAcls) use ANY for a type, operation or permission, and pattern type
MATCH, which selects every pattern that would apply to a literal name.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .principal import KafkaPrincipal


class ResourceType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Operation(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class Permission(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"
IMPLIED_BY_ALLOW = {
    Operation.DESCRIBE: {Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER},
    Operation.DESCRIBE_CONFIGS: {Operation.ALTER_CONFIGS},
}
"""Kafka's AclEntry.supportedOperations implications: an ALLOW of any of these also allows the key."""


@functools.lru_cache(maxsize=4096)
def normal_host(host: str) -> str:
    """One spelling per address: Java writes IPv6 in full (`0:0:0:0:0:0:0:1`), Python compressed (`::1`)."""
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


class AclError(ValueError):
    """An ACL or filter is invalid (INVALID_REQUEST); the message says why."""


@dataclass(frozen=True, slots=True)
class AclBinding:
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: Operation
    permission: Permission

    def validate(self) -> None:
        """Kafka's checks for a binding that is to be stored."""
        if self.resource_type in (ResourceType.ANY, ResourceType.UNKNOWN):
            raise AclError("the resource type must be a concrete type, not ANY or UNKNOWN")
        if self.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
            raise AclError("the pattern type must be LITERAL or PREFIXED")
        if self.operation in (Operation.ANY, Operation.UNKNOWN):
            raise AclError("the operation must be a concrete operation or ALL, not ANY or UNKNOWN")
        if self.permission not in (Permission.ALLOW, Permission.DENY):
            raise AclError("the permission must be ALLOW or DENY")
        if not self.resource_name:
            raise AclError("the resource name must not be empty")
        if self.resource_type == ResourceType.CLUSTER and (self.resource_name != CLUSTER_NAME
                                                           or self.pattern_type != PatternType.LITERAL):
            raise AclError(f"the cluster resource is the literal name {CLUSTER_NAME}")
        if self.pattern_type == PatternType.PREFIXED and self.resource_name == WILDCARD:
            raise AclError("a PREFIXED pattern cannot be the wildcard '*' (use LITERAL '*')")
        try:
            KafkaPrincipal.parse(self.principal)
        except ValueError as error:
            raise AclError(str(error)) from error
        if not self.host:
            raise AclError("the host must be an address or '*'")

    def pattern_matches(self, resource_type: ResourceType, name: str) -> bool:
        if self.resource_type != resource_type:
            return False
        if self.pattern_type == PatternType.LITERAL:
            return self.resource_name in (name, WILDCARD)
        return name.startswith(self.resource_name)

    def entry_matches(self, principal: str, host: str) -> bool:
        """`host` in `normal_host` form; the binding's host is compared in that form too."""
        return self.principal in (principal, WILDCARD_PRINCIPAL) and (self.host == WILDCARD
                                                                        or normal_host(self.host) == host)


@dataclass(frozen=True, slots=True)
class AclFilter:
    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: Operation = Operation.ANY
    permission: Permission = Permission.ANY

    def validate(self) -> None:
        for field_name, value in (("resource type", self.resource_type), ("pattern type", self.pattern_type),
                                  ("operation", self.operation), ("permission", self.permission)):
            if value == 0:
                raise AclError(f"the filter's {field_name} is UNKNOWN")

    def matches(self, binding: AclBinding) -> bool:
        if self.resource_type != ResourceType.ANY and binding.resource_type != self.resource_type:
            return False
        if not self._pattern_matches(binding):
            return False
        return ((self.principal is None or binding.principal == self.principal)
                and (self.host is None or binding.host == self.host)
                and (self.operation == Operation.ANY or binding.operation == self.operation)
                and (self.permission == Permission.ANY or binding.permission == self.permission))

    def _pattern_matches(self, binding: AclBinding) -> bool:
        if self.pattern_type == PatternType.MATCH:
            if self.resource_name is None:
                return True
            if binding.pattern_type == PatternType.LITERAL:
                return binding.resource_name in (self.resource_name, WILDCARD)
            return self.resource_name.startswith(binding.resource_name)
        if self.pattern_type != PatternType.ANY and binding.pattern_type != self.pattern_type:
            return False
        return self.resource_name is None or binding.resource_name == self.resource_name


@dataclass(frozen=True)
class AuthorizerConfig:
    enabled: bool = False
    super_users: frozenset[str] = frozenset()
    allow_if_no_acl: bool = False


class Authorizer:
    def __init__(self, config: AuthorizerConfig, acls: Iterable[AclBinding] = ()) -> None:
        self.config = config
        self._by_type: dict[ResourceType, list[AclBinding]] = {}
        self.replace(acls)

    def replace(self, acls: Iterable[AclBinding]) -> None:
        by_type: dict[ResourceType, list[AclBinding]] = {}
        for acl in acls:
            by_type.setdefault(acl.resource_type, []).append(acl)
        self._by_type = by_type

    def authorize(self, principal: KafkaPrincipal, host: str, operation: Operation, resource_type: ResourceType,
                  name: str) -> bool:
        if not self.config.enabled or str(principal) in self.config.super_users:
            return True
        who = str(principal)
        matching = [acl for acl in self._by_type.get(resource_type, ()) if acl.pattern_matches(resource_type, name)]
        applicable = [acl for acl in matching if acl.entry_matches(who, host)]
        if any(acl.permission == Permission.DENY and acl.operation in (operation, Operation.ALL)
               for acl in applicable):
            return False
        allowing = {operation, Operation.ALL} | IMPLIED_BY_ALLOW.get(operation, set())
        if any(acl.permission == Permission.ALLOW and acl.operation in allowing for acl in applicable):
            return True
        return not matching and self.config.allow_if_no_acl

    def authorize_any(self, principal: KafkaPrincipal, host: str, operation: Operation,
                      resource_type: ResourceType) -> bool:
        """Kafka's `Authorizer.authorizeByResourceType`: may the principal do `operation` on some resource
        of the type? Used for idempotent producers (KIP-679). As Kafka: a made-up name first (super users,
        allow.everyone.if.no.acl.found), then any ALLOW not dominated by a DENY — a literal DENY of the same
        name, or a PREFIXED DENY that is a prefix of it; a DENY on the literal wildcard refuses all."""
        if self.authorize(principal, host, operation, resource_type, "hardcode"):
            return True
        who = str(principal)
        denied: dict[PatternType, set[str]] = {PatternType.LITERAL: set(), PatternType.PREFIXED: set()}
        allowed: dict[PatternType, set[str]] = {PatternType.LITERAL: set(), PatternType.PREFIXED: set()}
        for acl in self._by_type.get(resource_type, ()):
            if not acl.entry_matches(who, host) or acl.operation not in (operation, Operation.ALL):
                continue
            if acl.permission == Permission.DENY:
                if acl.pattern_type == PatternType.LITERAL and acl.resource_name == WILDCARD:
                    return False
                denied[acl.pattern_type].add(acl.resource_name)
            elif acl.pattern_type == PatternType.LITERAL and acl.resource_name == WILDCARD:
                return True
            else:
                allowed[acl.pattern_type].add(acl.resource_name)
        for pattern_type, names in allowed.items():
            for name in names:
                if pattern_type == PatternType.LITERAL and name in denied[PatternType.LITERAL]:
                    continue
                if not any(name[:length] in denied[PatternType.PREFIXED] for length in range(1, len(name) + 1)):
                    return True
        return False
