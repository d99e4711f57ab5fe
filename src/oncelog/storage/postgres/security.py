"""ACLs and SCRAM credentials in PostgreSQL, shared by every broker of the cluster.

Theory of operation: each broker keeps the whole of both tables in memory (they are small) and serves
every authorization and SASL exchange from there. A change runs in one database transaction that also
sends a NOTIFY on `oncelog_security`; every broker listens and reloads both tables when it hears one
(and every `REFRESH_S` anyway, in case a notification was lost with a connection), so a new ACL or user
takes effect on all brokers within a round trip. The broker that made the change reloads before it
answers, so its own next request already sees it. A failed database answers the change with the
error (nothing changed) and keeps the last loaded state for reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

from oncelog.coordinator.runtime import Completion
from oncelog.security.acl import AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType
from oncelog.security.scram import ScramCredential
from oncelog.storage.postgres.listening import follow

logger = logging.getLogger(__name__)

SECURITY_CHANNEL = "oncelog_security"
REFRESH_S = 30.0
T = TypeVar("T")


class PostgresSecurityStore:
    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._acls: list[AclBinding] = []
        self._credentials: dict[str, dict[str, ScramCredential]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.on_change: Callable[[], None] = lambda: None

    async def open(self) -> None:
        self._connection = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        await self.refresh()
        self._task = asyncio.create_task(self._listen(), name="pg-security-listener")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()

    # --- reads (memory) --------------------------------------------------------------------------------

    def acls(self) -> list[AclBinding]:
        return list(self._acls)

    def credential(self, user: str, mechanism: str) -> ScramCredential | None:
        return self._credentials.get(user, {}).get(mechanism)

    def users(self) -> dict[str, dict[str, ScramCredential]]:
        return {user: dict(mechanisms) for user, mechanisms in self._credentials.items()}

    # --- loading ------------------------------------------------------------------------------------------

    async def refresh(self) -> None:
        async def load(connection: psycopg.AsyncConnection[Any]) -> tuple[list[Any], list[Any]]:
            acls = await (await connection.execute(
                "SELECT resource_type, resource_name, pattern_type, principal, host, operation, permission"
                " FROM acl")).fetchall()
            credentials = await (await connection.execute(
                "SELECT user_name, mechanism, salt, iterations, stored_key, server_key FROM scram_credential"
            )).fetchall()
            return acls, credentials

        acls, credentials = await self._locked(load)
        self._acls = [AclBinding(ResourceType(t), n, PatternType(p), principal, host, Operation(o), Permission(a))
                      for t, n, p, principal, host, o, a in acls]
        users: dict[str, dict[str, ScramCredential]] = {}
        for user, mechanism, salt, iterations, stored_key, server_key in credentials:
            users.setdefault(user, {})[mechanism] = ScramCredential(mechanism, bytes(salt), iterations,
                                                                     bytes(stored_key), bytes(server_key))
        self._credentials = users
        self.on_change()

    async def _locked(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """One statement sequence at a time on the store's connection (reconnecting once if it broke)."""
        async with self._lock:
            for attempt in (1, 2):
                if self._connection is None or self._connection.closed:
                    self._connection = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                try:
                    return await work(self._connection)
                except psycopg.OperationalError:
                    if attempt == 2:
                        raise
                    with contextlib.suppress(psycopg.Error):
                        await self._connection.close()
                    self._connection = None
            raise AssertionError("unreachable")

    async def _listen(self) -> None:
        await follow(self._url, SECURITY_CHANNEL, self.refresh, lambda: self._closed, "security", REFRESH_S)

    # --- changes ------------------------------------------------------------------------------------------

    def _change(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> Completion[T | OSError]:
        completion: Completion[T | OSError] = Completion()

        async def run() -> None:
            async def in_transaction(connection: psycopg.AsyncConnection[Any]) -> T:
                async with connection.transaction():
                    result = await work(connection)
                    await connection.execute("SELECT pg_notify(%s, '')", (SECURITY_CHANNEL,))
                return result

            try:
                result = await self._locked(in_transaction)
            except Exception as error:  # psycopg's, or anything else: the request is answered, never left hanging
                completion.resolve(OSError(f"the database refused the change: {error}"))
                return
            try:
                await self.refresh()
            except Exception as error:  # stored; our cache catches up on the next notification
                logger.warning("reloading security state after a change failed: %r", error)
            completion.resolve(result)

        asyncio.get_running_loop().create_task(run())
        return completion

    def create_acls(self, bindings: list[AclBinding]) -> Completion[OSError | None]:
        async def work(connection: psycopg.AsyncConnection[Any]) -> None:
            async with connection.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO acl VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(int(b.resource_type), b.resource_name, int(b.pattern_type), b.principal, b.host,
                      int(b.operation), int(b.permission)) for b in bindings])

        return self._change(work)

    def delete_acls(self, filters: list[AclFilter]) -> Completion[list[list[AclBinding]] | OSError]:
        async def work(connection: psycopg.AsyncConnection[Any]) -> list[list[AclBinding]]:
            await connection.execute("LOCK TABLE acl IN EXCLUSIVE MODE")  # match and delete one state
            rows = await (await connection.execute(
                "SELECT resource_type, resource_name, pattern_type, principal, host, operation, permission"
                " FROM acl")).fetchall()
            current = [AclBinding(ResourceType(t), n, PatternType(p), principal, host, Operation(o), Permission(a))
                       for t, n, p, principal, host, o, a in rows]
            matched = [[acl for acl in current if acl_filter.matches(acl)] for acl_filter in filters]
            async with connection.cursor() as cursor:
                await cursor.executemany(
                    "DELETE FROM acl WHERE resource_type = %s AND resource_name = %s AND pattern_type = %s"
                    " AND principal = %s AND host = %s AND operation = %s AND permission = %s",
                    [(int(b.resource_type), b.resource_name, int(b.pattern_type), b.principal, b.host,
                      int(b.operation), int(b.permission)) for b in {acl for acls in matched for acl in acls}])
            return matched

        return self._change(work)

    def apply_credentials(self, upserts: list[tuple[str, ScramCredential]],
                          deletions: list[tuple[str, str]]) -> Completion[OSError | None]:
        async def work(connection: psycopg.AsyncConnection[Any]) -> None:
            async with connection.cursor() as cursor:
                if upserts:
                    await cursor.executemany(
                        "INSERT INTO scram_credential VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (user_name,"
                        " mechanism) DO UPDATE SET salt = excluded.salt, iterations = excluded.iterations,"
                        " stored_key = excluded.stored_key, server_key = excluded.server_key",
                        [(user, c.mechanism, c.salt, c.iterations, c.stored_key, c.server_key) for user, c in upserts])
                if deletions:
                    await cursor.executemany("DELETE FROM scram_credential WHERE user_name = %s AND mechanism = %s",
                                             deletions)

        return self._change(work)
