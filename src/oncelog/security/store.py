"""Where ACLs and SCRAM credentials live, behind one interface: local files, or PostgreSQL shared by
every broker (`storage/postgres/security.py`).

Reads are synchronous, from memory (the authorizer and the SASL exchange run on the event loop); writes
return a `Completion` that resolves once the change is durable — None, or the OSError that kept it from
being stored (nothing changed then). `on_change` is called whenever the ACLs or credentials changed,
here or (shared) on another broker, so the authorizer can rebuild its index.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from oncelog.coordinator.runtime import Completion, resolved
from oncelog.fs import FileSystem

from .acl import AclBinding, AclFilter
from .acl_store import AclStore
from .credentials import CredentialStore
from .scram import ScramCredential


class SecurityStore(Protocol):
    on_change: Callable[[], None]

    def acls(self) -> list[AclBinding]: ...
    def credential(self, user: str, mechanism: str) -> ScramCredential | None: ...
    def users(self) -> dict[str, dict[str, ScramCredential]]: ...
    def create_acls(self, bindings: list[AclBinding]) -> Completion[OSError | None]: ...
    def delete_acls(self, filters: list[AclFilter]) -> Completion[list[list[AclBinding]] | OSError]: ...
    def apply_credentials(self, upserts: list[tuple[str, ScramCredential]],
                          deletions: list[tuple[str, str]]) -> Completion[OSError | None]: ...


class LocalSecurityStore:
    """The data directory's `acls.json` and `scram-credentials.json`."""

    def __init__(self, fs: FileSystem, directory: Path) -> None:
        self._acls = AclStore(fs, directory)
        self._credentials = CredentialStore(fs, directory)
        self.on_change: Callable[[], None] = lambda: None

    def load(self) -> None:
        self._acls.load()
        self._credentials.load()

    def acls(self) -> list[AclBinding]:
        return self._acls.all()

    def credential(self, user: str, mechanism: str) -> ScramCredential | None:
        return self._credentials.get(user, mechanism)

    def users(self) -> dict[str, dict[str, ScramCredential]]:
        return self._credentials.users()

    def create_acls(self, bindings: list[AclBinding]) -> Completion[OSError | None]:
        try:
            self._acls.create(bindings)
        except OSError as error:
            return resolved(error)
        self.on_change()
        return resolved(None)

    def delete_acls(self, filters: list[AclFilter]) -> Completion[list[list[AclBinding]] | OSError]:
        try:
            matched = self._acls.delete(filters)
        except OSError as error:
            return resolved(error)
        self.on_change()
        return resolved(matched)

    def apply_credentials(self, upserts: list[tuple[str, ScramCredential]],
                          deletions: list[tuple[str, str]]) -> Completion[OSError | None]:
        try:
            self._credentials.apply(upserts, deletions)
        except OSError as error:
            return resolved(error)
        self.on_change()
        return resolved(None)
