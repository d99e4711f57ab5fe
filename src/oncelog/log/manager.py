"""The log manager: every topic's partition logs under one data directory.

Theory of operation: the data directory holds one folder per partition (`{topic}-{partition}`, Kafka's
layout), `topics.json` (each topic's id, partition count and config overrides: what Kafka keeps in its
metadata log), Kafka's `recovery-point-offset-checkpoint` and `log-start-offset-checkpoint`, a
`.oncelog_cleanshutdown` marker written last on a clean stop, and a `.lock` held while a broker runs.

On start, a missing clean-shutdown marker means the last stop was unclean: each partition then recovers
the segments from its checkpointed recovery point on (CRC scan, torn tails truncated). Metadata changes
are written atomically (temp file, fsync, rename, fsync of the directory) before they take effect, so a
topic the broker acknowledged creating survives kill -9.

This is the embedded storage backend. It is the seam where a shared backend (PostgreSQL for metadata and
producer state, object storage for segment bytes) would plug in: handlers and coordinators use only
`get`, `create_topic`, `delete_topic` and the `PartitionLog` verbs.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from oncelog.config import BrokerConfig, TopicConfig
from oncelog.durable import fsync_directory, write_atomically

from .checkpoint import read_checkpoint, write_checkpoint
from .cleaner import clean
from .partition import LogConfig, PartitionLog

logger = logging.getLogger(__name__)

TOPICS_FILE = "topics.json"
RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
CLEAN_SHUTDOWN_MARKER = ".oncelog_cleanshutdown"
LOCK_FILE = ".lock"

TOPIC_NAME_LENGTH_MAX = 249
_LEGAL_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")


class DataDirInUse(RuntimeError):
    """Another broker process holds this data directory."""


def topic_name_problem(name: str) -> str | None:
    """Why `name` is not a legal topic name (Kafka's `Topic.validate`), or None."""
    if not name:
        return "topic name is empty"
    if name in (".", ".."):
        return "topic name cannot be '.' or '..'"
    if len(name) > TOPIC_NAME_LENGTH_MAX:
        return f"topic name is longer than {TOPIC_NAME_LENGTH_MAX} characters"
    if not _LEGAL_TOPIC_NAME.match(name):
        return "topic name may contain only ASCII letters, digits, '.', '_' and '-'"
    return None


@dataclass(slots=True)
class Topic:
    name: str
    topic_id: uuid.UUID
    partitions: list[PartitionLog]
    config: TopicConfig

    @property
    def internal(self) -> bool:
        return self.name.startswith("__")


class LogManager:
    """Owns the partition logs. Not thread-safe: the broker's event loop is its only caller."""

    def __init__(self, config: BrokerConfig) -> None:
        self._config = config
        self._directory = config.data_dir
        self._topics: dict[str, Topic] = {}
        self._lock_fd: int | None = None
        self._cleaned_through: dict[str, int] = {}
        """Per partition, the active segment's base offset at its last cleaner pass."""

    # --- start and stop ---------------------------------------------------------------------------

    def start(self, now_ms: int) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self._directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise DataDirInUse(
                f"data directory {self._directory} is in use by another oncelog process; "
                "stop it or pass a different --data-dir"
            ) from error
        marker = self._directory / CLEAN_SHUTDOWN_MARKER
        clean = marker.exists()
        recovery_points = read_checkpoint(self._directory / RECOVERY_POINT_CHECKPOINT)
        log_start_offsets = read_checkpoint(self._directory / LOG_START_OFFSET_CHECKPOINT)
        if not clean and (self._directory / TOPICS_FILE).exists():
            logger.warning("data_dir=%s was not shut down cleanly: recovering partition logs", self._directory)
        for name, entry in self._read_topics_file().items():
            configs = {str(key): str(value) for key, value in entry.get("configs", {}).items()}
            topic = Topic(name, uuid.UUID(str(entry["id"])), [], TopicConfig(configs))
            for index in range(int(entry["partitions"])):
                topic.partitions.append(
                    PartitionLog.open(
                        self._directory / f"{name}-{index}",
                        name,
                        index,
                        self.log_config(topic.config),
                        recovery_point=recovery_points.get((name, index), 0),
                        log_start_offset=log_start_offsets.get((name, index), 0),
                        clean_shutdown=clean,
                        now_ms=now_ms,
                    )
                )
            self._topics[name] = topic
        self._remove_stray_deleted_directories()
        if clean:
            marker.unlink()
            fsync_directory(self._directory)

    def close(self) -> None:
        """Clean stop: fsync and close every log, write checkpoints, then the clean-shutdown marker."""
        for topic in self._topics.values():
            for log in topic.partitions:
                log.close()
        self.write_checkpoints()
        marker = self._directory / CLEAN_SHUTDOWN_MARKER
        marker.write_bytes(b"")
        fsync_directory(self._directory)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def write_checkpoints(self) -> None:
        recovery_points: dict[tuple[str, int], int] = {}
        log_start_offsets: dict[tuple[str, int], int] = {}
        for log in self.logs():
            recovery_points[(log.topic, log.partition)] = log.recovery_point
            log_start_offsets[(log.topic, log.partition)] = log.log_start_offset
        write_checkpoint(self._directory / RECOVERY_POINT_CHECKPOINT, recovery_points)
        write_checkpoint(self._directory / LOG_START_OFFSET_CHECKPOINT, log_start_offsets)

    # --- topics ------------------------------------------------------------------------------------

    def log_config(self, topic_config: TopicConfig) -> LogConfig:
        broker = self._config
        return LogConfig(
            segment_bytes=topic_config.int_value("segment.bytes", broker),
            segment_ms=topic_config.int_value("segment.ms", broker),
            retention_ms=topic_config.int_value("retention.ms", broker),
            retention_bytes=topic_config.int_value("retention.bytes", broker),
            index_interval_bytes=topic_config.int_value("index.interval.bytes", broker),
            message_bytes_max=topic_config.int_value("max.message.bytes", broker),
        )

    def topics(self) -> Iterator[Topic]:
        return iter(list(self._topics.values()))

    def topic(self, name: str) -> Topic | None:
        return self._topics.get(name)

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        entry = self._topics.get(topic)
        if entry is None or not 0 <= partition < len(entry.partitions):
            return None
        return entry.partitions[partition]

    def logs(self) -> Iterator[PartitionLog]:
        for topic in list(self._topics.values()):
            yield from topic.partitions

    def create_topic(self, name: str, partitions: int, config: TopicConfig, now_ms: int) -> Topic:
        """Create the topic's directories and persist its metadata; the caller validated the inputs."""
        assert name not in self._topics and topic_name_problem(name) is None and partitions >= 1
        topic = Topic(name, uuid.uuid4(), [], config)
        log_config = self.log_config(config)
        for index in range(partitions):
            directory = self._directory / f"{name}-{index}"
            if directory.exists():  # leftovers of a crash between mkdir and the metadata write
                shutil.rmtree(directory)
            topic.partitions.append(
                PartitionLog.open(
                    directory,
                    name,
                    index,
                    log_config,
                    recovery_point=0,
                    log_start_offset=0,
                    clean_shutdown=True,
                    now_ms=now_ms,
                )
            )
        self._topics[name] = topic
        self._write_topics_file()
        logger.info("created topic=%s partitions=%d configs=%s", name, partitions, dict(config.overrides))
        return topic

    def delete_topic(self, name: str) -> None:
        topic = self._topics.pop(name)
        self._write_topics_file()
        for log in topic.partitions:
            log.close()
            directory = self._directory / log.name
            doomed = directory.with_name(f"{log.name}.{uuid.uuid4().hex}-delete")
            directory.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        logger.info("deleted topic=%s", name)

    def expire_producers(self, now_ms: int, expiration_ms: int) -> int:
        """Forget producers idle for `producer.id.expiration.ms` (Kafka's `removeExpiredProducers`)."""
        return sum(log.producer_state.remove_expired(now_ms, expiration_ms) for log in self.logs())

    def apply_retention(self, now_ms: int) -> int:
        """Time and size retention, for topics whose cleanup.policy includes `delete` (Kafka never
        deletes segments of a compact-only topic by age)."""
        deleted = 0
        for topic in self.topics():
            if "delete" in topic.config.value("cleanup.policy", self._config).split(","):
                for log in topic.partitions:
                    deleted += log.apply_retention(now_ms)
        return deleted

    def compact(self, now_ms: int) -> int:
        """A cleaner pass over compacted topics' partitions that rolled a segment since their last pass."""
        rewritten = 0
        for topic in self.topics():
            if "compact" not in topic.config.value("cleanup.policy", self._config).split(","):
                continue
            delete_retention_ms = topic.config.int_value("delete.retention.ms", self._config)
            for log in topic.partitions:
                active_base = log.segments[-1].base_offset
                if active_base > self._cleaned_through.get(log.name, 0):
                    rewritten += clean(log, now_ms, delete_retention_ms).segments_rewritten
                    self._cleaned_through[log.name] = active_base
        return rewritten

    # --- metadata file -------------------------------------------------------------------------------

    def _read_topics_file(self) -> dict[str, dict[str, Any]]:
        path = self._directory / TOPICS_FILE
        if not path.exists():
            return {}
        data = json.loads(path.read_text())
        assert isinstance(data, dict)
        return data

    def _write_topics_file(self) -> None:
        data = {
            topic.name: {
                "id": str(topic.topic_id),
                "partitions": len(topic.partitions),
                "configs": dict(topic.config.overrides),
            }
            for topic in self._topics.values()
        }
        write_atomically(self._directory / TOPICS_FILE, json.dumps(data, indent=1, sort_keys=True).encode())

    def _remove_stray_deleted_directories(self) -> None:
        for entry in self._directory.iterdir():
            if entry.is_dir() and entry.name.endswith("-delete"):
                shutil.rmtree(entry, ignore_errors=True)
