"""One seeded simulation run: the broker, its clients and the faults, then the checks; and shrinking.

Theory of operation: `Simulation(seed, options).run()` builds a `World`, a simulated disk and the broker
on it, a topic, and the clients of `Options` (idempotent producers, transactional producers that
commit offsets in their transactions and sometimes vanish, read_committed and read_uncommitted
pollers). For `options.steps` events the faults are on: disk operations fail (EIO, ENOSPC with short
writes, fsyncs that lose their pages), messages are delayed past client timeouts or severed, and the
broker is killed (the disk loses what it had not synced) and restarted. After every event the
invariants are checked on the broker's logs: log start ≤ last stable offset ≤ high watermark ≤ log end,
and neither the high watermark nor the last stable offset ever moves back, across crashes too.

Then the faults stop and the world settles: producers finish what they started, every transaction
timeout passes, pollers read to the end. The broker's final log is read and `history.check` compares
it with what the clients were told.

Every fault decision is numbered in the order it is drawn. `shrink` replays the seed with subsets of
the faults that fired suppressed (the draw still happens, so the rest of the run keeps its random
stream as far as it can) and the step count cut, keeping what still fails: the shortest failing trace
that `oncelog simulate --seed N` prints.
"""

from __future__ import annotations

import errno
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from unittest import mock

from oncelog.config import broker_config
from oncelog.errors import ErrorCode
from oncelog.handlers import HANDLERS
from oncelog.handlers.base import RequestContext
from oncelog.log.manager import DataDirError
from oncelog.protocol.codec import build_request
from oncelog.storage.api import Read

from . import clients
from .clients import TOPIC, TRANSACTION_TIMEOUT_MS, Workload
from .command import DEFAULT_STEPS
from .disk import SimDisk
from .group_member import GROUP, group_member
from .history import FinalLog, History, check, stored_records
from .network import ClientDriver, Network, NetworkFaults
from .world import Node, World

START_MS = 1_700_000_000_000
DATA_DIR = Path("/data")
BROKER_PROPERTIES = {
    "log.segment.bytes": "4096",
    "message.max.bytes": "2048",
    "log.index.interval.bytes": "256",
    "log.flush.interval.ms": "300",
    "offsets.topic.num.partitions": "2",
    "transaction.state.log.num.partitions": "2",
    "offsets.topic.segment.bytes": "4096",
    "transaction.state.log.segment.bytes": "4096",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "log.flush.offset.checkpoint.interval.ms": "700",
}
DISK_FAULTS = {"write": 0.002, "fsync": 0.004, "rename": 0.01, "truncate": 0.01, "sync_dir": 0.005,
               "open": 0.002, "unlink": 0.005, "mkdir": 0.005, "read": 0.0005, "remove_tree": 0.01}
"""Chance per operation that it fails, when disk faults are on."""
SETTLE_LIMIT_MS = 180_000


@dataclass(frozen=True)
class Options:
    steps: int = DEFAULT_STEPS
    partitions: int = 3
    idempotent_producers: int = 2
    transactional_producers: int = 2
    crashes: bool = True
    disk_faults: bool = True
    network_faults: bool = True
    crash_every_ms: int = 3_000
    """Mean time between broker crashes while faults are on."""
    vanish: float = 0.05
    """Chance a transactional producer dies in the middle of a transaction."""
    group_members: int = 2
    """Members of the consumer group (the first never vanishes; the others come back as new members)."""
    member_vanish: float = 0.003
    """Chance per fetch round that a group member goes away (half of them with LeaveGroup)."""
    member_pause: float = 0.004
    """Chance per fetch round that a group member stalls past its session timeout, then commits."""


@dataclass
class Result:
    seed: int
    options: Options
    findings: list[tuple[str, str]]
    trace: list[str]
    faults: list[int]
    """The numbers of the fault decisions that fired."""
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings


@contextmanager
def _seeded_ids(rng: random.Random) -> Iterator[None]:
    """uuid4 from the run's seed, so topic ids and member ids replay too."""
    import uuid

    with mock.patch.object(uuid, "uuid4", lambda: uuid.UUID(int=rng.getrandbits(128), version=4)):
        yield


