"""Offset checkpoint files: Kafka's text format, atomic replacement, tolerant reading."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from oncelog.fs import OS_FILE_SYSTEM
from oncelog.log.checkpoint import read_checkpoint, write_checkpoint


def test_round_trip_in_kafka_format(tmp_path: Path) -> None:
    path = tmp_path / "recovery-point-offset-checkpoint"
    entries = {("orders", 1): 1320, ("orders", 0): 1500, ("__consumer_offsets", 7): 0}
    write_checkpoint(OS_FILE_SYSTEM, path, entries)
    assert path.read_text() == "0\n3\n__consumer_offsets 7 0\norders 0 1500\norders 1 1320\n"
    assert read_checkpoint(OS_FILE_SYSTEM, path) == entries


def test_empty_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "log-start-offset-checkpoint"
    write_checkpoint(OS_FILE_SYSTEM, path, {})
    assert path.read_text() == "0\n0\n"
    assert read_checkpoint(OS_FILE_SYSTEM, path) == {}


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert read_checkpoint(OS_FILE_SYSTEM, tmp_path / "absent") == {}


def test_rewrite_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "recovery-point-offset-checkpoint"
    write_checkpoint(OS_FILE_SYSTEM, path, {("orders", 0): 1})
    write_checkpoint(OS_FILE_SYSTEM, path, {("orders", 0): 2, ("orders", 1): 3})
    assert read_checkpoint(OS_FILE_SYSTEM, path) == {("orders", 0): 2, ("orders", 1): 3}
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["recovery-point-offset-checkpoint"]


def test_stale_temporary_file_does_not_matter(tmp_path: Path) -> None:
    path = tmp_path / "recovery-point-offset-checkpoint"
    write_checkpoint(OS_FILE_SYSTEM, path, {("orders", 0): 5})
    (tmp_path / "recovery-point-offset-checkpoint.tmp").write_text("half a")  # a crash mid-write
    assert read_checkpoint(OS_FILE_SYSTEM, path) == {("orders", 0): 5}
    write_checkpoint(OS_FILE_SYSTEM, path, {("orders", 0): 6})
    assert read_checkpoint(OS_FILE_SYSTEM, path) == {("orders", 0): 6}
    assert not (tmp_path / "recovery-point-offset-checkpoint.tmp").exists()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0\n",
        "1\n0\n",
        "0\n2\norders 0 5\n",
        "0\n1\norders 0\n",
        "0\n1\norders zero 5\n",
        "x\n0\n",
    ],
)
def test_malformed_file_is_reported_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    caplog.set_level(logging.WARNING, logger="oncelog.log.checkpoint")
    path = tmp_path / "recovery-point-offset-checkpoint"
    path.write_text(text)
    assert read_checkpoint(OS_FILE_SYSTEM, path) == {}
    assert any("malformed" in record.getMessage() for record in caplog.records)
