"""pytest plugin (entry point `pytest11`): the `oncelog_broker` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oncelog.testing import embedded_broker


@pytest.fixture
def oncelog_broker() -> Iterator[str]:
    """A fresh broker on a free port with its data in a temp dir; yields "127.0.0.1:PORT"."""
    with embedded_broker() as bootstrap:
        yield bootstrap
