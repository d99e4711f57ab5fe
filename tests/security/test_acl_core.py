"""The ACL rule as Kafka's StandardAuthorizer applies it, filters, and the durable stores failing their
disk. No sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from oncelog.fs import OS_FILE_SYSTEM, Fault, FaultPlan, FaultyFileSystem
from oncelog.security.acl import (
    AclBinding,
    AclError,
    AclFilter,
    Authorizer,
    AuthorizerConfig,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)
from oncelog.security.acl_store import AclStore
from oncelog.security.credentials import CredentialStore
from oncelog.security.principal import KafkaPrincipal
from oncelog.security.scram import make_credential

ALICE, BOB, ADMIN = KafkaPrincipal("User", "alice"), KafkaPrincipal("User", "bob"), KafkaPrincipal("User", "admin")
T, G, TX, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID, ResourceType.CLUSTER


def acl(resource_type: ResourceType, name: str, principal: str, operation: Operation,
        permission: Permission = Permission.ALLOW, pattern: PatternType = PatternType.LITERAL,
        host: str = "*") -> AclBinding:
    return AclBinding(resource_type, name, pattern, principal, host, operation, permission)


def authorizer(*acls: AclBinding, allow_if_no_acl: bool = False) -> Authorizer:
    return Authorizer(AuthorizerConfig(True, frozenset({"User:admin"}), allow_if_no_acl), acls)


def test_without_an_authorizer_everything_is_allowed() -> None:
    assert Authorizer(AuthorizerConfig()).authorize(ALICE, "1.2.3.4", Operation.DELETE, T, "t")


def test_no_acl_means_denied_unless_allow_everyone_and_only_if_the_resource_has_no_acl_at_all() -> None:
    assert not authorizer().authorize(ALICE, "h", Operation.READ, T, "t")
    assert authorizer(allow_if_no_acl=True).authorize(ALICE, "h", Operation.READ, T, "t")
    someone_elses = authorizer(acl(T, "t", "User:bob", Operation.READ), allow_if_no_acl=True)
    assert not someone_elses.authorize(ALICE, "h", Operation.READ, T, "t")
    assert someone_elses.authorize(ALICE, "h", Operation.READ, T, "other")


def test_super_users_may_do_anything() -> None:
    assert authorizer(acl(T, "t", "User:*", Operation.ALL, Permission.DENY)).authorize(ADMIN, "h", Operation.ALTER,
                                                                                         C, "kafka-cluster")


def test_an_allow_implies_describe_but_nothing_else() -> None:
    rules = authorizer(acl(T, "t", "User:alice", Operation.READ), acl(G, "g", "User:alice", Operation.ALTER_CONFIGS))
    assert rules.authorize(ALICE, "h", Operation.READ, T, "t")
    assert rules.authorize(ALICE, "h", Operation.DESCRIBE, T, "t")
    assert not rules.authorize(ALICE, "h", Operation.WRITE, T, "t")
    assert rules.authorize(ALICE, "h", Operation.DESCRIBE_CONFIGS, G, "g")
    assert not rules.authorize(ALICE, "h", Operation.DESCRIBE, G, "g")


def test_deny_wins_and_implies_nothing() -> None:
    rules = authorizer(acl(T, "*", "User:*", Operation.ALL),
                       acl(T, "t", "User:alice", Operation.WRITE, Permission.DENY),
                       acl(T, "u", "User:alice", Operation.READ, Permission.DENY))
    assert not rules.authorize(ALICE, "h", Operation.WRITE, T, "t")
    assert rules.authorize(ALICE, "h", Operation.READ, T, "t")
    assert rules.authorize(BOB, "h", Operation.WRITE, T, "t")
    assert rules.authorize(ALICE, "h", Operation.DESCRIBE, T, "u")  # DENY READ does not deny DESCRIBE


def test_prefixed_patterns_and_literal_wildcards() -> None:
    rules = authorizer(acl(T, "orders-", "User:alice", Operation.WRITE, pattern=PatternType.PREFIXED),
                       acl(G, "*", "User:bob", Operation.READ))
    assert rules.authorize(ALICE, "h", Operation.WRITE, T, "orders-eu")
    assert not rules.authorize(ALICE, "h", Operation.WRITE, T, "order")
    assert rules.authorize(BOB, "h", Operation.READ, G, "any-group")
    assert not rules.authorize(BOB, "h", Operation.READ, T, "any-topic")


def test_hosts() -> None:
    rules = authorizer(acl(T, "t", "User:alice", Operation.READ, host="10.0.0.1"))
    assert rules.authorize(ALICE, "10.0.0.1", Operation.READ, T, "t")
    assert not rules.authorize(ALICE, "10.0.0.2", Operation.READ, T, "t")


def test_idempotent_producers_need_write_on_some_topic_or_idempotent_write() -> None:
    prefixed = authorizer(acl(T, "a-", "User:alice", Operation.WRITE, pattern=PatternType.PREFIXED))
    assert prefixed.authorize_any(ALICE, "h", Operation.WRITE, T)
    assert not prefixed.authorize_any(BOB, "h", Operation.WRITE, T)
    cancelled = authorizer(acl(T, "a-", "User:alice", Operation.WRITE, pattern=PatternType.PREFIXED),
                           acl(T, "a-", "User:alice", Operation.WRITE, Permission.DENY, PatternType.PREFIXED))
    assert not cancelled.authorize_any(ALICE, "h", Operation.WRITE, T)
    dominated = authorizer(acl(T, "orders", "User:alice", Operation.WRITE),
                           acl(T, "ord", "User:alice", Operation.WRITE, Permission.DENY, PatternType.PREFIXED))
    assert not dominated.authorize_any(ALICE, "h", Operation.WRITE, T)
    # allow.everyone.if.no.acl.found covers a topic without ACLs even when other topics have some.
    open_by_default = authorizer(acl(T, "secret", "User:bob", Operation.READ), allow_if_no_acl=True)
    assert open_by_default.authorize_any(ALICE, "h", Operation.WRITE, T)


@pytest.mark.parametrize("binding", [
    acl(ResourceType.ANY, "t", "User:a", Operation.READ),
    acl(T, "t", "User:a", Operation.ANY),
    acl(T, "t", "alice", Operation.READ),
    acl(T, "", "User:a", Operation.READ),
    acl(C, "other", "User:a", Operation.ALTER),
    acl(T, "*", "User:a", Operation.READ, pattern=PatternType.PREFIXED),
    AclBinding(T, "t", PatternType.MATCH, "User:a", "*", Operation.READ, Permission.ALLOW),
])
def test_invalid_bindings_are_refused(binding: AclBinding) -> None:
    with pytest.raises(AclError):
        binding.validate()


def test_match_filters_select_every_pattern_that_applies_to_a_name() -> None:
    literal, wildcard = acl(T, "orders-eu", "User:a", Operation.READ), acl(T, "*", "User:a", Operation.READ)
    prefix, other = (acl(T, "orders-", "User:a", Operation.READ, pattern=PatternType.PREFIXED),
                     acl(T, "payments", "User:a", Operation.READ))
    match = AclFilter(T, "orders-eu", PatternType.MATCH)
    assert [b for b in (literal, wildcard, prefix, other) if match.matches(b)] == [literal, wildcard, prefix]
    exact = AclFilter(ResourceType.ANY, "orders-", PatternType.PREFIXED)
    assert [b for b in (literal, wildcard, prefix, other) if exact.matches(b)] == [prefix]
    assert AclFilter(principal="User:b").matches(literal) is False


def test_acl_store_survives_a_restart_and_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    plan = FaultPlan()
    store = AclStore(FaultyFileSystem(OS_FILE_SYSTEM, plan), tmp_path)
    first = acl(T, "t", "User:alice", Operation.READ)
    store.create([first, first])
    plan.add(Fault("rename", path_contains="acls"))
    with pytest.raises(OSError):
        store.create([acl(T, "u", "User:bob", Operation.WRITE)])
    assert store.all() == [first]
    plan.add(Fault("fsync", path_contains="acls"))
    with pytest.raises(OSError):
        store.delete([AclFilter()])
    assert store.all() == [first]
    reloaded = AclStore(OS_FILE_SYSTEM, tmp_path)
    reloaded.load()
    assert reloaded.all() == [first]
    assert reloaded.delete([AclFilter(principal="User:alice")]) == [[first]] and reloaded.all() == []


def test_credential_store_failed_write_changes_nothing(tmp_path: Path) -> None:
    plan = FaultPlan()
    store = CredentialStore(FaultyFileSystem(OS_FILE_SYSTEM, plan), tmp_path)
    alice = make_credential("SCRAM-SHA-256", "a", 4096)
    store.apply([("alice", alice)], [])
    plan.add(Fault("write", path_contains="scram"))
    with pytest.raises(OSError):
        store.apply([("bob", make_credential("SCRAM-SHA-256", "b", 4096))], [("alice", "SCRAM-SHA-256")])
    assert store.users() == {"alice": {"SCRAM-SHA-256": alice}}
    reloaded = CredentialStore(OS_FILE_SYSTEM, tmp_path)
    reloaded.load()
    assert reloaded.get("alice", "SCRAM-SHA-256") == alice and reloaded.get("bob", "SCRAM-SHA-256") is None


def test_ipv6_hosts_match_in_either_spelling() -> None:
    from oncelog.security.acl import normal_host

    rules = authorizer(acl(T, "t", "User:alice", Operation.READ, host="0:0:0:0:0:0:0:1"))
    assert rules.authorize(ALICE, normal_host("::1"), Operation.READ, T, "t")
    assert not rules.authorize(ALICE, normal_host("::2"), Operation.READ, T, "t")


def test_a_database_password_is_never_described() -> None:
    from oncelog.config import redacted_url

    assert redacted_url("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert redacted_url("postgresql://app@db/x") == "postgresql://app@db/x"
    assert redacted_url("local") == "local"
    assert redacted_url("postgresql://db/x?password=s3cret") == "postgresql://db/x?password=***"
