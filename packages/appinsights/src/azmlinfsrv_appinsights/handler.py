"""The logging handler that exports the server's log records (and redirected ``print()`` output) as traces.

It is attached to the ``azmlinfsrv`` logger, so every child that propagates (``azmlinfsrv.print``,
``azmlinfsrv.user_script``, ``azmlinfsrv.trace``, ...) is covered. ``emit`` takes a snapshot and queues it without
blocking; records logged by the exporter's own thread are skipped so that a report about failing export cannot feed
back into the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .items import TraceItem
from .items import trace_item

__all__ = ["TelemetryLogHandler"]


class TelemetryLogHandler(logging.Handler):
    def __init__(
        self,
        submit: Callable[[TraceItem], bool],
        is_exporter_thread: Callable[[], bool],
        level: int = logging.INFO,
    ) -> None:
        super().__init__(level)
        self._submit = submit
        self._is_exporter_thread = is_exporter_thread

    def emit(self, record: logging.LogRecord) -> None:
        if self._is_exporter_thread():
            return
        try:
            item = trace_item(record)
        except Exception:
            # Never raise into the application's logging call, and never print the record (it may hold user data).
            return
        self._submit(item)
