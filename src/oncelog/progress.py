"""A one-line progress bar for long CLI work (the demo's catch-up, loading, benchmarks).

On a terminal the line redraws itself in place (`\\r`); when standard error is not a terminal (CI
logs, pipes) it prints a plain line at most every `quiet_interval_s`, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None, quiet_interval_s: float = 10.0) -> None:
        self.label = label
        self.total = max(1, total)
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._quiet_interval_s = quiet_interval_s
        self._last_plain = 0.0
        self._started = time.monotonic()

    def line(self, done: int, detail: str = "") -> str:
        fraction = min(1.0, max(0, done) / self.total)
        filled = int(fraction * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        suffix = f"  {detail}" if detail else ""
        return (f"{self.label} [{bar}] {fraction * 100:3.0f}% ({done}/{self.total}, "
                f"{time.monotonic() - self._started:.0f} s){suffix}")

    def update(self, done: int, detail: str = "") -> None:
        if self._tty:
            self._stream.write("\r\x1b[K" + self.line(done, detail))
            self._stream.flush()
        elif time.monotonic() - self._last_plain >= self._quiet_interval_s:
            self._last_plain = time.monotonic()
            self._stream.write(self.line(done, detail) + "\n")
            self._stream.flush()

    def finish(self, done: int, detail: str = "") -> None:
        self._stream.write(("\r\x1b[K" if self._tty else "") + self.line(done, detail) + "\n")
        self._stream.flush()
