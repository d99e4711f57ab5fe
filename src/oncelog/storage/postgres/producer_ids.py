"""Producer ids for a cluster: blocks of 1000 from a PostgreSQL sequence, like Kafka's `ProducerIdManager`.

Theory of operation: `allocate()` is synchronous (handlers never await) and hands out ids from the block
this broker holds; when fewer than `PREFETCH_BELOW` are left a background task reserves the next block
(`nextval('producer_id_block')`, which no two brokers ever get twice, committed before use). With no id
left and the next block not yet there, `allocate` raises OSError, which InitProducerId answers as
COORDINATOR_NOT_AVAILABLE (retriable), as Kafka does while its block request is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from oncelog.coordinator.producer_ids import BLOCK_SIZE

logger = logging.getLogger(__name__)

PREFETCH_BELOW = 200


class BlockProducerIds:
    def __init__(self, url: str) -> None:
        self._url = url
        self._blocks: list[tuple[int, int]] = []
        """Reserved [next, end) ranges, oldest first."""
        self._fetching: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._fetch()

    async def close(self) -> None:
        if self._fetching is not None:
            self._fetching.cancel()
            await asyncio.gather(self._fetching, return_exceptions=True)

    def allocate(self) -> int:
        while self._blocks and self._blocks[0][0] >= self._blocks[0][1]:
            self._blocks.pop(0)
        left = sum(end - start for start, end in self._blocks)
        if left < PREFETCH_BELOW and (self._fetching is None or self._fetching.done()):
            self._fetching = asyncio.get_running_loop().create_task(self._fetch())
        if not self._blocks:
            raise OSError("no producer id block is reserved yet (PostgreSQL is slow or unreachable)")
        start, end = self._blocks[0]
        self._blocks[0] = (start + 1, end)
        return start

    async def _fetch(self) -> None:
        try:
            async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as connection:
                cursor = await connection.execute("SELECT nextval('producer_id_block')")
                row: Any = await cursor.fetchone()
        except psycopg.Error as error:
            logger.warning("cannot reserve a producer id block: %s", error)
            return
        block = int(row[0])
        self._blocks.append((block * BLOCK_SIZE, block * BLOCK_SIZE + BLOCK_SIZE))
