"""Key 43, answered as a single-replica Kafka cluster would (partition_leadership.py)."""

from __future__ import annotations

from typing import Any

from .base import RequestContext
from .partition_leadership import elect_leaders

API_KEY = 43
VERSIONS = (0,2)


def handle(context: RequestContext, request: Any) -> Any:
    return elect_leaders(context, request, API_KEY)
