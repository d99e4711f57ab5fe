"""The log manager: every topic's partition logs under one data directory.

Theory of operation: the data directory holds one folder per partition (`{topic}-{partition}`, Kafka's
layout), `topics.json` (each topic's id, partition count and config overrides: what Kafka keeps in its
metadata log), Kafka's `recovery-point-offset-checkpoint` and `log-start-offset-checkpoint`, a
`.oncelog_cleanshutdown` marker written last on a clean stop, and a `.lock` held while a broker runs.

On start, a missing clean-shutdown marker means the last stop was unclean: each partition then recovers
the segments from its checkpointed recovery point on (CRC scan, torn tails truncated). Metadata changes
are written atomically (temp file, fsync, rename, fsync of the directory) before they take effect, so a
topic the broker acknowledged creating survives kill -9.

Every file goes through the file-system seam (`oncelog.fs`). Start-up problems (a data directory that
cannot be written, a corrupt `topics.json`, a partition whose files cannot be read) raise
`DataDirError` with a message that names the file and says what to do. At run time, background jobs
are isolated per partition: a partition whose retention fails goes offline, one whose records the
cleaner cannot decode is marked uncleanable and skipped (Kafka's LogCleaner does the same), and the
other partitions carry on. Open files are bounded by `OpenFiles` (half the process's file-descriptor
limit, which start-up raises to the hard limit); partitions are bounded by `max.broker.partitions`.

This is the embedded storage backend. It is the seam where a shared backend (PostgreSQL for metadata and
producer state, object storage for segment bytes) would plug in: handlers and coordinators use only
`get`, `create_topic`, `delete_topic` and the `PartitionLog` verbs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import resource
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from oncelog.config import BrokerConfig
from oncelog.errors import ErrorCode, KafkaError
from oncelog.fs import OS_FILE_SYSTEM, DataDir, FileSystem, OpenFiles, RollbackFailed, write_atomically
from oncelog.logs import RateLimited, safe
from oncelog.topic_config import TopicConfig

from .checkpoint import read_checkpoint, write_checkpoint
from .cleaner import Uncleanable, clean
from .partition import LogConfig, PartitionLog

logger = logging.getLogger(__name__)

TOPICS_FILE = "topics.json"
RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"
CLEAN_SHUTDOWN_MARKER = ".oncelog_cleanshutdown"
LOCK_FILE = ".lock"

TOPIC_NAME_LENGTH_MAX = 249
FILE_NAME_LENGTH_MAX = 255
OPEN_FILES_MIN = 64
_LEGAL_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")

INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
"""Kafka's internal topics (`Topic.INTERNAL_TOPICS`): only the broker creates, deletes and writes them.
Other names starting with `__` are ordinary user topics."""

_job_errors = RateLimited(300.0)


class DataDirInUse(RuntimeError):
    """Another broker process holds this data directory."""


class DataDirError(RuntimeError):
    """The data directory cannot be used; the message says which file and what to do."""


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


def collision_key(name: str) -> str:
    """Kafka's `Topic.unifyCollisionChars`: '.' and '_' collide in metric names, so `a.b` and `a_b` may
    not both exist."""
    return name.replace(".", "_")


def deleted_directory_name(topic: str, partition: int) -> str:
    """Kafka's `LocalLog.logDeleteDirName`: the topic part is cut so the name fits a file name."""
    suffix = f"-{partition}.{uuid.uuid4().hex}-delete"
    return topic[: FILE_NAME_LENGTH_MAX - len(suffix)] + suffix


