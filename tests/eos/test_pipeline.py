"""oncelog.eos against a real broker: the processor and the database sink under random SIGKILLs keep
every input exactly once in the output topic and in the table (SQLite and PostgreSQL), and a stale sink
instance is fenced."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from oncelog.eos import DatabaseSink, SinkConfig, SinkFenced
from oncelog.eos.database import connect
from oncelog.eos.demo import Pipeline, audit, run_pipeline
from oncelog.eos.demo_worker import ROWS_TABLE, create_rows_table
from oncelog.testing import BrokerProcess
from tests.helpers import create_topic
from tests.postgres import postgres_server, unavailable_reason


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process = BrokerProcess(tmp_path_factory.mktemp("broker") / "data", {"group.initial.rebalance.delay.ms": "0"})
    bootstrap = process.start()
    try:
        yield bootstrap
    finally:
        process.terminate()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.mark.parametrize("seed", [101, 202, 303])
def test_exactly_once_on_sqlite_under_random_sigkills(broker: str, tmp_path: Path, seed: int) -> None:
    """Processor and sink each killed at random points (seeded): topic and table hold every input once."""
    result = run_pipeline("exactly-once", 2000, 4, broker, f"sqlite:///{tmp_path / 'sink.db'}", seed)
    assert (result.records_out, result.rows, result.duplicates, result.missing) == (2000, 2000, 0, 0), result


def test_exactly_once_on_postgresql_under_random_sigkills(broker: str, postgres_url: str) -> None:
    result = run_pipeline("exactly-once", 2000, 4, broker, postgres_url, 404)
    assert (result.records_out, result.rows, result.duplicates, result.missing) == (2000, 2000, 0, 0), result


def test_audit_counts_duplicates_and_missing_records(broker: str, tmp_path: Path) -> None:
    """The audit is not blind: a duplicated output record, a duplicated row and a missing row are counted."""
    run_id = uuid.uuid4().hex[:8]
    pipeline = Pipeline(broker, "at-least-once", f"orders-{run_id}", f"orders-enriched-{run_id}", "p", "s",
                        f"sqlite:///{tmp_path / 'audit.db'}")
    for topic in (pipeline.orders, pipeline.enriched):
        create_topic(broker, topic, 3)
    producer = Producer({"bootstrap.servers": broker})
    for order_id in (0, 1, 1, 2, 3):  # order 1 twice in the topic; order 4 never
        producer.produce(pipeline.enriched, value=json.dumps({"order_id": order_id}).encode(), partition=order_id % 3)
    assert producer.flush(10) == 0
    database = connect(pipeline.db_url)
    create_rows_table(database)
    for order_id in (0, 1, 2, 2, 4):  # order 2 twice in the table; order 3 never
        database.execute(f"INSERT INTO {ROWS_TABLE} VALUES (?, '{{}}', 0, 0)", (order_id,))
    database.commit()
    database.close()
    result = audit(pipeline, 5)
    assert (result.records_out, result.rows, result.duplicates, result.missing) == (5, 5, 2, 2)
    assert result.line() == "at-least-once: 5 in, 5 out, 5 rows, 2 duplicates, 2 missing"


def _sink(broker: str, url: str, topic: str) -> DatabaseSink:
    def write_rows(database: object, messages: list[object]) -> None:
        for message in messages:
            database.execute("INSERT INTO sink_rows (value) VALUES (?)", (message.value().decode(),))  # type: ignore[attr-defined]

    return DatabaseSink(SinkConfig(broker, f"fence-{topic}", [topic], url), write_rows)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_stale_sink_instance_is_fenced(broker: str, tmp_path: Path, topic_name: str, backend: str,
                                       request: pytest.FixtureRequest) -> None:
    """Once instance B claims a partition, instance A's next write of it is rolled back (SinkFenced)."""
    url = f"sqlite:///{tmp_path / 'fence.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    database = connect(url)
    database.execute("DROP TABLE IF EXISTS sink_rows")
    database.execute("CREATE TABLE sink_rows (value TEXT NOT NULL)")
    database.commit()
    create_topic(broker, topic_name, 1)
    producer = Producer({"bootstrap.servers": broker})
    producer.produce(topic_name, value=b"first", partition=0)
    assert producer.flush(10) == 0
    a, b = _sink(broker, url, topic_name), _sink(broker, url, topic_name)
    try:
        epoch_a, _ = a.claim(topic_name, 0)
        epoch_b, offset = b.claim(topic_name, 0)
        assert epoch_b == epoch_a + 1 and offset == -1
        fake = _FakeMessage(topic_name, 0, 0, b"from-a")
        with pytest.raises(SinkFenced):
            a.write_batch([fake])  # type: ignore[list-item]
        b.write_batch([_FakeMessage(topic_name, 0, 0, b"from-b")])  # type: ignore[list-item]
        rows = [value for (value,) in database.execute("SELECT value FROM sink_rows").fetchall()]
        database.rollback()
        assert rows == ["from-b"], "the fenced instance's rows were rolled back with its offsets"
    finally:
        for sink in (a, b):
            sink.consumer.close()
            sink.database.close()
        database.close()


class _FakeMessage:
    """The fields of a consumed record the sink reads (a confluent Message cannot be built by hand)."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._topic, self._partition, self._offset, self._value = topic, partition, offset, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value


def test_demo_command_prints_the_audit_line(broker: str) -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "oncelog", "demo", "exactly-once", "--records", "500",
                             "--crashes", "2", "--seed", "9", "--bootstrap", broker],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[-1] == "exactly-once: 500 in, 500 out, 500 rows, 0 duplicates, 0 missing"
    assert any("SIGKILL" in line for line in lines)
    print(f"demo took {time.monotonic() - started:.1f}s")
