"""Wake-ups for long-poll fetches: who waits on which partition.

`notify(key)` is called (synchronously, by the storage) whenever a partition's log changes;
`wait_any(keys, timeout)` parks a fetch until one of its partitions changes or the timeout passes. One
future per waiting fetch, so a busy partition wakes each parked fetch once per change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from oncelog.storage.api import PartitionKey


class DataWaiters:
    def __init__(self) -> None:
        self._by_log: dict[PartitionKey, set[asyncio.Future[None]]] = defaultdict(set)

    def notify(self, key: PartitionKey) -> None:
        futures = self._by_log.pop(key, None)
        if not futures:
            return
        for future in futures:
            if not future.done():
                future.set_result(None)

    def notify_all(self) -> None:
        for log in list(self._by_log):
            self.notify(log)

    async def wait_any(self, logs: list[PartitionKey], timeout_s: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for log in logs:
            self._by_log[log].add(future)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), timeout_s)
        finally:
            for log in logs:
                waiting = self._by_log.get(log)
                if waiting is not None:
                    waiting.discard(future)
                    if not waiting:
                        del self._by_log[log]
