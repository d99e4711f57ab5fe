"""Key 45, answered as a single-replica Kafka cluster would (partition_leadership.py)."""

from __future__ import annotations

from typing import Any

from .base import RequestContext
from .partition_leadership import alter_reassignments

API_KEY = 45
VERSIONS = (0,0)


def handle(context: RequestContext, request: Any) -> Any:
    return alter_reassignments(context, request, API_KEY)