class Simulation:
    def __init__(self, seed: int, options: Options = Options(), suppress: frozenset[int] = frozenset()) -> None:
        self.seed = seed
        self.options = options
        self.suppress = suppress
        self.world = world = World(seed, START_MS)
        self.faults_on = True
        self.fault_number = 0
        self.fired: list[int] = []
        self.disk = SimDisk(world.random, self._disk_fault, world.now_ns)
        self.faults_on = False
        self.disk.make_dir(DATA_DIR)  # the operator made the data directory, durably
        self.disk.sync_dir(DATA_DIR.parent)
        self.faults_on = True
        self.network = Network(world, NetworkFaults())
        self.config = broker_config(BROKER_PROPERTIES, data_dir=DATA_DIR, port=9092)
        self.node: Node | None = None
        self.incarnation = 0
        self.history = History()
        self.workload = Workload(self.history, world.random, world.clock, options.partitions, world.note)
        self.clients: list[ClientDriver] = []
        self._high: dict[str, tuple[int, int]] = {}
        self.stats: dict[str, int] = {"crashes": 0, "disk faults": 0, "producers vanished": 0}

    # --- faults -------------------------------------------------------------------------------------

    def _decide(self, chance: float, what: str) -> bool:
        """One fault decision, numbered; suppressed ones are drawn but do not fire."""
        if not self.faults_on or chance <= 0:
            return False
        hit = self.world.random.random() < chance
        if not hit:
            return False
        self.fault_number += 1
        if self.fault_number in self.suppress:
            return False
        self.fired.append(self.fault_number)
        self.world.note(f"fault #{self.fault_number}: {what}")
        return True

    def _disk_fault(self, operation: str, path: Path) -> int | None:
        if not self.options.disk_faults:
            return None
        if not self._decide(DISK_FAULTS.get(operation, 0.0), f"{operation} {path} fails"):
            return None
        self.stats["disk faults"] += 1
        if operation == "write" and self.world.random.random() < 0.3:
            return errno.ENOSPC
        return errno.EIO

    def _schedule_crash(self) -> None:
        if not self.options.crashes:
            return
        delay = int(self.world.random.expovariate(1 / self.options.crash_every_ms))

        def crash() -> None:
            if self.node is not None and self.faults_on and self._decide(1.0, "the broker is killed"):
                self.stats["crashes"] += 1
                self._crash()
                self.world.at(self.world.random.randint(10, 500), self._restart, "restart")
            self._schedule_crash()

        self.world.at(delay, crash, "crash")

    def _crash(self) -> None:
        assert self.node is not None
        self.network.broker_died()
        self.node.crash()
        self.node = None

    def _restart(self) -> None:
        if self.node is not None:
            return
        self.incarnation += 1
        try:
            self.node = Node(self.world, self.disk, self.config, self.incarnation, lambda: self.fault_number)
        except (OSError, DataDirError) as error:  # the disk failed during recovery: start it again
            if not self.faults_on:
                self.world.finding(f"start failed with the faults off: {type(error).__name__}: {error}")
                raise
            self.world.note(f"start failed: {error}")
            self.disk.crash()
            self.world.at(200, self._restart, "restart")
            return
        except Exception as error:
            self.world.finding(f"start raised {type(error).__name__}: {error}")
            raise
        self.network.node = self.node
        self.world.note(f"broker incarnation {self.incarnation} started")

    # --- invariants ---------------------------------------------------------------------------------

    def _check_invariants(self) -> None:
        node = self.node
        if node is None:
            return
        for log in node.logs():
            if log.offline:
                continue
            start, lso, hw, end = log.log_start_offset, log.last_stable_offset, log.high_watermark, log.log_end_offset
            if not start <= lso <= hw <= end:
                self.world.finding(f"{log.name}: log start {start}, LSO {lso}, HW {hw}, log end {end} out of order")
            seen_hw, seen_lso = self._high.get(log.name, (0, 0))
            if hw < seen_hw:
                self.world.finding(f"{log.name}: high watermark went back from {seen_hw} to {hw}")
            if lso < seen_lso:
                self.world.finding(f"{log.name}: last stable offset went back from {seen_lso} to {lso}")
            self._high[log.name] = (hw, lso)  # reported once, then watched from here

    # --- the run ------------------------------------------------------------------------------------

    def _client(self, name: str, program: Any, then: Callable[[], None] | None = None) -> ClientDriver:
        driver = ClientDriver(self.world, self.network, name, program,
                              (lambda _client: then()) if then else (lambda _client: None))
        self.clients.append(driver)
        return driver

    def _start_clients(self) -> None:
        w = self.workload
        for index in range(self.options.idempotent_producers):
            self._client(f"p{index}", clients.idempotent_producer(w, f"p{index}")).start()
        for index in range(self.options.transactional_producers):
            self._transactional(index, 0)
        self._client("rc", clients.poller(w, "rc", read_committed=True)).start()
        self._client("ru", clients.poller(w, "ru", read_committed=False)).start()
        for index in range(self.options.group_members):
            self._member(index, 0)

    def _member(self, index: int, life: int) -> None:
        """A consumer-group member; one that vanished is followed by a new one (a new member id)."""
        name = f"g{index}" + (f"-{life}" if life else "")

        def exited() -> None:
            if not self.workload.group_stop:
                self.stats["members vanished"] = self.stats.get("members vanished", 0) + 1
                self.world.at(self.world.random.randint(100, 5_000), lambda: self._member(index, life + 1),
                              "member returns")

        vanish = 0.0 if index == 0 else self.options.member_vanish
        program = group_member(self.workload, name, vanish, self.options.member_pause)
        self._client(name, program, exited).start(self.world.random.randint(0, 50))

    def _transactional(self, index: int, life: int) -> None:
        """A transactional producer; if it vanishes, another with the same id starts later (or never)."""
        name = f"t{index}" + (f"-{life}" if life else "")
        driver: ClientDriver

        def exited() -> None:
            if not self.workload.stopping:
                self.stats["producers vanished"] = self.stats.get("producers vanished", 0) + 1
            if not self.workload.stopping and self.world.random.random() < 0.7:
                self.world.note(f"{name} vanished; a new instance of txn-{index} starts later")
                self.world.at(self.world.random.randint(100, 8_000),
                              lambda: None if self.workload.stopping else self._transactional(index, life + 1),
                              "producer returns")

        driver = self._client(name, clients.transactional_producer(self.workload, name, f"txn-{index}",
                                                                   self.options.vanish), exited)
        driver.start(self.world.random.randint(0, 20))

    def run(self) -> Result:
        broker_logs = logging.getLogger("oncelog")
        level = broker_logs.level
        broker_logs.setLevel(logging.CRITICAL)  # injected faults are logged by design: thousands of lines
        try:
            with _seeded_ids(self.world.random):
                try:
                    self._run()
                except Exception as error:  # the run itself broke: a finding, with its trace
                    self.world.finding(f"simulation aborted: {type(error).__name__}: {error}")
                    return self._result([])
            return self._result(check(self.history, self._final_log()))
        finally:
            broker_logs.setLevel(level)

    def _result(self, findings: list[tuple[str, str]]) -> Result:
        every = [("invariant", text) for text in self.world.findings] + findings
        unique = list(dict.fromkeys(every))
        history = self.history
        self.stats.update({
            "network faults": self.network.faults_injected,
            "steps": self.world.steps, "simulated ms": self.world.now_ms - START_MS,
            "sends acknowledged": sum(send.outcome == "ok" for send in history.sends),
            "sends unknown": sum(send.outcome == "unknown" for send in history.sends),
            "transactions committed": sum(t.outcome == "committed" for t in history.transactions),
            "transactions aborted": sum(t.outcome == "aborted" for t in history.transactions),
            "transactions unknown": sum(t.outcome in ("unknown", "pending") for t in history.transactions),
            "records polled": sum(len(polls) for polls in history.polls.values()),
            "group generations": len({a.generation for a in history.assignments}),
            "group commits acknowledged": sum(c.outcome == "ok" for c in history.group_commits),
        })
        return Result(self.seed, self.options, unique, self.world.trace, list(self.fired), self.stats)

    def _run(self) -> None:
        world = self.world
        self.network.faults = NetworkFaults(0.01, 0.004) if self.options.network_faults else NetworkFaults()
        self._restart()
        self._client("setup", clients.create_topic(self.workload), self._start_clients).start()
        self._schedule_crash()
        while world.steps < self.options.steps and world.step():
            self._check_invariants()
        self._settle()

    def _run_until(self, done: Callable[[], bool], limit_ms: int) -> bool:
        deadline = self.world.now_ms + limit_ms
        while not done() and self.world.now_ms < deadline and self.world.step():
            self._check_invariants()
        return done()

    def _settle(self) -> None:
        """Faults off; let producers finish, every transaction time out, pollers read to the end."""
        world = self.world
        world.note("faults stop; settling")
        self.faults_on = False
        self.network.faults = NetworkFaults()
        if self.node is not None and any(log.offline for log in self.node.logs()):
            world.note("a partition is offline: the operator restarts the broker")
            self._crash()
        if self.node is None:
            self._restart()
        self.workload.stopping = True
        producers = [c for c in self.clients if c.name[0] in "pt" and not c.stopped]
        if not self._run_until(lambda: all(c.finished for c in producers), SETTLE_LIMIT_MS):
            for client in producers:
                if not client.finished:
                    self.history.stuck[client.name] = f"did not finish within {SETTLE_LIMIT_MS} ms of settling"
        # Transactions of vanished producers end by their timeout.
        wait = 2 * TRANSACTION_TIMEOUT_MS + 2 * self.config.transaction_abort_timed_out_transaction_cleanup_interval_ms
        self._run_until(lambda: False, wait)
        self.workload.producers_done = True
        pollers = [c for c in self.clients if c.name in ("rc", "ru")]
        self._run_until(lambda: all(c.finished for c in pollers), SETTLE_LIMIT_MS)
        if self.options.group_members:
            self._settle_group()

    def _settle_group(self) -> None:
        """Run until the group's acknowledged commits reach every partition's end, then its members leave."""
        def consumed() -> bool:
            node = self.node
            if node is None:
                return False
            for partition in range(self.options.partitions):
                log = node.broker.logs.get(TOPIC, partition)
                if log is not None and self.workload.group_committed.get(partition, 0) < log.high_watermark:
                    return False
            return True

        if not self._run_until(consumed, SETTLE_LIMIT_MS):
            self.history.stuck[f"consumer group {GROUP}"] = f"did not consume everything within {SETTLE_LIMIT_MS} ms"
        self.workload.group_stop = True
        members = [c for c in self.clients if c.name.startswith("g") and not c.stopped]
        self._run_until(lambda: all(c.finished for c in members), 30_000)

    # --- the final log --------------------------------------------------------------------------------

    def _final_log(self) -> FinalLog:
        node = self.node
        assert node is not None
        final = FinalLog()
        for partition in range(self.options.partitions):
            log = node.broker.logs.get(TOPIC, partition)
            if log is None:  # the topic was never created (faults all along)
                continue
            final.high_watermarks[partition] = log.high_watermark
            data = node.broker.storage.fetch([Read(TOPIC, partition, 0, 1 << 30)], 1 << 30, False).value()[0]
            assert data.error == ErrorCode.none, f"final read of partition {partition}: {data.error!r}"
            final.partitions[partition] = stored_records(bytes(data.records or b""))
        for index in range(self.options.transactional_producers):
            group = f"eos-txn-{index}"
            final.group_offsets[group] = self._committed_offsets(node, group, [0])[0]
        if self.options.group_members:
            final.consumer_group_offsets = self._committed_offsets(node, GROUP, list(range(self.options.partitions)))
        return final

    def _committed_offsets(self, node: Node, group: str, partitions: list[int]) -> dict[int, int]:
        request = build_request(9, 7, {"group_id": group, "topics": [{"name": TOPIC, "partition_indexes": partitions}],
                                       "require_stable": True})
        context = RequestContext(node.broker, 9, 7, 1, "checker", "sim:checker")
        response = HANDLERS[9].handle(context, request)
        assert not hasattr(response, "completion"), "OffsetFetch must answer from memory here"
        offsets = {}
        for answer in response.topics[0].partitions:
            if ErrorCode(int(answer.error_code)) != ErrorCode.none:
                self.world.finding(f"OffsetFetch of {group} answered {ErrorCode(int(answer.error_code))!r} after "
                                   "every transaction ended")
            offsets[int(answer.partition_index)] = int(answer.committed_offset)
        return offsets


