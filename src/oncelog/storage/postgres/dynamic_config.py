"""Dynamic broker configs in the database (table dynamic_config): every broker reads them at start and
again on a NOTIFY, so a change made through one broker is in force on all (`dynamic_config.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg

from oncelog.coordinator.runtime import Completion
from oncelog.dynamic_config import Entries
from oncelog.storage.postgres.listening import follow

logger = logging.getLogger(__name__)

CONFIGS_CHANNEL = "oncelog_configs"
REFRESH_S = 30.0


class PostgresDynamicConfigs:
    def __init__(self, url: str) -> None:
        self._url = url
        self._entries: Entries = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.on_change: Callable[[], None] = lambda: None

    async def open(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._listen(), name="pg-dynamic-configs")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def entries(self) -> Entries:
        return {entity: dict(values) for entity, values in self._entries.items()}

    async def refresh(self) -> None:
        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as connection:
            cursor = await connection.execute("SELECT entity, name, value FROM dynamic_config")
            entries: Entries = {}
            for entity, name, value in await cursor.fetchall():
                entries.setdefault(str(entity), {})[str(name)] = str(value)
        if entries != self._entries:
            self._entries = entries
            self.on_change()

    async def _listen(self) -> None:
        await follow(self._url, CONFIGS_CHANNEL, self.refresh, lambda: self._closed, "dynamic config", REFRESH_S)

    def replace(self, entity: str, values: dict[str, str]) -> Completion[OSError | None]:
        completion: Completion[OSError | None] = Completion()

        async def run() -> None:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as connection, \
                        connection.transaction():
                    await connection.execute("DELETE FROM dynamic_config WHERE entity = %s", (entity,))
                    async with connection.cursor() as cursor:
                        await cursor.executemany("INSERT INTO dynamic_config VALUES (%s, %s, %s)",
                                                 [(entity, name, value) for name, value in values.items()])
                    await connection.execute("SELECT pg_notify(%s, '')", (CONFIGS_CHANNEL,))
            except Exception as error:  # psycopg's or other: answered, never left hanging
                completion.resolve(OSError(f"the database refused the change: {error}"))
                return
            with contextlib.suppress(Exception):  # else the notification brings it
                await self.refresh()
            completion.resolve(None)

        asyncio.get_running_loop().create_task(run())
        return completion



