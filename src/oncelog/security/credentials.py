"""SCRAM credentials, durable: `<data dir>/scram-credentials.json`, replaced atomically on every change.

Theory of operation: the store keeps user -> mechanism -> (salt, iterations, StoredKey, ServerKey),
never a password (AlterUserScramCredentials carries the salted password, from which the keys are
derived here). A change is written to a new file, fsynced, renamed over the old one and the directory
synced (`fs.write_atomically`); the in-memory copy changes only once that succeeded, so a failed disk
leaves both the file and the answers as they were, and the caller reports the failure.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from oncelog.fs import FileSystem, write_atomically

from .scram import ScramCredential

FILE_NAME = "scram-credentials.json"


def _encode(credential: ScramCredential) -> dict[str, object]:
    return {"salt": base64.b64encode(credential.salt).decode(), "iterations": credential.iterations,
            "stored_key": base64.b64encode(credential.stored_key).decode(),
            "server_key": base64.b64encode(credential.server_key).decode()}


def _decode(mechanism: str, value: dict[str, object]) -> ScramCredential:
    return ScramCredential(mechanism, base64.b64decode(str(value["salt"])), int(str(value["iterations"])),
                           base64.b64decode(str(value["stored_key"])), base64.b64decode(str(value["server_key"])))


class CredentialStore:
    def __init__(self, fs: FileSystem, directory: Path) -> None:
        self._fs = fs
        self.path = directory / FILE_NAME
        self._users: dict[str, dict[str, ScramCredential]] = {}

    def load(self) -> None:
        if not self._fs.exists(self.path):
            return
        try:
            document = json.loads(self._fs.read_bytes(self.path))
            self._users = {user: {mechanism: _decode(mechanism, value) for mechanism, value in mechanisms.items()}
                           for user, mechanisms in document["users"].items()}
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{self.path} is damaged ({error}); restore it from a backup or delete it and add "
                             "the users again") from error

    def get(self, user: str, mechanism: str) -> ScramCredential | None:
        return self._users.get(user, {}).get(mechanism)

    def users(self) -> dict[str, dict[str, ScramCredential]]:
        return {user: dict(mechanisms) for user, mechanisms in self._users.items()}

    def apply(self, upserts: list[tuple[str, ScramCredential]], deletions: list[tuple[str, str]]) -> None:
        """Change several credentials in one durable write; raises OSError (nothing changed) on failure."""
        users = self.users()
        for user, credential in upserts:
            users.setdefault(user, {})[credential.mechanism] = credential
        for user, mechanism in deletions:
            users.get(user, {}).pop(mechanism, None)
            if user in users and not users[user]:
                del users[user]
        document = {"users": {user: {mechanism: _encode(credential) for mechanism, credential in mechanisms.items()}
                              for user, mechanisms in sorted(users.items())}}
        write_atomically(self._fs, self.path, json.dumps(document, indent=1).encode())
        self._users = users
