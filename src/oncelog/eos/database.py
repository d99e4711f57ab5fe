"""A thin layer over SQLite (default) and PostgreSQL (psycopg 3) for the sink.

`connect(url)` accepts `sqlite:///path/to.db` (or a bare path) and `postgresql://user@host/db`. SQL in
this package is written with `?` placeholders; `Database.execute` converts them for psycopg's `%s`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Database:
    connection: Any
    kind: str
    """"sqlite" or "postgresql"."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.kind == "postgresql":
            sql = sql.replace("?", "%s")
        cursor = self.connection.cursor()
        cursor.execute(sql, tuple(params))
        return cursor

    def commit(self) -> None:
        self.connection.commit()

    def rollback(self) -> None:
        self.connection.rollback()

    def close(self) -> None:
        self.connection.close()


def connect(url: str) -> Database:
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg
        except ImportError as error:
            raise RuntimeError("PostgreSQL needs psycopg: pip install 'oncelog[eos]'") from error
        return Database(psycopg.connect(url), "postgresql")
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    # isolation_level=None would autocommit; the default starts transactions implicitly before DML and
    # we commit explicitly. A generous busy timeout lets two sink processes share one file.
    connection = sqlite3.connect(path, timeout=60)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return Database(connection, "sqlite")
