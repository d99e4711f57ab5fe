"""IncrementalAlterConfigs (key 44), versions 0–1: SET / DELETE / APPEND / SUBTRACT on topic configs.
The behaviour is AlterConfigs' (alter_configs.py), with the changes applied to the current overrides."""

from __future__ import annotations

from typing import Any

from .alter_configs import INCREMENTAL_API_KEY, INCREMENTAL_VERSIONS, respond_to
from .alter_configs import error_response as error_response
from .base import RequestContext

API_KEY = INCREMENTAL_API_KEY
VERSIONS = INCREMENTAL_VERSIONS


def handle(context: RequestContext, request: Any) -> Any:
    return respond_to(context, request, API_KEY, incremental=True)
