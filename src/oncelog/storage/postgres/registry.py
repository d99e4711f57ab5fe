"""Brokers of a PostgreSQL-backed cluster: registration, heartbeats and the live set.

Theory of operation: at start a broker inserts (or takes over) its row in `broker` with a fresh
incarnation id and its advertised listeners; a row with the same id whose heartbeat is recent and whose
incarnation differs belongs to another live process, and the start is refused (two brokers with one id
would confuse clients, as Kafka refuses a duplicate broker.id). A heartbeat task refreshes the row every
`broker.heartbeat.interval.ms` and reads the live set: rows heard from within
`broker.session.timeout.ms` (PostgreSQL's clock decides, so brokers' clocks need not agree). A clean stop
deletes the row, so leadership moves at once; a killed broker drops out after the session timeout.

If the database is unreachable the last live set is kept (clients keep their leaders) and the heartbeat
retries; this broker's own requests answer retriable errors meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

import psycopg

from oncelog.cluster import BrokerInfo, rendezvous_owner

logger = logging.getLogger(__name__)


class DuplicateBrokerId(RuntimeError):
    """Another live broker already uses this broker id."""


class BrokerRegistry:
    def __init__(self, url: str, node_id: int, heartbeat_interval_ms: int, session_timeout_ms: int) -> None:
        self._url = url
        self.node_id = node_id
        self._interval_s = heartbeat_interval_ms / 1000
        self._session_ms = session_timeout_ms
        self._incarnation = uuid.uuid4()
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._live: list[BrokerInfo] = []
        self._task: asyncio.Task[None] | None = None
        self.endpoints: dict[str, tuple[str, int]] = {}

    async def open(self, endpoints: dict[str, tuple[str, int]]) -> None:
        """Register with the listeners' advertised addresses; DuplicateBrokerId if the id is taken."""
        self.endpoints = endpoints
        self._connection = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        async with self._connection.transaction():
            cursor = await self._connection.execute(
                "SELECT incarnation, now() - heartbeat_at < make_interval(secs => %s) FROM broker"
                " WHERE broker_id = %s FOR UPDATE", (self._session_ms / 1000, self.node_id))
            row = await cursor.fetchone()
            if row is not None and row[1] and row[0] != self._incarnation:
                raise DuplicateBrokerId(f"broker id {self.node_id} is in use by a live broker; give each broker "
                                        "its own --broker-id (or wait broker.session.timeout.ms after a crash)")
            await self._connection.execute(
                "INSERT INTO broker (broker_id, incarnation, endpoints) VALUES (%s, %s, %s)"
                " ON CONFLICT (broker_id) DO UPDATE SET incarnation = excluded.incarnation,"
                " endpoints = excluded.endpoints, started_at = now(), heartbeat_at = now()",
                (self.node_id, self._incarnation, json.dumps(_encode(endpoints))))
        await self._refresh()
        self._task = asyncio.create_task(self._heartbeats(), name="broker-heartbeat")
        logger.info("registered as broker %d; live brokers: %s", self.node_id,
                    [broker.node_id for broker in self._live])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._connection is not None:
            try:
                await self._connection.execute("DELETE FROM broker WHERE broker_id = %s AND incarnation = %s",
                                               (self.node_id, self._incarnation))
            except psycopg.Error as error:
                logger.warning("could not deregister broker %d: %s", self.node_id, error)
            await self._connection.close()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._beat()
            except psycopg.Error as error:
                logger.warning("broker heartbeat failed (%s); keeping the last live set", error)
                await self._reconnect()

    async def _beat(self) -> None:
        assert self._connection is not None
        cursor = await self._connection.execute(
            "UPDATE broker SET heartbeat_at = now() WHERE broker_id = %s AND incarnation = %s",
            (self.node_id, self._incarnation))
        if cursor.rowcount == 0:  # deleted, or taken over after we were silent too long: register again
            await self._connection.execute(
                "INSERT INTO broker (broker_id, incarnation, endpoints) VALUES (%s, %s, %s)"
                " ON CONFLICT (broker_id) DO NOTHING",
                (self.node_id, self._incarnation, json.dumps(_encode(self.endpoints))))
        await self._refresh()

    async def _reconnect(self) -> None:
        if self._connection is not None and not self._connection.broken and not self._connection.closed:
            return
        with contextlib.suppress(psycopg.Error):
            self._connection = await psycopg.AsyncConnection.connect(self._url, autocommit=True)

    async def _refresh(self) -> None:
        assert self._connection is not None
        cursor = await self._connection.execute(
            "SELECT broker_id, endpoints FROM broker WHERE now() - heartbeat_at < make_interval(secs => %s)"
            " ORDER BY broker_id", (self._session_ms / 1000,))
        live = [BrokerInfo(int(node_id), _decode(endpoints)) for node_id, endpoints in await cursor.fetchall()]
        if not any(broker.node_id == self.node_id for broker in live):
            live.append(BrokerInfo(self.node_id, self.endpoints))  # we are alive, whatever the table says
            live.sort(key=lambda broker: broker.node_id)
        self._live = live

    # --- the Cluster view ---------------------------------------------------------------------------

    def brokers(self) -> list[BrokerInfo]:
        return self._live or [BrokerInfo(self.node_id, self.endpoints)]

    def _ids(self) -> list[int]:
        return [broker.node_id for broker in self.brokers()]

    def leader(self, topic: str, partition: int) -> int:
        return rendezvous_owner(f"{topic}\x00{partition}", self._ids())

    def coordinator(self, key: str) -> int:
        return rendezvous_owner(key, self._ids())

    def controller(self) -> int:
        return min(self._ids())


def _encode(endpoints: dict[str, tuple[str, int]]) -> dict[str, list[Any]]:
    return {name: [host, port] for name, (host, port) in endpoints.items()}


def _decode(endpoints: Any) -> dict[str, tuple[str, int]]:
    return {str(name): (str(value[0]), int(value[1])) for name, value in dict(endpoints).items()}
