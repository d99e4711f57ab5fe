"""The `oncelog chaos` workload: real confluent-kafka clients in threads, every outcome recorded.

Theory of operation: each client runs in its own thread and writes what it was told into one
`History` (the simulation's, so one checker judges both), under a lock:

- transactional producers (`chaos-tx-N`) run transactions of 1–4 records over random partitions of the
  input topic, commit most and abort some; a transaction is "committed"/"aborted" only when
  commit/abort_transaction returned, otherwise "unknown" (the producer is then recreated, which fences
  the old one). Every record's delivery report gives its offset;
- idempotent producers send single records; a failed delivery report is "unknown" (it may be stored);
- an assign-based poller of every partition from offset 0, read_committed, and another
  read_uncommitted, record every record they are handed (offset order is checked, and skips);
- a consumer group member (read_committed, subscribe) commits what it read; its reads are checked for
  aborted and inconsistent data, and its group must reach the end;
- a consume-transform-produce stage (`oncelog.eos.Processor` in its own process, `stage.py`) copies
  every committed input record to the output topic, offsets inside its transactions: each input must
  come out exactly once. A stage that hangs (a librdkafka bug, see there) is killed and restarted.

`stop_producing()` ends the producers' loops; `finish(limit)` waits for the consumers to reach the end
of every partition, then stops everything. What could not finish is recorded as stuck.
"""

from __future__ import annotations

import logging
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from oncelog.simulation.history import History, Send, Transaction

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Names:
    """Topics, groups and transactional ids of one run (fresh ones, so runs never see each other)."""

    run: str

    @property
    def input(self) -> str:
        return f"chaos-{self.run}"

    @property
    def output(self) -> str:
        return f"chaos-{self.run}-out"

    @property
    def stage_group(self) -> str:
        return f"chaos-{self.run}-stage"

    @property
    def member_group(self) -> str:
        return f"chaos-{self.run}-readers"

    def transactional_id(self, what: str) -> str:
        return f"chaos-{self.run}-{what}"

TRANSACTION_TIMEOUT_MS = 10_000
CLIENT_TIMEOUT_S = 30.0
STAGE_STALL_S = 15.0
"""A running stage prints progress every second: silent this long, it is hung."""
STAGE_START_S = 45.0
"""Before its first line: init_transactions may wait out a coordinator that is being restarted."""
QUIET: dict[str, Any] = {"log_level": 0, "logger": logging.getLogger("oncelog.chaos.librdkafka")}
"""librdkafka's own logs go to a logger nobody prints: faults make it loud by design."""


@dataclass
class Recorder:
    history: History = field(default_factory=History)
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)
    events: list[dict[str, Any]] = field(default_factory=list)

    def event(self, client: str, kind: str, **details: Any) -> None:
        with self.lock:
            self.events.append({"t": round(time.monotonic() - self.started, 3), "client": client, "kind": kind,
                                **details})

    def send(self, producer: str, partition: int, value: str, transaction: Transaction | None = None) -> Send:
        with self.lock:
            return self.history.send(producer, partition, [value], transaction)

    def delivered(self, send: Send, error: Any, message: Message) -> None:
        with self.lock:
            if error is None:
                send.outcome, send.offset = "ok", int(message.offset() or 0)
            else:
                send.outcome = "unknown"
                if error.fatal() and not send.transaction:  # an idempotent producer that cannot go on
                    self.history.stuck[send.producer] = f"fatal producer error: {error}"
        self.event(send.producer, "send", value=send.values[0], partition=send.partition,
                   outcome=send.outcome, offset=send.offset, error=str(error) if error else None)

    def polled(self, poller: str, message: Message) -> None:
        with self.lock:
            self.history.polls[poller].append((int(message.partition() or 0), int(message.offset() or 0),
                                               (message.value() or b"").decode()))


