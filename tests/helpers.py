"""Helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

from oncelog.client import KafkaClient
from oncelog.fs import OS_FILE_SYSTEM, DataDir, OpenFiles


def create_topic(bootstrap: str, name: str, partitions: int = 1, configs: dict[str, str] | None = None) -> None:
    """Create a topic through our own small client (CreateTopics v5) and check it worked."""
    with KafkaClient(bootstrap) as client:
        response = client.request(19, 5, {"topics": [{
            "name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [],
            "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()]}],
            "timeout": 10_000, "validate_only": False})
    assert response.topics[0].error_code == 0, response


def local_data_dir(path: Path) -> DataDir:
    """The real file system with a generous open-file budget, for tests of the log layer."""
    return DataDir(path, OS_FILE_SYSTEM, OpenFiles(1000))
