"""The flusher: one task that fsyncs partition logs for everybody (group commit).

Theory of operation: a produce with acks=all (and every coordinator write) awaits `durable(log, offset)`.
Waiters pile up while an fsync is running; the next round fsyncs every partition that has waiters in one
pass, in a worker thread so the event loop keeps serving, then releases every waiter whose offset the
round covered. So N concurrent acks=all producers cost one fsync per round, not N. Between rounds with
waiters, partitions with unflushed data are fsynced every `log.flush.interval.ms` anyway, which moves
their recovery point (what an unclean restart must re-scan) forward.

An fsync failure fails the waiters of that round (they answer KAFKA_STORAGE_ERROR) and takes the
partition offline: after a failed fsync the kernel may have dropped the dirty pages and a later fsync
would report success for data that is not on disk (PostgreSQL's "fsyncgate"), so nothing written since
the recovery point is ever acknowledged. The data stays unacknowledged, never acknowledged-and-lost. A
bug in a round is logged and the flusher carries on: acks=all must never wait for a dead task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from oncelog.log.partition import PartitionLog
from oncelog.log.segment import LogSegment
from oncelog.logs import RateLimited

logger = logging.getLogger(__name__)
_round_errors = RateLimited(60.0)


class StorageError(Exception):
    """An fsync failed: the data it covered is not known to be durable."""


def _fsync_all(work: list[tuple[PartitionLog, int, list[LogSegment]]]) -> list[BaseException | None]:
    """Runs in a worker thread: fsync each log's segments; one result per entry."""
    results: list[BaseException | None] = []
    for _log, _offset, segments in work:
        try:
            for segment in segments:
                segment.fsync()
            results.append(None)
        except OSError as error:
            results.append(error)
    return results


class Flusher:
    def __init__(self, flush_interval_ms: int) -> None:
        self._interval_s = flush_interval_ms / 1000
        self._waiters: dict[PartitionLog, list[tuple[int, asyncio.Future[None]]]] = defaultdict(list)
        self._wake = asyncio.Event()
        self._stopping = False
        self._logs: list[PartitionLog] = []
        self.rounds = 0

    def track(self, logs: list[PartitionLog]) -> None:
        """The logs the periodic flush looks at (refreshed by the server when topics change)."""
        self._logs = logs

    async def durable(self, log: PartitionLog, offset: int) -> None:
        """Return once everything below `offset` in `log` is fsynced; StorageError if it never will be."""
        if log.recovery_point >= offset:
            return
        if log.offline:
            raise StorageError(f"partition {log.name} is offline: {log.offline_reason}")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[log].append((offset, future))
        self._wake.set()
        await future

    async def run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval_s)
            self._wake.clear()
            try:
                await self.flush_round(include_idle=True)
            except Exception:
                if _round_errors.allow("round") is not None:
                    logger.exception("flush round failed; retrying")
                await asyncio.sleep(min(self._interval_s, 0.1))

    async def flush_round(self, include_idle: bool) -> None:
        logs = set(self._waiters)
        if include_idle:
            logs.update(log for log in self._logs if log.log_end_offset > log.recovery_point)
        for log in [log for log in logs if log.offline]:
            logs.discard(log)
            self._release(log, log.recovery_point, OSError(f"partition {log.name} is offline"))
        if not logs:
            return
        work = []
        for log in logs:
            end_offset, segments = log.flush_snapshot()
            work.append((log, end_offset, list(segments)))
        results = await asyncio.get_running_loop().run_in_executor(None, _fsync_all, work)
        self.rounds += 1
        for (log, end_offset, _segments), error in zip(work, results, strict=True):
            if error is None:
                log.mark_flushed(end_offset)
            else:
                assert isinstance(error, OSError)
                log.fsync_failed(error)
            self._release(log, end_offset, error)

    def _release(self, log: PartitionLog, end_offset: int, error: BaseException | None) -> None:
        waiters = self._waiters.get(log)
        if not waiters:
            self._waiters.pop(log, None)
            return
        remaining = []
        for offset, future in waiters:
            if future.done():
                continue
            if error is not None:
                future.set_exception(StorageError(str(error)))
            elif offset <= end_offset:
                future.set_result(None)
            else:
                remaining.append((offset, future))
        if remaining:
            self._waiters[log] = remaining
            self._wake.set()
        else:
            del self._waiters[log]

    def forget(self, log: PartitionLog) -> None:
        """A deleted partition: its waiters will never be served, fail them."""
        for _offset, future in self._waiters.pop(log, []):
            if not future.done():
                future.set_exception(StorageError(f"partition {log.name} was deleted"))

    async def stop(self) -> None:
        """End `run` (after its current round) and fsync everything that is left."""
        self._stopping = True
        self._wake.set()
        await self.flush_round(include_idle=True)
