"""How `oncelog serve` logs: text or JSON lines, and per-request logging switched on and off at runtime.

`--log-format json` writes one JSON object per line (`ts` in ISO 8601 UTC, `level`, `logger`,
`message`, and `exception` with the traceback when there is one) for log shippers; text is the default.
SIGUSR1 toggles per-request logging (every request's API, version, correlation id and client id, at
DEBUG on the connection logger) without a restart, the way one raises `kafka.request.logger` to DEBUG
on a live Kafka broker; a second SIGUSR1 turns it off again.
"""

from __future__ import annotations

import datetime
import json
import logging

REQUEST_LOGGER = "oncelog.server.connection"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def toggle_request_logging() -> bool:
    """Switch per-request logging; True if it is now on."""
    request_logger = logging.getLogger(REQUEST_LOGGER)
    turning_on = not request_logger.isEnabledFor(logging.DEBUG)
    request_logger.setLevel(logging.DEBUG if turning_on else logging.NOTSET)
    # The line itself goes out at WARNING so it shows whatever --log-level is.
    logging.getLogger("oncelog").warning("per-request logging %s (SIGUSR1 toggles it)", "on" if turning_on else "off")
    return turning_on
