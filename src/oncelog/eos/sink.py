"""An exactly-once database sink: rows and consumed offsets commit in one database transaction.

Theory of operation: Kafka's offsets are not used at all. The table `oncelog_sink_offsets` holds, per
(consumer group, topic, partition), the next offset to read and an `owner_epoch`:

- When the group assigns a partition to this instance, it *claims* it: in one database transaction the
  epoch is incremented and the stored next offset read; the consumer starts there (from the beginning if
  nothing is stored). The epoch is remembered.
- Each batch is written in one database transaction: `write_rows(tx, messages)` inserts the rows, then
  the next offset of each partition is updated `WHERE owner_epoch = <ours>`. If another instance claimed
  the partition since (a rebalance this one has not noticed, a zombie after a pause), the update touches
  no row, the whole transaction is rolled back and `SinkFenced` is raised: two instances never both
  write a partition's rows.
- A crash anywhere leaves either the batch's rows *and* its offsets, or neither; the restarted instance
  resumes at the stored offset. Input is read with `isolation.level=read_committed`.

Example::

    from oncelog.eos import DatabaseSink, SinkConfig

    def write_rows(tx, messages):
        for m in messages:
            tx.execute("INSERT INTO orders (id, body) VALUES (?, ?)", (m.key().decode(), m.value().decode()))

    DatabaseSink(SinkConfig("127.0.0.1:9092", "orders-sink", ["orders-enriched"], "sqlite:///orders.db"),
                 write_rows).run()
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from .database import Database, connect
from .processor import next_position

logger = logging.getLogger(__name__)

OFFSETS_TABLE = "oncelog_sink_offsets"
NO_OFFSET = -1


class SinkFenced(Exception):
    """Another sink instance claimed a partition this one was writing; this instance must stop."""


@dataclass(frozen=True, slots=True)
class SinkConfig:
    bootstrap: str
    group_id: str
    topics: list[str]
    database_url: str = "sqlite:///oncelog-sink.db"
    batch_records_max: int = 500
    consumer_config: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SinkStats:
    records: int = 0
    batches: int = 0


RowWriter = Callable[[Database, list[Message]], None]


def create_offsets_table(database: Database) -> None:
    database.execute(
        f"CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (consumer_group TEXT NOT NULL, topic TEXT NOT NULL, "
        "partition_id INTEGER NOT NULL, next_offset BIGINT NOT NULL, owner_epoch BIGINT NOT NULL, "
        "PRIMARY KEY (consumer_group, topic, partition_id))"
    )
    database.commit()


def stored_offsets(database: Database, group_id: str) -> dict[tuple[str, int], int]:
    rows = database.execute(f"SELECT topic, partition_id, next_offset FROM {OFFSETS_TABLE} WHERE consumer_group = ?",
                            (group_id,)).fetchall()
    database.rollback()
    return {(topic, int(partition)): int(offset) for topic, partition, offset in rows}


class DatabaseSink:
    def __init__(self, config: SinkConfig, write_rows: RowWriter) -> None:
        self.config = config
        self.write_rows = write_rows
        self.stats = SinkStats()
        self.database = connect(config.database_url)
        create_offsets_table(self.database)
        self._epochs: dict[tuple[str, int], int] = {}
        self._stored: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self.consumer = Consumer({
            "bootstrap.servers": config.bootstrap, "group.id": config.group_id,
            "isolation.level": "read_committed", "enable.auto.commit": False, "auto.offset.reset": "earliest",
            **config.consumer_config,
        })

    def stop(self) -> None:
        self._stop.set()

    def run(self, idle_timeout_s: float | None = None, install_signal_handlers: bool = True) -> SinkStats:
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
        self.consumer.subscribe(self.config.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_input = time.monotonic()
        try:
            while not self._stop.is_set():
                messages = [m for m in self.consumer.consume(self.config.batch_records_max, 0.2)
                            if not self._is_error(m)]
                if messages:
                    self.write_batch(messages)
                    last_input = time.monotonic()
                else:
                    self._store_positions()
                    if idle_timeout_s is not None and time.monotonic() - last_input >= idle_timeout_s:
                        break
        finally:
            self.consumer.close()
            self.database.close()
        return self.stats

    @staticmethod
    def _is_error(message: Message) -> bool:
        error = message.error()
        if error is not None and error.code() != KafkaError._PARTITION_EOF:
            logger.warning("consumer error: %s", error)
        return error is not None

    # --- claiming partitions ---------------------------------------------------------------------------

    def claim(self, topic: str, partition: int) -> tuple[int, int]:
        """Take ownership of a partition: bump its epoch; return (epoch, next offset or -1)."""
        database = self.database
        key = (self.config.group_id, topic, partition)
        if database.kind == "postgresql":
            database.execute(f"INSERT INTO {OFFSETS_TABLE} VALUES (?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
                             (*key, NO_OFFSET))
        else:
            database.execute(f"INSERT OR IGNORE INTO {OFFSETS_TABLE} VALUES (?, ?, ?, ?, 0)", (*key, NO_OFFSET))
        database.execute(f"UPDATE {OFFSETS_TABLE} SET owner_epoch = owner_epoch + 1 WHERE consumer_group = ? "
                         "AND topic = ? AND partition_id = ?", key)
        epoch, next_offset = database.execute(
            f"SELECT owner_epoch, next_offset FROM {OFFSETS_TABLE} WHERE consumer_group = ? AND topic = ? "
            "AND partition_id = ?", key).fetchone()
        database.commit()
        self._epochs[(topic, partition)] = int(epoch)
        return int(epoch), int(next_offset)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            epoch, next_offset = self.claim(tp.topic, tp.partition)
            self._stored[(tp.topic, tp.partition)] = next_offset
            tp.offset = next_offset if next_offset >= 0 else OFFSET_BEGINNING
            logger.info("claimed %s-%d epoch=%d from offset %d", tp.topic, tp.partition, epoch, next_offset)
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._epochs.pop((tp.topic, tp.partition), None)

    # --- writing ---------------------------------------------------------------------------------------

    def _store_positions(self) -> None:
        """When idle, store positions that moved past control records (transaction markers take offsets
        but are never delivered), so the stored offsets reach the end of the partition and lag hits 0."""
        moved: dict[tuple[str, int], int] = {}
        for tp in self.consumer.position(self.consumer.assignment()):
            key = (tp.topic, tp.partition)
            if tp.offset >= 0 and tp.offset > self._stored.get(key, -1) and key in self._epochs:
                moved[key] = tp.offset
        if moved:
            self.write_batch([], moved)

    def write_batch(self, messages: list[Message], next_offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Rows and next offsets of `messages` in one database transaction, fenced by the epochs."""
        next_offsets = dict(next_offsets or {})
        for message in messages:
            key, offset = next_position(message)
            next_offsets[key] = offset
        database = self.database
        try:
            self.write_rows(database, messages)
            for (topic, partition), offset in next_offsets.items():
                epoch = self._epochs.get((topic, partition))
                updated = database.execute(
                    f"UPDATE {OFFSETS_TABLE} SET next_offset = ? WHERE consumer_group = ? AND topic = ? "
                    "AND partition_id = ? AND owner_epoch = ?",
                    (offset, self.config.group_id, topic, partition, -1 if epoch is None else epoch)).rowcount
                if updated != 1:
                    raise SinkFenced(f"{topic}-{partition} was claimed by another sink instance")
            database.commit()
        except BaseException:
            database.rollback()
            raise
        self._stored.update(next_offsets)
        self.stats.records += len(messages)
        self.stats.batches += 1