class Workload:
    def __init__(self, bootstrap: str, names: Names, partitions: int, seed: int, transactional: int = 2,
                 idempotent: int = 1) -> None:
        self.bootstrap = bootstrap
        self.names = names
        self.partitions = partitions
        self.random = random.Random(seed)
        self.recorder = Recorder()
        self._producing = threading.Event()
        self._producing.set()
        self._consuming = threading.Event()
        self._consuming.set()
        self._threads: list[threading.Thread] = []
        self.transactional = transactional
        self.idempotent = idempotent
        self.positions: dict[str, dict[int, int]] = {}
        self.stage_starts = 0
        self.stage_hangs = 0
        self.stage_records = 0

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        history = self.recorder.history
        history.read_committed |= {"poller-rc", "consumer-rc"}
        for index in range(self.transactional):
            self._thread(f"tx{index}", lambda index=index: self._transactions(index))  # type: ignore[misc]
        for index in range(self.idempotent):
            self._thread(f"id{index}", lambda index=index: self._idempotent(index))  # type: ignore[misc]
        self._thread("poller-rc", lambda: self._poll("poller-rc", read_committed=True))
        self._thread("poller-ru", lambda: self._poll("poller-ru", read_committed=False))
        self._thread("consumer-rc", self._group_member)
        self._thread("stage", self._run_stage)

    def _thread(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except Exception as error:  # a client thread must not die silently: it is a finding
                logger.exception("chaos client %s failed", name)
                with self.recorder.lock:
                    self.recorder.history.stuck[name] = f"client thread died: {type(error).__name__}: {error}"

        thread = threading.Thread(target=run, name=f"chaos-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop_producing(self, limit_s: float) -> None:
        self._producing.clear()
        deadline = time.monotonic() + limit_s
        for thread in self._threads:
            if thread.name.startswith(("chaos-tx", "chaos-id")):
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    with self.recorder.lock:
                        self.recorder.history.stuck[thread.name[len("chaos-"):]] = "still running after the faults"

    def finish(self, ends: dict[str, dict[int, int]], limit_s: float) -> None:
        """Let the consumers reach `ends` (reader -> partition -> end offset), then stop them."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and not self._caught_up(ends):
            time.sleep(0.2)
        self._consuming.clear()
        for thread in self._threads:
            thread.join(max(1.0, deadline - time.monotonic()))
        with self.recorder.lock:
            for reader, partitions in self.positions.items():
                self.recorder.history.positions[reader] = dict(partitions)

    def _caught_up(self, ends: dict[str, dict[int, int]]) -> bool:
        with self.recorder.lock:
            return all(self.positions.get(reader, {}).get(partition, 0) >= end
                       for reader, partitions in ends.items() for partition, end in partitions.items())

    # --- producers ---------------------------------------------------------------------------------------

    def _producer(self, config: dict[str, Any]) -> Producer:
        return Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5,
                         "message.timeout.ms": 20_000, "request.timeout.ms": 5_000, **QUIET, **config})

    def _transactions(self, index: int) -> None:
        name = f"tx{index}"
        rng = random.Random(self.random.random())
        config = {"transactional.id": self.names.transactional_id(f"tx{index}"),
                  "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS, "message.timeout.ms": TRANSACTION_TIMEOUT_MS}
        producer = self._init(self._producer(config), name)
        number = 0
        while self._producing.is_set():
            if producer is None:
                time.sleep(0.5)
                producer = self._init(self._producer(config), name)
                continue
            number += 1
            with self.recorder.lock:
                transaction = self.recorder.history.begin(f"{name}.{number}", -1, -1)
            outcome = self._one_transaction(producer, name, transaction, rng)
            with self.recorder.lock:
                transaction.outcome = outcome
            self.recorder.event(name, "transaction", name=transaction.name, outcome=outcome)
            if outcome == "unknown":
                producer = None  # a new instance fences this one and ends whatever it left open
            time.sleep(rng.uniform(0, 0.05))

    def _init(self, producer: Producer, name: str) -> Producer | None:
        try:
            producer.init_transactions(CLIENT_TIMEOUT_S)
            return producer
        except KafkaException as error:
            self.recorder.event(name, "init failed", error=str(error))
            return None

    def _one_transaction(self, producer: Producer, name: str, transaction: Transaction, rng: random.Random) -> str:
        try:
            producer.begin_transaction()
            for record in range(rng.randint(1, 4)):
                partition = rng.randrange(self.partitions)
                send = self.recorder.send(name, partition, f"{transaction.name}-{record}", transaction)
                producer.produce(self.names.input, value=send.values[0].encode(), partition=partition,
                                 on_delivery=self._delivery(send))
                producer.poll(0)
            if rng.random() < 0.25:
                producer.abort_transaction(CLIENT_TIMEOUT_S)
                return "aborted"
            producer.commit_transaction(CLIENT_TIMEOUT_S)
            return "committed"
        except KafkaException as error:
            kafka_error = error.args[0]
            self.recorder.event(name, "transaction error", name=transaction.name, error=str(kafka_error))
            if kafka_error.txn_requires_abort():
                try:
                    producer.abort_transaction(CLIENT_TIMEOUT_S)
                    return "aborted"
                except KafkaException:
                    return "unknown"
            return "unknown"

    def _delivery(self, send: Send) -> Callable[[Any, Message], None]:
        return lambda error, message: self.recorder.delivered(send, error, message)

    def _idempotent(self, index: int) -> None:
        name = f"id{index}"
        rng = random.Random(self.random.random())
        producer = self._producer({"enable.idempotence": True})
        number = 0
        while self._producing.is_set():
            number += 1
            partition = rng.randrange(self.partitions)
            send = self.recorder.send(name, partition, f"{name}-{number}")
            try:
                producer.produce(self.names.input, value=send.values[0].encode(), partition=partition,
                                 on_delivery=self._delivery(send))
            except BufferError:
                send.outcome = "failed"
            producer.poll(0.005)
        if producer.flush(CLIENT_TIMEOUT_S):
            with self.recorder.lock:
                self.recorder.history.stuck[name] = "records still undelivered after the faults"

    # --- consumers --------------------------------------------------------------------------------------

    def _consumer(self, group: str, read_committed: bool, **config: Any) -> Consumer:
        return Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 10_000,
                         "isolation.level": "read_committed" if read_committed else "read_uncommitted",
                         **QUIET, **config})

    def _track(self, reader: str, message: Message) -> None:
        with self.recorder.lock:
            partitions = self.positions.setdefault(reader, {})
            partition, offset = int(message.partition() or 0), int(message.offset() or 0)
            partitions[partition] = max(partitions.get(partition, 0), offset + 1)

    def _poll(self, name: str, read_committed: bool) -> None:
        consumer = self._consumer(self.names.transactional_id(name), read_committed,
                                  **{"enable.partition.eof": True})
        consumer.assign([TopicPartition(self.names.input, p, 0) for p in range(self.partitions)])
        self._consume(name, consumer, lambda message: self.recorder.polled(name, message))

    def _group_member(self) -> None:
        name = "consumer-rc"
        consumer = self._consumer(self.names.member_group, True, **{"enable.partition.eof": True})
        consumer.subscribe([self.names.input])

        def read(message: Message) -> None:
            with self.recorder.lock:
                self.recorder.history.group_polls[name].append(
                    (int(message.partition() or 0), int(message.offset() or 0), (message.value() or b"").decode()))
            try:
                consumer.commit(message=message, asynchronous=False)
            except KafkaException as error:  # a rebalance or a fault: the next owner re-reads
                self.recorder.event(name, "commit failed", error=str(error))

        self._consume(name, consumer, read)

    def _consume(self, reader: str, consumer: Consumer, read: Callable[[Message], None]) -> None:
        """Poll until the run ends: each record to `read`, then tracked; EOF moves the position too."""
        try:
            while self._consuming.is_set():
                message = consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        self._at_end(reader, int(message.partition() or 0), int(message.offset() or 0))
                    continue
                read(message)
                self._track(reader, message)
        finally:
            consumer.close()

    def _at_end(self, reader: str, partition: int, offset: int) -> None:
        """EOF at `offset`: control records before it count as read (they are never handed out)."""
        with self.recorder.lock:
            partitions = self.positions.setdefault(reader, {})
            partitions[partition] = max(partitions.get(partition, 0), offset)

    def _run_stage(self) -> None:
        """Supervise the stage process (`chaos/stage.py`): a stage silent for STAGE_STALL_S is hung (a
        client bug, see there) and is killed and started again; one that exits is started again."""
        command = [sys.executable, "-m", "oncelog.chaos.stage", self.bootstrap, self.names.input,
                   self.names.output, self.names.stage_group, self.names.transactional_id("stage"),
                   str(TRANSACTION_TIMEOUT_MS)]
        while self._consuming.is_set():
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.stage_starts += 1
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(target=_forward, args=(process, lines), daemon=True).start()
            last, allowed = time.monotonic(), STAGE_START_S
            while self._consuming.is_set() and process.poll() is None:
                try:
                    line = lines.get(timeout=0.5)
                    last, allowed = time.monotonic(), STAGE_STALL_S
                    self.stage_records = max(self.stage_records, int(line.split()[1]))
                except queue.Empty:
                    if time.monotonic() - last > allowed:
                        self.recorder.event("stage", "hung", seconds=allowed)
                        self.stage_hangs += 1
                        process.kill()
                        process.wait()
            if process.poll() is None:
                process.terminate()  # the end of the run: finish the current transaction
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.wait()
            if self._consuming.is_set():
                self.recorder.event("stage", "restarted", code=process.returncode)


def _forward(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    """Hand a child's output lines to a queue (a reader thread: the supervisor must not block on it)."""
    for line in process.stdout or ():
        lines.put(line)
