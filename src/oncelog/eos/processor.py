"""An exactly-once stream processor: consume → transform → produce, offsets inside the transaction.

Theory of operation (Kafka's transactional "consume-transform-produce" loop, KIP-447):

1. A group consumer (`isolation.level=read_committed`, no auto-commit) polls a batch.
2. Inside one producer transaction, every output of `transform(message)` is produced and then the
   positions reached are sent with `send_offsets_to_transaction`, carrying the consumer's group metadata
   so the group coordinator fences a processor that lost its partitions (KIP-447).
3. `commit_transaction` makes outputs and offsets visible atomically. If anything fails before that,
   the transaction is aborted and the consumer rewinds to the committed offsets, so the batch is redone
   from scratch; a crash at any point leaves either all of the batch's effects or none.

Rebalances: on revocation the open transaction is committed first (its offsets are still ours), so the
next owner starts exactly where we stopped. A fenced producer (another instance took over the
transactional id) is fatal: the instance stops. SIGTERM (or `stop()`) ends the loop after the current
transaction. Progress (records/s, commits, lag) is reported every `progress_interval_s`.

Example::

    from oncelog.eos import Output, Processor, ProcessorConfig

    def enrich(message):
        yield Output("orders-enriched", message.key(), message.value().upper())

    Processor(ProcessorConfig(bootstrap="127.0.0.1:9092", group_id="enricher",
                              input_topics=["orders"], transactional_id="enricher-1"), enrich).run()
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

logger = logging.getLogger(__name__)


class Output(NamedTuple):
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None


Transform = Callable[[Message], Iterable[Output]]


def next_position(message: Message) -> tuple[tuple[str, int], int]:
    """((topic, partition), offset after the message) of a consumed, error-free message."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None, "a consumed record has all three"
    return (topic, partition), offset + 1


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    bootstrap: str
    group_id: str
    input_topics: list[str]
    transactional_id: str
    """Stable per processor instance; a restarted instance with the same id fences the old one."""
    batch_records_max: int = 500
    commit_interval_ms: int = 100
    transaction_timeout_ms: int = 60_000
    progress_interval_s: float = 5.0
    consumer_config: dict[str, Any] = field(default_factory=dict)
    producer_config: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ProcessorStats:
    records_in: int = 0
    records_out: int = 0
    commits: int = 0
    aborts: int = 0
    lag: int = 0


