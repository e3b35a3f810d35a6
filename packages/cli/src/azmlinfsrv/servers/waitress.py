"""Serving with waitress (the Windows default; selectable anywhere with ``--server waitress``).

One process with a thread pool. Upstream's waitress path had no scoring timeout and dropped in-flight requests
on shutdown (RELIABILITY.md W9); here the timeout comes from the core's ScoringRunner as on gunicorn, and SIGTERM
drains: readiness turns 503, the listening sockets close, in-flight requests finish (up to the graceful timeout),
then the process exits 0.
"""

from __future__ import annotations

import _thread
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

import waitress
from waitress.server import BaseWSGIServer

from .. import worker
from ..launch import LaunchSettings

logger = logging.getLogger("azmlinfsrv")

SPARE_THREADS = 4


class _InFlight:
    """A WSGI middleware counting requests whose response has not been fully produced yet."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            self.count += 1
        try:
            result = self.app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return _Closing(result, self._done)

    def _done(self) -> None:
        with self._lock:
            self.count -= 1


class _Closing:
    def __init__(self, iterable: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self.iterable = iterable
        self.on_close = on_close

    def __iter__(self) -> Any:
        return iter(self.iterable)

    def close(self) -> None:
        try:
            close = getattr(self.iterable, "close", None)
            if close is not None:
                close()
        finally:
            self.on_close()


def serve(settings: LaunchSettings) -> int:
    app = worker.build_app(background_init=True, debug_listen_port=settings.debug_port)
    counted = _InFlight(app)
    threads = settings.workers * settings.threads + SPARE_THREADS
    listen = [f"{settings.host}:{settings.port}"]
    if settings.health_port is not None and settings.health_port != settings.port:
        listen.insert(0, f"{settings.host}:{settings.health_port}")
    try:
        server = waitress.create_server(
            counted,
            listen=" ".join(listen),
            threads=threads,
            ident="azmlinfsrv",
            # Slow or idle clients are cut instead of holding a channel forever (RELIABILITY.md W7).
            channel_timeout=60,
            clear_untrusted_proxy_headers=True,
        )
    except OSError as exc:
        logger.error("Cannot listen on %s: %s", ", ".join(listen), exc)
        return 1
    for line in listen:
        logger.info("Listening at: http://%s (waitress, %d threads)", line, threads)

    stopping = threading.Event()

    def drain_then_exit() -> None:
        deadline = time.monotonic() + settings.graceful_timeout
        while counted.count > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Let the event loop write out what the last responses left in their buffers.
        channels = getattr(server, "active_channels", {})
        while time.monotonic() < deadline and any(getattr(ch, "total_outbufs_len", 0) for ch in channels.values()):
            time.sleep(0.02)
        # Wakes the event loop in the main thread with KeyboardInterrupt, which waitress handles by shutting down.
        _thread.interrupt_main()

    def on_sigterm(signum: int, frame: Any) -> None:
        if stopping.is_set():
            return
        stopping.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        logger.info("Received signal %s: draining %d in-flight request(s)", signum, counted.count)
        state = getattr(app, "extensions", {}).get("azmlinfsrv.state")
        if state is not None:
            state.start_draining()
        for dispatcher in list(server.map.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.accepting = False
                dispatcher.close()
        threading.Thread(target=drain_then_exit, name="azmlinfsrv-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    if sys.platform != "win32":
        signal.signal(signal.SIGINT, on_sigterm)
    server.run()
    logger.info("Shutting down: waitress")
    return 0
