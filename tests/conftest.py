"""Shared fixtures. `oncelog_broker` (an embedded broker per test) comes from oncelog's pytest plugin."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"