class Processor:
    def __init__(self, config: ProcessorConfig, transform: Transform,
                 on_progress: Callable[[ProcessorStats, float], None] | None = None) -> None:
        """`on_progress(stats, records_per_second)` is called every `progress_interval_s`."""
        self.config = config
        self.transform = transform
        self.stats = ProcessorStats()
        self._stop = threading.Event()
        self._on_progress = on_progress or _log_progress
        self._in_transaction = False
        self._positions: dict[tuple[str, int], int] = {}
        self._reported_in = 0
        self.consumer = Consumer({
            "bootstrap.servers": config.bootstrap, "group.id": config.group_id,
            "isolation.level": "read_committed", "enable.auto.commit": False, "auto.offset.reset": "earliest",
            **config.consumer_config,
        })
        self.producer = Producer({
            "bootstrap.servers": config.bootstrap, "transactional.id": config.transactional_id,
            "transaction.timeout.ms": config.transaction_timeout_ms, **config.producer_config,
        })

    def stop(self) -> None:
        """Finish the current transaction, then return from `run` (also what SIGTERM does)."""
        self._stop.set()

    def run(self, idle_timeout_s: float | None = None, install_signal_handlers: bool = True) -> ProcessorStats:
        """Process until stopped (or, with `idle_timeout_s`, until no input arrived for that long)."""
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
        self.producer.init_transactions(30)
        self.consumer.subscribe(self.config.input_topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_input = time.monotonic()
        last_progress = time.monotonic()
        try:
            while not self._stop.is_set():
                processed = self._one_transaction()
                now = time.monotonic()
                if processed:
                    last_input = now
                elif idle_timeout_s is not None and now - last_input >= idle_timeout_s:
                    break
                if now - last_progress >= self.config.progress_interval_s:
                    self._report(now - last_progress)
                    last_progress = now
        finally:
            self._close()
        return self.stats

    # --- one transaction ---------------------------------------------------------------------------------

    def _one_transaction(self) -> int:
        config = self.config
        deadline = time.monotonic() + config.commit_interval_ms / 1000
        messages: list[Message] = []
        while len(messages) < config.batch_records_max and time.monotonic() < deadline:
            for message in self.consumer.consume(config.batch_records_max - len(messages), 0.05):
                error = message.error()
                if error is None:
                    messages.append(message)
                elif error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("consumer error: %s", error)
        if not messages:
            return 0
        try:
            self.producer.begin_transaction()
            self._in_transaction = True
            produced = 0
            for message in messages:
                for output in self.transform(message):
                    self._produce(output)
                    produced += 1
                key, offset = next_position(message)
                self._positions[key] = offset
            self._commit()
        except KafkaException as exception:
            self._recover(exception)
            return 0
        self.stats.records_in += len(messages)
        self.stats.records_out += produced
        return len(messages)

    def _produce(self, output: Output) -> None:
        while True:
            try:
                if output.partition is None:
                    self.producer.produce(output.topic, key=output.key, value=output.value)
                else:
                    self.producer.produce(output.topic, key=output.key, value=output.value,
                                          partition=output.partition)
                return
            except BufferError:
                self.producer.poll(0.01)

    def _commit(self) -> None:
        if not self._in_transaction:
            return
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self._positions.items()]
        if offsets:
            self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
        self.producer.commit_transaction(60)
        self._in_transaction = False
        self._positions.clear()
        self.stats.commits += 1

    def _recover(self, exception: KafkaException) -> None:
        error = exception.args[0] if exception.args else None
        if isinstance(error, KafkaError) and error.fatal():
            raise exception  # fenced by a newer instance, or another unrecoverable producer state
        logger.warning("transaction failed (%s): aborting and rewinding to the committed offsets", error)
        if self._in_transaction:
            self.producer.abort_transaction(30)
            self._in_transaction = False
        self.stats.aborts += 1
        self._positions.clear()
        self._rewind()

    def _rewind(self) -> None:
        assignment = self.consumer.assignment()
        if not assignment:
            return
        for committed in self.consumer.committed(assignment, timeout=30):
            offset = committed.offset if committed.offset >= 0 else -2  # OFFSET_BEGINNING when none
            self.consumer.seek(TopicPartition(committed.topic, committed.partition, offset))

    # --- rebalances -----------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("assigned %s", ", ".join(f"{p.topic}-{p.partition}" for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit the in-flight transaction while its offsets still belong to us."""
        if self._in_transaction:
            try:
                self._commit()
            except KafkaException as exception:
                self._recover(exception)
        self._positions.clear()

    # --- progress and shutdown ------------------------------------------------------------------------

    def _report(self, elapsed_s: float) -> None:
        lag = 0
        for tp in self.consumer.assignment():
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                position = self.consumer.position([tp])[0].offset
            except KafkaException:
                continue
            if high >= 0 and position >= 0:
                lag += max(0, high - position)
        self.stats.lag = lag
        rate = (self.stats.records_in - self._reported_in) / elapsed_s if elapsed_s > 0 else 0.0
        self._reported_in = self.stats.records_in
        self._on_progress(self.stats, rate)

    def _close(self) -> None:
        try:
            if self._in_transaction:
                self._commit()
        except KafkaException as exception:
            logger.warning("final commit failed: %s", exception)
        finally:
            self.consumer.close()
            self.producer.flush(10)


def _log_progress(stats: ProcessorStats, rate: float) -> None:
    logger.info("processed %d in (%.0f/s), %d out, %d commits, %d aborts, lag %d", stats.records_in, rate,
                stats.records_out, stats.commits, stats.aborts, stats.lag)
