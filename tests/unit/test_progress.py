"""The CLI's progress line: redrawn in place on a terminal, plain and rare lines in logs."""

from __future__ import annotations

import io

from oncelog.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_redrawn_in_place() -> None:
    stream = _Terminal()
    progress = Progress("loading", 200, stream)
    progress.update(50, "partition 3")
    progress.update(100)
    progress.finish(200)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.count("\r\x1b[K") == 3
    assert "loading [#######-----------------------]  25% (50/200" in text and "partition 3" in text
    assert text.rstrip().split("\r\x1b[K")[-1].startswith("loading [##############################] 100% (200/200")


def test_a_log_gets_plain_lines_at_most_every_interval() -> None:
    stream = io.StringIO()
    progress = Progress("loading", 10, stream, quiet_interval_s=3600)
    for done in range(10):
        progress.update(done)
    progress.finish(10)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()
    assert "(0/10" in lines[0] and "100% (10/10" in lines[1]
