"""The simulated world: one seeded event queue for time, the network, the disk and the broker.

Theory of operation: nothing here waits. `World` holds simulated time and a queue of events ordered by
(due time, insertion number); `step()` runs the next one. Everything that would be concurrent in a real
deployment (a request on the wire, an fsync in the flusher's thread, a client's timeout, a broker's
coordinator timer, a maintenance job) is an event, so a seed fixes one interleaving and replays it.

`Node` is one incarnation of the broker: the real `Broker` (handlers, coordinators, logs) over the
simulated disk, with this file's stand-ins for what `server/` does with real I/O: requests decoded and
dispatched exactly as a connection does (`RequestContext`, the handler, its AwaitCompletion/AwaitData
outcome), responses queued in request order per connection, long-poll fetches parked until their
partition changes, the flusher's rounds (`FlushQueue`) with the fsync a little later than the snapshot,
as the worker thread does it, and the periodic maintenance jobs. `crash()` drops the incarnation: its
timers never fire, its connections die, the disk loses what it had not synced; a new `Node` on the
same disk recovers.

The network: a `Connection` is a client's TCP connection to one incarnation. Messages on it arrive in
order (TCP), each after a seeded delay; a fault can sever it (both directions lost from then on), and a
request sent before the client gave up on the connection may still reach the broker afterwards (the
bytes were in flight), which is how retries turn into duplicates.

Handler bugs do not hide here: an exception from a handler, a job or a timer is recorded as a finding
(the server would log it and answer UNKNOWN_SERVER_ERROR; the simulation treats it as the bug it is).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from oncelog.broker import Broker
from oncelog.config import BrokerConfig
from oncelog.errors import KafkaError
from oncelog.handlers import GROUP_IDS, HANDLERS
from oncelog.handlers.base import CLOSE_CONNECTION, NO_RESPONSE, AwaitCompletion, AwaitData, RequestContext
from oncelog.log.flush_queue import FlushQueue, RoundWork, fsync_all
from oncelog.log.partition import PartitionLog
from oncelog.protocol.codec import decode_request, encode_response
from oncelog.protocol.framing import peek_header

from .disk import SimDisk

logger = logging.getLogger(__name__)


@dataclass(order=True)
class _Event:
    due_ms: int
    sequence: int
    action: Callable[[], None] = field(compare=False)
    label: str = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class World:
    def __init__(self, seed: int, start_ms: int) -> None:
        self.seed = seed
        self.random = random.Random(seed)
        self.now_ms = start_ms
        self._queue: list[_Event] = []
        self._sequence = itertools.count()
        self.steps = 0
        self.trace: list[str] = []
        """What happened, one line per notable event (`note`), with the simulated time."""
        self.findings: list[str] = []
        """Bugs seen while running (a handler raised, an invariant broke)."""

    def clock(self) -> int:
        return self.now_ms

    def now_ns(self) -> int:
        return self.now_ms * 1_000_000

    def at(self, delay_ms: int, action: Callable[[], None], label: str) -> _Event:
        event = _Event(self.now_ms + max(0, delay_ms), next(self._sequence), action, label)
        heapq.heappush(self._queue, event)
        return event

    def note(self, text: str) -> None:
        self.trace.append(f"{self.now_ms:>9} {text}")

    def finding(self, text: str) -> None:
        self.note(f"FINDING {text}")
        self.findings.append(text)

    @property
    def idle(self) -> bool:
        return not any(not event.cancelled for event in self._queue)

    def step(self) -> bool:
        """Run the next event; False if there is none."""
        while self._queue:
            event = heapq.heappop(self._queue)
            if event.cancelled:
                continue
            self.now_ms = max(self.now_ms, event.due_ms)
            self.steps += 1
            event.action()
            return True
        return False


# --- the broker, one incarnation ----------------------------------------------------------------------


class _Timer:
    __slots__ = ("_event",)

    def __init__(self, event: _Event) -> None:
        self._event = event

    def cancel(self) -> None:
        self._event.cancel()


class _Reply:
    """One request's place in its connection's response order."""

    __slots__ = ("frame", "ready")

    def __init__(self) -> None:
        self.ready = False
        self.frame: bytes | None = None


class Node:
    """The broker over the simulated disk, with the server layer's duties done as events."""

    FSYNC_MS = (0, 4)
    """How long an fsync takes (the flusher's worker thread), uniformly."""

    def __init__(self, world: World, disk: SimDisk, config: BrokerConfig, incarnation: int,
                 faults_fired: Callable[[], int] = lambda: 0) -> None:
        self.world = world
        self._faults_fired = faults_fired
        self._faults_at_start = faults_fired()
        """An I/O or Kafka error is an injected fault's doing only if a fault fired in this incarnation."""
        self.disk = disk
        self.config = config
        self.incarnation = incarnation
        self.alive = True
        self._round_pending = False
        self.flush = FlushQueue(self._want_round)
        self._parked: dict[tuple[str, int], list[Callable[[], None]]] = {}
        try:
            self.broker = Broker(config, clock=world.clock, fs=disk)
            self.broker.storage.on_change = self._changed
            self.broker.start(self, self.flush.when_durable)
        except BaseException:
            self.alive = False  # whatever it scheduled before failing must not run
            raise
        self.flush.on_flushed = self.broker.local.log_changed
        self.flush.track(list(self.broker.logs.logs()))
        for name, interval_ms, job in self.broker.maintenance_jobs():
            self._schedule_job(name, interval_ms, job, interval_ms)
        self._periodic_flush()

    def _injected(self, what: str, error: Exception) -> None:
        """An I/O or Kafka error: expected after an injected fault, a finding otherwise."""
        if self._faults_fired() > self._faults_at_start:
            self.world.note(f"{what} failed: {error}")
        else:
            self.world.finding(f"{what} failed with no fault injected: {type(error).__name__}: {error}")

    # Scheduler, for the coordinators: timers die with the incarnation.
    def call_later(self, delay_ms: int, callback: Callable[[], None]) -> _Timer:
        return _Timer(self.world.at(delay_ms, lambda: self._guarded("timer", callback), "broker timer"))

    def _guarded(self, what: str, action: Callable[[], object]) -> None:
        if not self.alive:
            return
        try:
            action()
        except (OSError, KafkaError) as error:  # an injected disk fault: the server logs it and goes on
            self._injected(what, error)
        except Exception as error:
            logger.debug("%s raised", what, exc_info=True)
            self.world.finding(f"{what} raised {type(error).__name__}: {error}")

    def _schedule_job(self, name: str, interval_ms: int, job: Callable[[], object], delay_ms: int) -> None:
        def run() -> None:
            if not self.alive:
                return
            failed = False
            try:
                job()
            except (OSError, KafkaError) as error:
                failed = True
                self._injected(f"job {name}", error)
            except Exception as error:
                self.world.finding(f"job {name} raised {type(error).__name__}: {error}")
            self.flush.track(list(self.broker.logs.logs()))
            self._schedule_job(name, interval_ms, job, min(interval_ms, 100) if failed else interval_ms)

        self.world.at(delay_ms, run, f"job {name}")

    # --- the flusher ---------------------------------------------------------------------------------

    def _want_round(self) -> None:
        if self._round_pending or not self.alive:
            return
        self._round_pending = True
        self.world.at(self.world.random.randint(0, 2), lambda: self._round(False), "flush round")

    def _periodic_flush(self) -> None:
        def tick() -> None:
            if not self.alive:
                return
            if not self._round_pending:  # one round at a time, as the flusher's task
                self._round(True, periodic=True)
            self._periodic_flush()

        self.world.at(self.config.log_flush_interval_ms, tick, "periodic flush")

    def _round(self, include_idle: bool, periodic: bool = False) -> None:
        if not self.alive:
            return
        if not periodic:
            self._round_pending = False
        work = self.flush.begin_round(include_idle)
        if not work:
            return
        self._round_pending = True  # one round at a time, as the flusher's task
        self.world.at(self.world.random.randint(*self.FSYNC_MS), lambda: self._fsynced(work), "fsync")

    def _fsynced(self, work: RoundWork) -> None:
        if not self.alive:
            return
        results = fsync_all(work)
        self._round_pending = False
        self._guarded("flush round", lambda: self.flush.finish_round(work, results))
        if self.flush.waiting:
            self._want_round()

    # --- long polls ------------------------------------------------------------------------------------

    def _changed(self, topic: str, partition: int) -> None:
        for wake in self._parked.pop((topic, partition), []):
            wake()

    # --- requests --------------------------------------------------------------------------------------

    def handle(self, frame: bytes, peer: str, reply: Callable[[bytes | None], None]) -> None:
        """Dispatch one request frame (without its size prefix); `reply(frame)` once it is answered, in
        the order the caller keeps (None: no response, or the connection must close)."""
        api_key, api_version, correlation_id = peek_header(frame)
        api = HANDLERS.get(api_key)
        assert api is not None and api.version_min <= api_version <= api.version_max, (api_key, api_version)
        header, request = decode_request(frame, api_key, api_version)
        context = RequestContext(self.broker, api_key, api_version, correlation_id, header.client_id, peer)
        groups = GROUP_IDS.get(api_key)
        if groups is not None:
            problem = self.broker.group_gate(groups(request))
            assert problem is None, "a single broker coordinates every group"

        def failed(error: Exception) -> None:
            self.world.finding(f"{api.name} v{api_version} raised {type(error).__name__}: {error}")
            logger.debug("%s raised", api.name, exc_info=True)
            reply(None)

        def settle(outcome: Any) -> None:
            try:
                while True:
                    if isinstance(outcome, AwaitCompletion):
                        if not outcome.completion.done:
                            outcome.completion.on_done(self._resumer(outcome.respond, settle, failed))
                            return
                        outcome = outcome.respond(outcome.completion.value())
                    elif isinstance(outcome, AwaitData):
                        self._park(outcome, settle)
                        return
                    elif outcome is NO_RESPONSE or outcome is CLOSE_CONNECTION:
                        reply(None)
                        return
                    else:
                        reply(encode_response(api_key, api_version, correlation_id, outcome)[4:])
                        return
            except Exception as error:
                failed(error)

        try:
            outcome = api.handle(context, request)
        except Exception as error:
            failed(error)
            return
        settle(outcome)

    def _resumer(self, respond: Callable[[Any], Any], settle: Callable[[Any], None],
                 failed: Callable[[Exception], None]) -> Callable[[Any], None]:
        def resume(value: Any) -> None:
            if not self.alive:  # a dead incarnation answers nobody
                return
            try:
                outcome = respond(value)
            except Exception as error:  # a handler's continuation failed: a finding, and no answer
                failed(error)
                return
            settle(outcome)

        return resume

    def _park(self, wait: AwaitData, settle: Callable[[Any], None]) -> None:
        done = False

        def wake(deadline_passed: bool) -> None:
            nonlocal done
            if done or not self.alive:
                return
            done = True
            timer.cancel()
            settle(wait.retry(deadline_passed))

        timer = self.world.at(wait.wait_ms, lambda: wake(True), "fetch wait ends")
        for key in wait.partitions:
            self._parked.setdefault(key, []).append(lambda: wake(False))

    def crash(self) -> None:
        """kill -9: nothing more runs in this incarnation; the disk then loses what was not synced."""
        self.alive = False
        self._parked.clear()
        self.disk.crash()

    def logs(self) -> list[PartitionLog]:
        return list(self.broker.logs.logs())
