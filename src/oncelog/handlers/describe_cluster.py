"""DescribeCluster (key 60), versions 0–1: this node as the only broker and the controller."""

from __future__ import annotations

from typing import Any

from oncelog.errors import ErrorCode
from oncelog.protocol.codec import build_response
from oncelog.security.acl import ResourceType

from .base import RequestContext

API_KEY = 60
VERSIONS = (0, 1)


def handle(context: RequestContext, request: Any) -> Any:
    broker = context.broker
    return build_response(API_KEY, context.api_version, {
        "throttle_time": 0,
        "error_code": ErrorCode.none,
        "error_message": None,
        "cluster_id": broker.cluster_id,
        "controller_id": broker.cluster.controller(),
        "brokers": [{"broker_id": node_id, "host": host, "port": port}
                    for node_id, host, port in broker.live_brokers(context.listener)],
        "cluster_authorized_operations": context.authorized_operations(
            bool(request.include_cluster_authorized_operations), ResourceType.CLUSTER),
    })