def raise_open_files_limit() -> int:
    """Raise the soft file-descriptor limit to the hard one (as Kafka's start scripts advise); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


@dataclass(slots=True)
class Topic:
    name: str
    topic_id: uuid.UUID
    partitions: list[PartitionLog]
    config: TopicConfig

    @property
    def internal(self) -> bool:
        return self.name in INTERNAL_TOPICS


class LogManager:
    """Owns the partition logs. Not thread-safe: the broker's event loop is its only caller."""

    def __init__(self, config: BrokerConfig, fs: FileSystem = OS_FILE_SYSTEM) -> None:
        self._config = config
        self._directory = config.data_dir
        self._fs = fs
        self.data_dir = DataDir(config.data_dir, fs, OpenFiles(max(OPEN_FILES_MIN, raise_open_files_limit() // 2)))
        self._topics: dict[str, Topic] = {}
        self._unlock: Callable[[], None] | None = None
        self._cleaned_through: dict[str, int] = {}
        """Per partition, the active segment's base offset at its last cleaner pass."""
        self.uncleanable: dict[str, str] = {}
        """Partitions the cleaner gave up on, with the reason (Kafka's uncleanable partitions)."""

    # --- start and stop ---------------------------------------------------------------------------

    def start(self, now_ms: int) -> None:
        fs = self._fs
        directory = self._directory
        try:
            fs.make_dir(directory)
            unlock = fs.lock(directory / LOCK_FILE)
        except OSError as error:
            raise DataDirError(f"cannot use data directory {directory}: {error.strerror or error}. Check that it "
                               "exists and is writable by this user, or pass another --data-dir") from error
        if unlock is None:
            raise DataDirInUse(
                f"data directory {directory} is in use by another oncelog process; "
                "stop it or pass a different --data-dir"
            )
        self._unlock = unlock
        try:
            self._load(now_ms)
        except BaseException:
            self._release_lock()
            raise

    def _load(self, now_ms: int) -> None:
        fs = self._fs
        directory = self._directory
        marker = directory / CLEAN_SHUTDOWN_MARKER
        clean = fs.exists(marker)
        recovery_points = read_checkpoint(fs, directory / RECOVERY_POINT_CHECKPOINT)
        log_start_offsets = read_checkpoint(fs, directory / LOG_START_OFFSET_CHECKPOINT)
        topics = self._read_topics_file()
        if not clean and topics:
            logger.warning("data_dir=%s was not shut down cleanly: recovering partition logs", directory)
        for name, entry in topics.items():
            configs = {str(key): str(value) for key, value in entry.get("configs", {}).items()}
            topic = Topic(name, uuid.UUID(str(entry["id"])), [], TopicConfig(configs))
            for index in range(int(entry["partitions"])):
                try:
                    log = PartitionLog.open(
                        directory / f"{name}-{index}",
                        name,
                        index,
                        self.log_config(topic.config),
                        self.data_dir,
                        recovery_point=recovery_points.get((name, index), 0),
                        log_start_offset=log_start_offsets.get((name, index), 0),
                        clean_shutdown=clean,
                        now_ms=now_ms,
                    )
                except (OSError, RollbackFailed) as error:
                    raise DataDirError(
                        f"cannot open partition {name}-{index} in {directory}: {error}. The disk may be failing "
                        "or full; free space or repair it and start again") from error
                topic.partitions.append(log)
            self._topics[name] = topic
        try:
            self._remove_stray_deleted_directories()
            if clean:
                fs.unlink(marker)
                fs.sync_dir(directory)
        except OSError as error:
            raise DataDirError(f"cannot write to data directory {directory}: {error.strerror or error}") from error

    def close(self) -> None:
        """Clean stop: fsync and close every log, write checkpoints, then the clean-shutdown marker (only
        if all of that worked; otherwise the next start recovers, which is always safe)."""
        durable = True
        for topic in self._topics.values():
            for log in topic.partitions:
                durable &= log.close()
        try:
            self.write_checkpoints()
            if durable:
                write_atomically(self._fs, self._directory / CLEAN_SHUTDOWN_MARKER, b"")
        except OSError as error:
            logger.error("data_dir=%s could not record a clean shutdown (the next start recovers): %s",
                         self._directory, error)
        self._release_lock()

    def _release_lock(self) -> None:
        if self._unlock is not None:
            self._unlock()
            self._unlock = None

    def write_checkpoints(self) -> None:
        recovery_points: dict[tuple[str, int], int] = {}
        log_start_offsets: dict[tuple[str, int], int] = {}
        for log in self.logs():
            recovery_points[(log.topic, log.partition)] = log.recovery_point
            log_start_offsets[(log.topic, log.partition)] = log.log_start_offset
        write_checkpoint(self._fs, self._directory / RECOVERY_POINT_CHECKPOINT, recovery_points)
        write_checkpoint(self._fs, self._directory / LOG_START_OFFSET_CHECKPOINT, log_start_offsets)

    # --- topics ------------------------------------------------------------------------------------

    def reconfigure(self, config: BrokerConfig) -> None:
        """New broker defaults (dynamic broker configs): every partition's log config follows."""
        self._config = config
        for topic in self._topics.values():
            log_config = self.log_config(topic.config)
            for log in topic.partitions:
                log.config = log_config

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

    def topic_by_id(self, topic_id: uuid.UUID) -> Topic | None:
        return next((topic for topic in self._topics.values() if topic.topic_id == topic_id), None)

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        entry = self._topics.get(topic)
        if entry is None or not 0 <= partition < len(entry.partitions):
            return None
        return entry.partitions[partition]

    def logs(self) -> Iterator[PartitionLog]:
        for topic in list(self._topics.values()):
            yield from topic.partitions

    @property
    def partition_count(self) -> int:
        return sum(len(topic.partitions) for topic in self._topics.values())

    def colliding_topic(self, name: str) -> str | None:
        """An existing topic whose name collides with `name` ('.' vs '_', Kafka's `Topic.hasCollision`)."""
        key = collision_key(name)
        for existing in self._topics:
            if existing != name and collision_key(existing) == key:
                return existing
        return None

    def create_topic(self, name: str, partitions: int, config: TopicConfig, now_ms: int) -> Topic:
        """Create the topic's directories and persist its metadata; the caller validated the inputs.
        Raises KafkaError(KAFKA_STORAGE_ERROR) if the disk refuses; nothing is created then."""
        assert name not in self._topics and topic_name_problem(name) is None and partitions >= 1
        topic = Topic(name, uuid.uuid4(), [], config)
        self._topics[name] = topic
        try:
            self._add_partitions(topic, partitions, now_ms)
        except KafkaError:
            self._topics.pop(name, None)
            raise
        logger.info("created topic=%s partitions=%d configs=%s", name, partitions, dict(config.overrides))
        return topic

    def create_partitions(self, name: str, total: int, now_ms: int) -> Topic:
        """Grow the topic to `total` partitions (CreatePartitions); the caller validated the count. Raises
        KafkaError(KAFKA_STORAGE_ERROR) if the disk refuses; the topic keeps its old partitions then."""
        topic = self._topics[name]
        assert total > len(topic.partitions)
        self._add_partitions(topic, total, now_ms)
        logger.info("topic=%s now has %d partitions", name, total)
        return topic

    def alter_topic_config(self, name: str, config: TopicConfig) -> Topic:
        """Replace the topic's overrides (AlterConfigs): durable in topics.json first, then applied to its
        partitions (segment size, retention, ...). Raises KafkaError(KAFKA_STORAGE_ERROR) if the disk
        refuses; the old config stays then."""
        topic = self._topics[name]
        before, topic.config = topic.config, config
        try:
            self._write_topics_file()
        except OSError as error:
            topic.config = before
            raise KafkaError(ErrorCode.kafka_storage_error,
                             f"cannot change the configs of {name}: {error.strerror or error}") from error
        log_config = self.log_config(config)
        for log in topic.partitions:
            log.config = log_config
        logger.info("topic=%s configs=%s", name, dict(config.overrides))
        return topic

    def _add_partitions(self, topic: Topic, total: int, now_ms: int) -> None:
        """Open empty logs up to `total` partitions, then record the count in topics.json; on failure the
        new logs are removed and the topic is as it was."""
        log_config = self.log_config(topic.config)
        before = len(topic.partitions)
        try:
            for index in range(before, total):
                directory = self._directory / f"{topic.name}-{index}"
                if self._fs.exists(directory):  # leftovers of a crash between mkdir and the metadata write
                    self._fs.remove_tree(directory)
                topic.partitions.append(
                    PartitionLog.open(directory, topic.name, index, log_config, self.data_dir, recovery_point=0,
                                      log_start_offset=0, clean_shutdown=True, now_ms=now_ms)
                )
            # The checkpoints first: one of a deleted topic of the same name must not be applied to these
            # partitions after a crash (its log start offset would hide their first records).
            self.write_checkpoints()
            self._write_topics_file()
        except (OSError, RollbackFailed) as error:
            added, topic.partitions[before:] = topic.partitions[before:], []
            for log in added:
                with contextlib.suppress(OSError):  # not in topics.json: a later create of it removes it
                    log.delete()
            reason = error.strerror if isinstance(error, OSError) else error
            raise KafkaError(ErrorCode.kafka_storage_error,
                             f"cannot create partitions of {topic.name}: {reason}") from error

    def delete_topic(self, name: str) -> None:
        """Forget the topic durably (topics.json), then remove its files. Raises KafkaError if the
        metadata cannot be written (the topic then stays)."""
        topic = self._topics.pop(name)
        try:
            self._write_topics_file()
        except OSError as error:
            self._topics[name] = topic
            raise KafkaError(ErrorCode.kafka_storage_error, f"cannot delete topic {name}: {error.strerror}") from error
        try:  # forget its checkpoint entries too (a new topic of this name writes them again anyway)
            self.write_checkpoints()
        except OSError as error:
            logger.warning("topic=%s deleted; checkpoints not rewritten yet: %s", name, error)
        for log in topic.partitions:
            log.close()
            directory = self._directory / log.name
            doomed = self._directory / deleted_directory_name(log.topic, log.partition)
            try:
                self._fs.rename(directory, doomed)
                self._fs.remove_tree(doomed)
            except OSError as error:
                logger.warning("partition=%s files not removed yet (removed at the next start): %s", log.name, error)
        logger.info("deleted topic=%s", name)

    # --- background jobs ---------------------------------------------------------------------------

    def expire_producers(self, now_ms: int, expiration_ms: int) -> int:
        """Forget producers idle for `producer.id.expiration.ms` (Kafka's `removeExpiredProducers`)."""
        return sum(log.producer_state.remove_expired(now_ms, expiration_ms) for log in self.logs())

    def apply_retention(self, now_ms: int) -> int:
        """Time and size retention, for topics whose cleanup.policy includes `delete` (Kafka never
        deletes segments of a compact-only topic by age). A failing partition goes offline alone."""
        deleted = 0
        for topic in self.topics():
            if "delete" in topic.config.value("cleanup.policy", self._config).split(","):
                for log in topic.partitions:
                    deleted += log.apply_retention(now_ms)
        return deleted

    def compact(self, now_ms: int) -> int:
        """A cleaner pass over compacted topics' partitions that rolled a segment since their last pass.
        Each partition on its own: one that cannot be cleaned is skipped from then on, one whose files
        fail goes offline, and the others are cleaned regardless."""
        rewritten = 0
        for topic in self.topics():
            if "compact" not in topic.config.value("cleanup.policy", self._config).split(","):
                continue
            delete_retention_ms = topic.config.int_value("delete.retention.ms", self._config)
            for log in topic.partitions:
                active_base = log.segments[-1].base_offset
                if log.offline or log.name in self.uncleanable or active_base <= self._cleaned_through.get(log.name, 0):
                    continue
                rewritten += self._clean_one(log, now_ms, delete_retention_ms)
                self._cleaned_through[log.name] = active_base
        return rewritten

    def _clean_one(self, log: PartitionLog, now_ms: int, delete_retention_ms: int) -> int:
        try:
            return clean(log, now_ms, delete_retention_ms).segments_rewritten
        except Uncleanable as error:
            self.uncleanable[log.name] = str(error)
            logger.error("partition=%s marked uncleanable, compaction skips it from now on: %s", log.name,
                         safe(error))
        except KafkaError as error:  # a swap that failed after the rename took the partition offline
            logger.error("partition=%s compaction failed: %s", log.name, error)
        except OSError as error:
            log.go_offline(f"compaction could not read or write its files: {error}")
        except Exception:
            if _job_errors.allow(("compact", log.name)) is not None:
                logger.exception("partition=%s compaction failed unexpectedly; it is retried later", log.name)
        return 0

    # --- metadata file -------------------------------------------------------------------------------

    def _read_topics_file(self) -> dict[str, dict[str, Any]]:
        path = self._directory / TOPICS_FILE
        if not self._fs.exists(path):
            return {}
        problem = "it does not hold a JSON object of topics"
        try:
            data = json.loads(self._fs.read_bytes(path))
            if isinstance(data, dict) and all(
                isinstance(entry, dict) and int(entry["partitions"]) >= 0 and uuid.UUID(str(entry["id"]))
                for entry in data.values()
            ):
                return data
        except OSError as error:
            problem = f"it cannot be read: {error.strerror or error}"
        except (ValueError, KeyError, TypeError) as error:
            problem = f"it is not valid: {error}"
        raise DataDirError(f"{path} is corrupt ({problem}). Restore it from a backup, or move the data directory "
                           "away to start empty")

    def _write_topics_file(self) -> None:
        data = {
            topic.name: {
                "id": str(topic.topic_id),
                "partitions": len(topic.partitions),
                "configs": dict(topic.config.overrides),
            }
            for topic in self._topics.values()
        }
        write_atomically(self._fs, self._directory / TOPICS_FILE, json.dumps(data, indent=1, sort_keys=True).encode())

    def _remove_stray_deleted_directories(self) -> None:
        for name in self._fs.list_dir(self._directory):
            entry = self._directory / name
            if name.endswith("-delete") and self._fs.is_dir(entry):
                self._fs.remove_tree(entry)
