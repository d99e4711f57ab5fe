"""Shared fixtures. `oncelog_broker` (an embedded broker per test, oncelog's pytest plugin) is overridden
here to run on either backend: `--storage postgresql` (or ONCELOG_TEST_STORAGE=postgresql) puts every
test that uses it on a fresh PostgreSQL database; `.ci/run` runs the integration suite both ways."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from oncelog.testing import embedded_broker


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--storage", choices=("local", "postgresql"),
                     default=os.environ.get("ONCELOG_TEST_STORAGE", "local"),
                     help="backend of the oncelog_broker fixture (default: local files)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With `--storage postgresql`, run only the tests whose broker that changes (those using
    `oncelog_broker`, or marked `both_storages` and choosing their backend from `--storage` themselves); the
    rest would only run again as they did on local files."""
    if config.getoption("--storage") != "postgresql":
        return
    keep = [item for item in items if "oncelog_broker" in getattr(item, "fixturenames", ())
            or item.get_closest_marker("both_storages") is not None]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture
def oncelog_broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh broker on a free port; yields "127.0.0.1:PORT". Its data is in a temp dir, or in a fresh
    PostgreSQL database with `--storage postgresql`."""
    if request.config.getoption("--storage") == "postgresql":
        url = request.getfixturevalue("database_url")
        with embedded_broker(storage=url) as bootstrap:
            yield bootstrap
    else:
        with embedded_broker() as bootstrap:
            yield bootstrap


@pytest.fixture
def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for the whole session (skips, saying why, where the binaries are missing)."""
    from tests.postgres import postgres_server, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """A fresh, empty database on the session's server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + "/" + name
