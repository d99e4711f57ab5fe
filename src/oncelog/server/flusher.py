"""The flusher: one task that fsyncs partition logs for everybody (group commit).

Theory of operation: a produce with acks=all (and every coordinator write) asks
`when_durable(log, offset, callback)`.
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
from collections.abc import Callable

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


def _call(callback: Callable[[bool], None], ok: bool) -> None:
    """A waiter's callback failing is its own bug: log it, and release the other waiters anyway."""
    try:
        callback(ok)
    except Exception:
        logger.exception("durability callback failed")


class Flusher:
    def __init__(self, flush_interval_ms: int) -> None:
        self._interval_s = flush_interval_ms / 1000
        self._waiters: dict[PartitionLog, list[tuple[int, Callable[[bool], None]]]] = defaultdict(list)
        self._wake = asyncio.Event()
        self._stopping = False
        self._logs: list[PartitionLog] = []
        self.rounds = 0

    def track(self, logs: list[PartitionLog]) -> None:
        """The logs the periodic flush looks at (refreshed by the server when topics change)."""
        self._logs = logs

    def when_durable(self, log: PartitionLog, offset: int, callback: Callable[[bool], None]) -> None:
        """`callback(True)` once everything below `offset` in `log` is fsynced (at once if it is), and
        `callback(False)` if it never will be (the partition is offline, the fsync failed, it was deleted)."""
        if log.recovery_point >= offset:
            callback(True)
            return
        if log.offline:
            callback(False)
            return
        self._waiters[log].append((offset, callback))
        self._wake.set()

    async def durable(self, log: PartitionLog, offset: int) -> None:
        """Return once everything below `offset` in `log` is fsynced; StorageError if it never will be."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def settle(ok: bool) -> None:
            if not future.done():
                future.set_result(ok)

        self.when_durable(log, offset, settle)
        if not await future:
            raise StorageError(f"partition {log.name}: the data below offset {offset} is not durable")

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
        # Taken out first: a callback may ask for more durability on this log (a coordinator's next write).
        waiters = self._waiters.pop(log, None)
        if not waiters:
            return
        remaining = []
        for offset, callback in waiters:
            if error is not None:
                _call(callback, False)
            elif offset <= end_offset:
                _call(callback, True)
            else:
                remaining.append((offset, callback))
        if remaining:
            self._waiters[log][:0] = remaining
            self._wake.set()

    def forget(self, log: PartitionLog) -> None:
        """A deleted partition: its waiters will never be served, fail them."""
        for _offset, callback in self._waiters.pop(log, []):
            _call(callback, False)

    async def stop(self) -> None:
        """End `run` (after its current round) and fsync everything that is left."""
        self._stopping = True
        self._wake.set()
        await self.flush_round(include_idle=True)
