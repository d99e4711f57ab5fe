"""Key 46, answered as a single-replica Kafka cluster would (partition_leadership.py)."""

from __future__ import annotations

from typing import Any

from .base import RequestContext
from .partition_leadership import list_reassignments

API_KEY = 46
VERSIONS = (0,0)


def handle(context: RequestContext, request: Any) -> Any:
    return list_reassignments(context, request, API_KEY)