def simulate(seed: int, options: Options = Options()) -> Result:
    return Simulation(seed, options).run()


def shrink(result: Result, budget: int = 60, progress: Callable[[str], None] = lambda text: None) -> Result:
    """A shorter failing run of the same seed: fewer steps, fewer faults (delta debugging over the fault
    numbers that fired), within `budget` replays."""
    assert not result.ok
    best = result
    runs = 0

    wanted = result.findings[0][0]

    def attempt(options: Options, suppress: frozenset[int]) -> Result | None:
        """The run if it still fails the same way (its first anomaly class among its findings)."""
        nonlocal runs
        runs += 1
        candidate = Simulation(result.seed, options, suppress).run()
        return candidate if any(kind == wanted for kind, _evidence in candidate.findings) else None

    # Fewer steps: halve while it still fails.
    while runs < budget and best.options.steps > 50:
        shorter = attempt(replace(best.options, steps=best.options.steps // 2), frozenset())
        if shorter is None:
            break
        best = shorter
        progress(f"fails within {best.options.steps} steps")
    # Fewer faults: drop chunks of the fired faults (ddmin).
    suppressed: frozenset[int] = frozenset()
    chunks = 2
    while runs < budget:
        active = [number for number in best.faults if number not in suppressed]
        if len(active) < 1 or chunks > len(active):
            break
        size = max(1, len(active) // chunks)
        reduced = False
        for start in range(0, len(active), size):
            if runs >= budget:
                break
            trial = suppressed | frozenset(active[start:start + size])
            found = attempt(best.options, trial)
            # Fewer faults can mean more activity (a fault that stopped a start no longer does): only a
            # trace no longer than the best one so far is progress.
            if found is not None and len(found.trace) <= len(best.trace):
                best, suppressed, reduced = found, trial, True
                progress(f"fails with {len(best.faults)} faults")
                break
        if not reduced:
            if size == 1:
                break
            chunks *= 2
    return best
