"""DescribeLogDirs (key 35), versions 1–4: where partitions live and how big they are
(`kafka-log-dirs.sh --describe`).

One log directory: the data directory on local storage (with the file system's total and usable
bytes from v4), or the database on PostgreSQL storage (named `postgresql://HOST/DB`, without
credentials; total and usable bytes -1: the database decides). DESCRIBE on the cluster, else the
answer's error is CLUSTER_AUTHORIZATION_FAILED with no directories, as Kafka's. `topics` null means
every partition; an unknown one is left out, as Kafka leaves out what it does not host. Offset lag and
future replicas do not exist on one copy: 0 and false.
"""

from __future__ import annotations

import shutil
from typing import Any
from urllib.parse import urlsplit

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import Operation, ResourceType
from oncelog.storage.api import PartitionKey

from .base import AwaitCompletion, RequestContext

API_KEY = 35
VERSIONS = (1, 4)


def _log_dir(context: RequestContext) -> tuple[str, int, int]:
    config = context.broker.config
    if context.broker.shared is not None:
        parts = urlsplit(config.storage)  # the database, not who logs in nor how
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}", -1, -1
    try:
        usage = shutil.disk_usage(config.data_dir)
    except OSError:
        return str(config.data_dir.resolve()), -1, -1
    return str(config.data_dir.resolve()), usage.total, usage.free


def handle(context: RequestContext, request: Any) -> Any:
    if not context.allowed(Operation.DESCRIBE, ResourceType.CLUSTER):
        return build_response(API_KEY, context.api_version, error_response(request,
                                                                           ErrorCode.cluster_authorization_failed))
    storage = context.broker.storage
    if request.topics is None:
        keys: list[PartitionKey] = [(info.name, index) for info in storage.topics() for index in range(info.partitions)]
    else:
        keys = list(dict.fromkeys((topic.topic, int(index)) for topic in request.topics for index in topic.partitions))
    log_dir, total_bytes, usable_bytes = _log_dir(context)

    def respond(sizes: list[int]) -> Any:
        by_topic: dict[str, list[dict[str, Any]]] = {}
        for (topic, partition), size in zip(keys, sizes, strict=True):
            if size >= 0:
                by_topic.setdefault(topic, []).append({"partition_index": partition, "partition_size": size,
                                                       "offset_lag": 0, "is_future_key": False})
        return build_response(API_KEY, context.api_version, {
            "throttle_time": 0, "error_code": ErrorCode.none, "results": [{
                "error_code": ErrorCode.none, "log_dir": log_dir, "total_bytes": total_bytes,
                "usable_bytes": usable_bytes,
                "topics": [{"name": name, "partitions": found} for name, found in sorted(by_topic.items())]}]})

    sizing = storage.partition_sizes(keys)
    return respond(sizing.value()) if sizing.done else AwaitCompletion(sizing, respond)


def error_response(request: Any, code: ErrorCode) -> dict[str, Any]:
    return {"throttle_time": 0, "error_code": code, "results": []}
