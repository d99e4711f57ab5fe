"""Helpers shared by the tests."""

from __future__ import annotations

from oncelog.client import KafkaClient


def create_topic(bootstrap: str, name: str, partitions: int = 1, configs: dict[str, str] | None = None) -> None:
    """Create a topic through our own small client (CreateTopics v5) and check it worked."""
    with KafkaClient(bootstrap) as client:
        response = client.request(19, 5, {"topics": [{
            "name": name, "num_partitions": partitions, "replication_factor": 1, "assignments": [],
            "configs": [{"name": k, "value": v} for k, v in (configs or {}).items()]}],
            "timeout": 10_000, "validate_only": False})
    assert response.topics[0].error_code == 0, response
