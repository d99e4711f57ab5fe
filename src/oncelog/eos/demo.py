"""`oncelog demo MODE`: the seed's pipeline under SIGKILLs, then an audit.

    producer app → orders → processor → orders-enriched → sink → database table

1. Starts a broker (`oncelog serve` on a temp dir) unless `--bootstrap` is given; creates fresh topics.
2. The producer app writes N orders (idempotent, acks=all) with ids 0..N-1.
3. Runs the processor and the sink as subprocesses in the chosen MODE and SIGKILLs one of them K times
   at random moments (seeded), restarting it each time.
4. Waits until both have caught up, stops them, and audits: every order id in the output topic (read
   read_committed) and in the database table, counted. The last line printed is exactly
   `MODE: N in, X out, Y rows, D duplicates, M missing`.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from oncelog.client import KafkaClient
from oncelog.progress import Progress
from oncelog.testing import BrokerProcess

from .database import connect
from .demo_worker import ROWS_TABLE
from .sink import stored_offsets

MODES = ("at-most-once", "at-least-once", "exactly-once")
PARTITIONS = 3
CATCH_UP_TIMEOUT_S = 180.0
KILL_DELAY_S = (0.3, 1.5)


@dataclass(frozen=True, slots=True)
class AuditResult:
    mode: str
    records_in: int
    records_out: int
    rows: int
    duplicates: int
    missing: int

    def line(self) -> str:
        return (f"{self.mode}: {self.records_in} in, {self.records_out} out, {self.rows} rows, "
                f"{self.duplicates} duplicates, {self.missing} missing")


@dataclass(frozen=True, slots=True)
class Pipeline:
    bootstrap: str
    mode: str
    orders: str
    enriched: str
    processor_group: str
    sink_group: str
    db_url: str

    def worker(self, role: str) -> subprocess.Popen[bytes]:
        group = self.processor_group if role == "processor" else self.sink_group
        return subprocess.Popen(
            [sys.executable, "-m", "oncelog.eos.demo_worker", role, self.mode, "--bootstrap", self.bootstrap,
             "--input", self.orders, "--output", self.enriched, "--group", group, "--db", self.db_url],
            stdout=subprocess.DEVNULL)


def _say(message: str) -> None:
    print(message, flush=True)


def _create_topics(bootstrap: str, names: list[str]) -> None:
    with KafkaClient(bootstrap) as client:
        response = client.request(19, 5, {"topics": [
            {"name": name, "num_partitions": PARTITIONS, "replication_factor": -1, "assignments": [], "configs": []}
            for name in names], "timeout": 30_000, "validate_only": False})
    for topic in response.topics:
        if topic.error_code != 0:
            raise RuntimeError(f"cannot create topic {topic.name}: {topic.error_code.name.upper()}")


def _produce_orders(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for order_id in range(count):
        order = {"order_id": order_id, "quantity": 1 + order_id % 5, "price_cents": 100 + order_id % 900}
        producer.produce(topic, key=str(order_id).encode(), value=json.dumps(order).encode())
        if order_id % 1000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("the producer app could not deliver every order")


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "oncelog-demo-audit",
                         "isolation.level": "read_committed"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
    finally:
        consumer.close()


def _kafka_committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()


def _backlog(pipeline: Pipeline) -> tuple[int, int, int, int]:
    """(orders processed, orders in the topic, enriched records sunk, enriched records in the topic)."""
    orders_end = _end_offsets(pipeline.bootstrap, pipeline.orders)
    processed = _kafka_committed(pipeline.bootstrap, pipeline.processor_group, pipeline.orders)
    enriched_end = _end_offsets(pipeline.bootstrap, pipeline.enriched)
    if pipeline.mode == "exactly-once":
        database = connect(pipeline.db_url)
        try:
            stored = stored_offsets(database, pipeline.sink_group)
        finally:
            database.close()
        sunk = {p: stored.get((pipeline.enriched, p), -1) for p in range(PARTITIONS)}
    else:
        sunk = _kafka_committed(pipeline.bootstrap, pipeline.sink_group, pipeline.enriched)
    # Offsets, not records: transaction markers take offsets too, so "done" is reaching each end offset.
    return (sum(min(max(processed.get(p, 0), 0), end) for p, end in orders_end.items()), sum(orders_end.values()),
            sum(min(max(sunk.get(p, 0), 0), end) for p, end in enriched_end.items()), sum(enriched_end.values()))


def _run_with_crashes(pipeline: Pipeline, crashes: int, seed: int) -> None:
    rng = random.Random(seed)
    workers = {role: pipeline.worker(role) for role in ("processor", "sink")}
    try:
        for crash in range(1, crashes + 1):
            time.sleep(rng.uniform(*KILL_DELAY_S))
            role = rng.choice(("processor", "sink"))
            workers[role].send_signal(signal.SIGKILL)
            workers[role].wait(30)
            _say(f"  crash {crash}/{crashes}: SIGKILL {role}, restarting it")
            workers[role] = pipeline.worker(role)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        progress = Progress("  catching up", 1)
        while time.monotonic() < deadline:
            processed, orders, sunk, enriched = _backlog(pipeline)
            progress.total = max(1, orders + enriched)
            detail = f"processed {processed}/{orders} order offsets, sunk {sunk}/{enriched}"
            if processed >= orders and sunk >= enriched:
                progress.finish(processed + sunk, detail)
                break
            progress.update(processed + sunk, detail)
            time.sleep(1.0)
    finally:
        for process in workers.values():
            process.send_signal(signal.SIGTERM)
        for process in workers.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def audit(pipeline: Pipeline, records: int) -> AuditResult:
    consumer = Consumer({"bootstrap.servers": pipeline.bootstrap, "group.id": "oncelog-demo-audit",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    consumer.assign([TopicPartition(pipeline.enriched, p, 0) for p in range(PARTITIONS)])
    in_topic: Counter[int] = Counter()
    at_end: set[int] = set()
    deadline = time.monotonic() + 60
    while len(at_end) < PARTITIONS and time.monotonic() < deadline:
        for message in consumer.consume(1000, 0.5):
            error = message.error()
            if error is not None:
                partition = message.partition()
                if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                    at_end.add(partition)
                continue
            in_topic[json.loads(message.value() or b"{}")["order_id"]] += 1
    consumer.close()
    database = connect(pipeline.db_url)
    try:
        in_table: Counter[int] = Counter(
            int(order_id) for (order_id,) in database.execute(f"SELECT order_id FROM {ROWS_TABLE}").fetchall())
    finally:
        database.close()
    ids = range(records)
    duplicates = sum(1 for i in ids if in_topic[i] > 1 or in_table[i] > 1)
    missing = sum(1 for i in ids if in_topic[i] == 0 or in_table[i] == 0)
    return AuditResult(pipeline.mode, records, sum(in_topic.values()), sum(in_table.values()), duplicates, missing)


def run(mode: str, records: int, crashes: int, bootstrap: str | None, db_url: str | None, seed: int | None) -> int:
    """`oncelog demo`: exit 0, or 1 if exactly-once found a duplicate or a missing record."""
    result = run_pipeline(mode, records, crashes, bootstrap, db_url, seed)
    return 0 if mode != "exactly-once" or (result.duplicates == 0 and result.missing == 0) else 1


def run_pipeline(mode: str, records: int, crashes: int, bootstrap: str | None, db_url: str | None,
                 seed: int | None) -> AuditResult:
    """Run the demo pipeline and return its audit (also printed, as the last line)."""
    assert mode in MODES
    seed = seed if seed is not None else random.randrange(1 << 30)
    with tempfile.TemporaryDirectory(prefix="oncelog-demo-") as directory:
        broker = None
        if bootstrap is None:
            broker = BrokerProcess(Path(directory) / "broker", {"group.initial.rebalance.delay.ms": "0"})
            bootstrap = broker.start()
            _say(f"started a broker on {bootstrap}")
        run_id = uuid.uuid4().hex[:8]
        pipeline = Pipeline(bootstrap, mode, f"orders-{run_id}", f"orders-enriched-{run_id}",
                            f"demo-processor-{run_id}", f"demo-sink-{run_id}",
                            db_url or f"sqlite:///{Path(directory) / 'demo.db'}")
        try:
            _create_topics(bootstrap, [pipeline.orders, pipeline.enriched])
            _say(f"producer app: writing {records} orders to {pipeline.orders}")
            _produce_orders(bootstrap, pipeline.orders, records)
            _say(f"running the {mode} processor and sink with {crashes} random SIGKILLs (seed {seed})")
            _run_with_crashes(pipeline, crashes, seed)
            result = audit(pipeline, records)
            _say(result.line())
        finally:
            if broker is not None and broker.process is not None:
                broker.terminate()
    return result


__all__ = ["MODES", "AuditResult", "audit", "run", "run_pipeline"]
