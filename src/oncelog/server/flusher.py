"""The flusher: one task that fsyncs partition logs for everybody (group commit).

Theory of operation: the bookkeeping (who waits for what, what a round covers, what a failed fsync
means) is `log.flush_queue.FlushQueue`; this task drives it. Waiters pile up while an fsync is running;
the next round fsyncs every partition that has waiters in one pass, in a worker thread so the event loop
keeps serving, then releases every waiter whose offset the round covered. So N concurrent acks=all
producers cost one fsync per round, not N. Between rounds with waiters, partitions with unflushed data
are fsynced every `log.flush.interval.ms` anyway, which moves their recovery point (what an unclean
restart must re-scan) forward. A bug in a round is logged and the flusher carries on: acks=all must
never wait for a dead task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from oncelog.log.flush_queue import FlushQueue, fsync_all
from oncelog.logs import RateLimited
from oncelog.observability.metrics import BrokerMetrics

logger = logging.getLogger(__name__)
_round_errors = RateLimited(60.0)


class Flusher(FlushQueue):
    def __init__(self, flush_interval_ms: int) -> None:
        self._interval_s = flush_interval_ms / 1000
        self._event = asyncio.Event()
        super().__init__(self._event.set)
        self._stopping = False
        self.metrics: BrokerMetrics | None = None

    async def run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout=self._interval_s)
            self._event.clear()
            try:
                await self.flush_round(include_idle=True)
            except Exception:
                if _round_errors.allow("round") is not None:
                    logger.exception("flush round failed; retrying")
                await asyncio.sleep(min(self._interval_s, 0.1))

    async def flush_round(self, include_idle: bool) -> None:
        waiters = self.waiter_count()
        work = self.begin_round(include_idle)
        if not work:
            return
        started = time.perf_counter()
        results = await asyncio.get_running_loop().run_in_executor(None, fsync_all, work)
        if self.metrics is not None:
            self.metrics.flushed(waiters, len(work), time.perf_counter() - started,
                                 sum(error is not None for error in results))
        self.finish_round(work, results)

    async def stop(self) -> None:
        """End `run` (after its current round) and fsync everything that is left."""
        self._stopping = True
        self._event.set()
        await self.flush_round(include_idle=True)
