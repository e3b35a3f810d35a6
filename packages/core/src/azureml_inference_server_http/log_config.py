"""Log format and filters; user logging.json files reference these classes by their dotted names.

compat: upstream 1.5.1 exposes ``azureml_inference_server_http.log_config.AMLLogFormatter`` and
``RootAccessFilter``; users' logging.json files name them, so the import path never moves.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import time
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname).1s [%(process)d] %(name)s - %(message)s"
PACKAGED_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "logging.json")


class AMLLogFormatter(logging.Formatter):
    """The server's format with timestamps in UTC (docs/compatibility.md#log-format)."""

    converter = time.gmtime  # type: ignore[assignment]

    def __init__(self, fmt: str | None = LOG_FORMAT, datefmt: str | None = None, style: Any = "%") -> None:
        super().__init__(fmt=fmt, datefmt=datefmt, style=style)
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        if datefmt:
            return super().formatTime(record, datefmt)
        # One log line per request: format the date and time once per second, not once per line.
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"


class RootAccessFilter(logging.Filter):
    """Hides access-log records of health probes so that probes do not flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "GET / HTTP/1.1" not in record.getMessage()


def apply_config_file(path: str) -> None:
    """Apply a ``dictConfig`` JSON file; errors propagate to the caller."""
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    logging.config.dictConfig(config)


def apply_packaged_config() -> None:
    apply_config_file(PACKAGED_CONFIG)
