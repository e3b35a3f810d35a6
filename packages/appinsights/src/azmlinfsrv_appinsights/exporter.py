"""The bounded queue and the background thread that batches, sends and retries telemetry.

The request path only ever calls :meth:`BackgroundExporter.submit`, a non-blocking put: when the queue is full the
item is dropped and counted, so an ingestion endpoint that is down or hanging costs requests nothing but that counter
(docs/guarantees.md#r20). Everything slow (building envelopes, JSON, HTTP, retries with back-off) happens on one daemon
thread. Drops are reported on ``azmlinfsrv.trace`` at most once per ``drop_report_interval``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from typing import Generic
from typing import TypeVar

from .transport import SendResult

__all__ = ["BackgroundExporter", "ExportStats", "ExporterOptions"]

logger = logging.getLogger("azmlinfsrv.trace")

T = TypeVar("T")


@dataclass(frozen=True)
class ExporterOptions:
    # 2048 snapshots of at most ~16 KiB each (two 8 KiB properties) bound the queue to ~32 MiB in the worst case;
    # typical items are under 1 KiB.
    capacity: int = 2048
    # compat: upstream batches every 5 s or every 100 records (docs/compatibility.md#telemetry-enablement).
    batch_size: int = 100
    interval: float = 5.0
    max_retries: int = 2
    retry_backoff: float = 1.0
    drop_report_interval: float = 60.0


@dataclass(frozen=True)
class ExportStats:
    submitted: int  # accepted into the queue
    sent: int  # accepted by the endpoint
    dropped_queue_full: int  # never queued: the queue was full
    dropped_send_failed: int  # queued, but every attempt to send failed (or the endpoint refused them)
    dropped_unbuildable: int  # queued, but turning them into envelopes failed
    dropped_closed: int  # submitted after close(), or still queued when close() gave up waiting
    failed_attempts: int  # POSTs that did not succeed (each batch may be retried)
    queued: int
    last_error: str | None

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.dropped_send_failed + self.dropped_unbuildable + self.dropped_closed


class _Wake:
    """Queued by flush() and close() so the thread stops waiting for a full batch."""


_WAKE = _Wake()


class BackgroundExporter(Generic[T]):
    """Batches items of type ``T`` on a daemon thread: ``build`` makes an envelope, ``send`` posts a batch."""

    def __init__(
        self,
        build: Callable[[T], dict[str, Any]],
        send: Callable[[list[dict[str, Any]]], SendResult],
        options: ExporterOptions | None = None,
        *,
        last_error: Callable[[], str | None] = lambda: None,
        name: str = "azmlinfsrv-appinsights",
    ) -> None:
        self.options = options or ExporterOptions()
        self._build = build
        self._send = send
        self._last_error = last_error
        self._name = name
        self._start()
        if hasattr(os, "register_at_fork"):
            # gunicorn's preload_app (WORKER_PRELOAD) builds the app, and so this exporter, in the master and then
            # forks: a child inherits the queue but not the thread, and possibly a lock the thread held. Each child
            # starts afresh. A weak reference, because fork hooks cannot be unregistered.
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _restart_in_child(ref))

    def _start(self) -> None:
        """Fresh queue, counters and thread: at construction and in a forked child."""
        self._queue: queue.Queue[T | _Wake] = queue.Queue(maxsize=self.options.capacity)
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._submitted = 0
        self._done = 0
        self._sent = 0
        self._dropped_full = 0
        self._dropped_failed = 0
        self._dropped_unbuildable = 0
        self._dropped_closed = 0
        self._failed_attempts = 0
        self._flush_target = 0
        self._reported_drops = 0
        self._last_report = 0.0
        self._closing = threading.Event()
        self._abandoned = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    # -- called from any thread ---------------------------------------------------------------------------------

    def submit(self, item: T) -> bool:
        """Queue ``item`` without blocking; False (and a counted drop) if the queue is full or closed."""
        if self._closing.is_set():
            with self._lock:
                self._dropped_closed += 1
            return False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self._dropped_full += 1
            return False
        with self._lock:
            self._submitted += 1
        return True

    def flush(self, timeout: float) -> bool:
        """Send everything submitted so far now; wait at most ``timeout`` s. True if all of it was handled."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._progress:
            target = self._submitted
            if self._done >= target:
                return True
            self._flush_target = max(self._flush_target, target)
        self._wake()
        with self._progress:
            while self._done < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._progress.wait(remaining)
        return True

    def close(self, timeout: float) -> bool:
        """Stop accepting items, send what is queued (no retries), wait at most ``timeout`` s for the thread.

        If the thread is still busy after ``timeout`` (a hanging endpoint), whatever is left is dropped once the
        current send returns, so a closed exporter does not keep calling the endpoint.
        """
        self._closing.set()
        self._wake()
        self._thread.join(max(0.0, timeout))
        if self._thread.is_alive():
            self._abandoned.set()
            return False
        return True

    def is_exporter_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def stats(self) -> ExportStats:
        with self._lock:
            return ExportStats(
                submitted=self._submitted,
                sent=self._sent,
                dropped_queue_full=self._dropped_full,
                dropped_send_failed=self._dropped_failed,
                dropped_unbuildable=self._dropped_unbuildable,
                dropped_closed=self._dropped_closed,
                failed_attempts=self._failed_attempts,
                queued=self._queue.qsize(),
                last_error=self._last_error(),
            )

    def _wake(self) -> None:
        try:
            self._queue.put_nowait(_WAKE)
        except queue.Full:
            pass  # the thread has plenty to read; it sees the flush target or the closing flag next time round

    # -- the exporter thread ------------------------------------------------------------------------------------

    def _urgent(self) -> bool:
        return self._closing.is_set() or self._flush_target > self._done

    def _next_batch(self) -> list[T]:
        batch: list[T] = []
        deadline = time.monotonic() + self.options.interval
        while len(batch) < self.options.batch_size:
            try:
                if self._urgent():
                    item = self._queue.get_nowait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if isinstance(item, _Wake):
                continue
            batch.append(item)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if self._abandoned.is_set():
                self._abandon(batch)
                break
            if batch:
                self._export(batch)
            self._report_drops(final=False)
            if self._closing.is_set() and self._queue.empty():
                break
        self._report_drops(final=True)
        with self._progress:
            self._progress.notify_all()

    def _abandon(self, batch: list[T]) -> None:
        dropped = len(batch)
        while True:
            try:
                if not isinstance(self._queue.get_nowait(), _Wake):
                    dropped += 1
            except queue.Empty:
                break
        with self._progress:
            self._dropped_closed += dropped
            self._done += dropped
            self._progress.notify_all()

    def _export(self, batch: list[T]) -> None:
        envelopes: list[dict[str, Any]] = []
        unbuildable = 0
        for item in batch:
            try:
                envelopes.append(self._build(item))
            except Exception:
                unbuildable += 1
        sent = failed = attempts_failed = 0
        attempt = 0
        while envelopes:
            result = self._send(envelopes)
            if result is SendResult.SENT:
                sent = len(envelopes)
                break
            attempts_failed += 1
            retry = result is SendResult.RETRY and attempt < self.options.max_retries and not self._closing.is_set()
            # Back off on a stop-aware wait, so close() is never held up by a pending retry.
            if not retry or self._closing.wait(self.options.retry_backoff * (2**attempt)):
                failed = len(envelopes)
                break
            attempt += 1
        with self._progress:
            self._sent += sent
            self._dropped_failed += failed
            self._dropped_unbuildable += unbuildable
            self._failed_attempts += attempts_failed
            self._done += len(batch)
            self._progress.notify_all()

    def _report_drops(self, final: bool) -> None:
        now = time.monotonic()
        with self._lock:
            total = self._dropped_full + self._dropped_failed + self._dropped_unbuildable
            new = total - self._reported_drops
            if new <= 0:
                return
            if not final and self._last_report and now - self._last_report < self.options.drop_report_interval:
                return
            full, failed, unbuildable = self._dropped_full, self._dropped_failed, self._dropped_unbuildable
            self._reported_drops = total
            self._last_report = now
        # Logged from this thread, which the log handler ignores: a report about failing export is not re-exported.
        logger.warning(
            "Application Insights: %s telemetry items dropped (in total: %s because the queue was full, "
            "%s because sending failed, %s that could not be encoded). Last error: %s",
            new,
            full,
            failed,
            unbuildable,
            self._last_error() or "none",
        )


def _restart_in_child(ref: weakref.ref[BackgroundExporter[Any]]) -> None:
    exporter = ref()
    if exporter is not None and not exporter.closed:
        exporter._start()
