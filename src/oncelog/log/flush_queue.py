"""Who waits for which partition to be fsynced, and what one flush round must do (sans-IO).

Theory of operation: a produce with acks=all (and every coordinator write) asks
`when_durable(log, offset, callback)`. Waiters pile up; a flush round takes a snapshot of every log
that has waiters (and, for the periodic flush, every log with unflushed data): `begin_round` returns
(log, end offset, segments) for each. Whoever drives the round fsyncs those segments (the server in a
worker thread, the simulation in its simulated disk) and hands the outcome to `finish_round`, which
moves each log's recovery point and releases every waiter the round covered.

An fsync failure fails the waiters of that round (they answer KAFKA_STORAGE_ERROR) and takes the
partition offline: after a failed fsync the kernel may have dropped the dirty pages and a later fsync
would report success for data that is not on disk (PostgreSQL's "fsyncgate"), so nothing written since
the recovery point is ever acknowledged. The data stays unacknowledged, never acknowledged-and-lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from oncelog.log.partition import PartitionLog
from oncelog.log.segment import LogSegment

logger = logging.getLogger(__name__)

RoundWork = list[tuple[PartitionLog, int, list[LogSegment]]]
"""(log, end offset the round covers, segments to fsync) per log in one round."""


def fsync_all(work: RoundWork) -> list[OSError | None]:
    """fsync each log's segments; one result per entry (the server runs this in a worker thread)."""
    results: list[OSError | None] = []
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


class FlushQueue:
    def __init__(self, wake: Callable[[], None] = lambda: None) -> None:
        self.on_flushed: Callable[[PartitionLog], None] = lambda log: None
        """Called when a log's recovery point (its high watermark) moved: parked fetches wake on it."""
        self._waiters: dict[PartitionLog, list[tuple[int, Callable[[bool], None]]]] = {}
        self._wake = wake
        """Called when a round is wanted (waiters arrived, or some are left for the next round)."""
        self._logs: list[PartitionLog] = []
        self.rounds = 0

    @property
    def waiting(self) -> bool:
        return bool(self._waiters)

    def waiter_count(self) -> int:
        """Writes waiting for the next round (what one group commit will release)."""
        return sum(len(waiters) for waiters in self._waiters.values())

    def track(self, logs: list[PartitionLog]) -> None:
        """The logs the periodic flush looks at (refreshed by the owner when topics change)."""
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
        self._waiters.setdefault(log, []).append((offset, callback))
        self._wake()

    def begin_round(self, include_idle: bool) -> RoundWork:
        """What the next round must fsync; offline logs' waiters are failed here and left out."""
        logs = dict.fromkeys(self._waiters)  # ordered: a simulation must replay the same round
        if include_idle:
            logs.update(dict.fromkeys(log for log in self._logs if log.log_end_offset > log.recovery_point))
        work: RoundWork = []
        for log in logs:
            if log.offline:
                self._release(log, log.recovery_point, OSError(f"partition {log.name} is offline"))
                continue
            end_offset, segments = log.flush_snapshot()
            work.append((log, end_offset, list(segments)))
        return work

    def finish_round(self, work: RoundWork, results: list[OSError | None]) -> None:
        self.rounds += 1
        for (log, end_offset, _segments), error in zip(work, results, strict=True):
            if error is None:
                before = log.recovery_point
                log.mark_flushed(end_offset)
                if log.recovery_point > before:
                    self.on_flushed(log)
            else:
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
            self._waiters.setdefault(log, [])[:0] = remaining
            self._wake()

    def forget(self, log: PartitionLog) -> None:
        """A deleted partition: its waiters will never be served, fail them."""
        for _offset, callback in self._waiters.pop(log, []):
            _call(callback, False)
