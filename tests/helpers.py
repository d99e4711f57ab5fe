"""Helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oncelog.client import KafkaClient
from oncelog.fs import OS_FILE_SYSTEM, DataDir, OpenFiles
from oncelog.log.partition import PartitionLog


def create_topic_result(bootstrap: str, name: str, partitions: int = 1,
                        configs: dict[str, str] | None = None) -> Any:
    """CreateTopics v5 through our own small client: the topic's result (error code and message)."""
    with KafkaClient(bootstrap) as client:
        response = client.request(19, 5, {"topics": [{
            "name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [],
            "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()]}],
            "timeout": 10_000, "validate_only": False})
    return response.topics[0]


def create_topic(bootstrap: str, name: str, partitions: int = 1, configs: dict[str, str] | None = None) -> None:
    """Create a topic and check it worked."""
    result = create_topic_result(bootstrap, name, partitions, configs)
    assert result.error_code == 0, result


def local_data_dir(path: Path) -> DataDir:
    """The real file system with a generous open-file budget, for tests of the log layer."""
    return DataDir(path, OS_FILE_SYSTEM, OpenFiles(1000))


def make_durable(log: PartitionLog) -> None:
    """fsync everything the log holds and move its recovery point (the high watermark), as one flusher
    round does."""
    end_offset, segments = log.flush_snapshot()
    for segment in segments:
        segment.fsync()
    log.mark_flushed(end_offset)
