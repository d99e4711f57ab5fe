"""Logging helpers for what clients control: escaping their strings and rate-limiting their noise.

Two rules keep one client from forging or flooding the broker's log:

- `safe(text)` escapes every client-supplied string before it reaches a log line (ids, client ids,
  topic names in error paths, exception messages that quote input): control characters, newlines and
  non-printable characters become backslash escapes, and anything over `SAFE_CHARS_MAX` is cut. A
  transactional id of "x\\nERROR forged" then shows as one line `x\\nERROR forged`.
- `RateLimited.allow(key)` lets one message per key through per interval and counts the rest, so a
  peer that sends the same bad request in a loop costs one log line per interval, not one per request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

SAFE_CHARS_MAX = 256
RATE_LIMIT_KEYS_MAX = 4096
"""Keys remembered by one limiter; the oldest are forgotten first (a limiter must not grow forever)."""


def safe(text: object) -> str:
    """`text` as one printable line: control and non-printable characters escaped, length capped."""
    value = str(text)
    if value.isprintable() and len(value) <= SAFE_CHARS_MAX:
        return value
    escaped = value[: SAFE_CHARS_MAX + 1].encode("unicode_escape").decode("ascii")
    # unicode_escape leaves printable non-ASCII escaped too, which is fine for a log line.
    if len(value) > SAFE_CHARS_MAX:
        escaped = escaped[: SAFE_CHARS_MAX * 4] + f"...({len(value)} chars)"
    return escaped


class RateLimited:
    """At most one `allow(key) -> True` per `interval_s` for each key; `suppressed(key)` counts the rest."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: OrderedDict[object, tuple[float, int]] = OrderedDict()

    def allow(self, key: object) -> int | None:
        """None if this occurrence should stay quiet; else how many were suppressed since the last one."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self._interval_s:
            self._last[key] = (last[0], last[1] + 1)
            return None
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        while len(self._last) > RATE_LIMIT_KEYS_MAX:
            self._last.popitem(last=False)
        return last[1] if last is not None else 0
