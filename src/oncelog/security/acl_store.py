"""ACLs, durable: `<data dir>/acls.json`, replaced atomically on every change (as `credentials.py`).

Creating an ACL that exists already succeeds and changes nothing (Kafka's CreateAcls is idempotent);
deleting returns, per filter, the ACLs it removed. The in-memory list changes only after the file
was written, so a failed disk leaves both as they were and the caller answers with the error.
"""

from __future__ import annotations

import json
from pathlib import Path

from oncelog.fs import FileSystem, write_atomically

from .acl import AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType

FILE_NAME = "acls.json"


def _encode(acl: AclBinding) -> dict[str, object]:
    return {"resource_type": acl.resource_type.name, "resource_name": acl.resource_name,
            "pattern_type": acl.pattern_type.name, "principal": acl.principal, "host": acl.host,
            "operation": acl.operation.name, "permission": acl.permission.name}


def _decode(value: dict[str, str]) -> AclBinding:
    return AclBinding(ResourceType[value["resource_type"]], value["resource_name"], PatternType[value["pattern_type"]],
                      value["principal"], value["host"], Operation[value["operation"]], Permission[value["permission"]])


class AclStore:
    def __init__(self, fs: FileSystem, directory: Path) -> None:
        self._fs = fs
        self.path = directory / FILE_NAME
        self._acls: list[AclBinding] = []

    def load(self) -> None:
        if not self._fs.exists(self.path):
            return
        try:
            self._acls = [_decode(value) for value in json.loads(self._fs.read_bytes(self.path))["acls"]]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{self.path} is damaged ({error}); restore it from a backup (the broker will not "
                             "start without its ACLs)") from error

    def all(self) -> list[AclBinding]:
        return list(self._acls)

    def _write(self, acls: list[AclBinding]) -> None:
        write_atomically(self._fs, self.path, json.dumps({"acls": [_encode(acl) for acl in acls]}, indent=1).encode())
        self._acls = acls

    def create(self, bindings: list[AclBinding]) -> None:
        """Add `bindings` (those present already are kept once); raises OSError with nothing changed."""
        acls = list(dict.fromkeys([*self._acls, *bindings]))
        if acls != self._acls:
            self._write(acls)

    def delete(self, filters: list[AclFilter]) -> list[list[AclBinding]]:
        """Remove every ACL a filter matches; per filter, what it matched. Raises OSError, nothing changed."""
        matched = [[acl for acl in self._acls if acl_filter.matches(acl)] for acl_filter in filters]
        removed = {acl for acls in matched for acl in acls}
        if removed:
            self._write([acl for acl in self._acls if acl not in removed])
        return matched
