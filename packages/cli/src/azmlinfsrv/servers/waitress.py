"""Serving with waitress (the Windows default; selectable anywhere with ``--server waitress``).

One process with a thread pool. Upstream's waitress path had no scoring timeout and dropped in-flight requests
on shutdown (docs/guarantees.md#w9); here the timeout comes from the core's ScoringRunner as on gunicorn, and SIGTERM
drains: readiness turns 503, the listening sockets close, in-flight requests finish (up to the graceful timeout),
then the process exits 0.

This process is the child of a supervisor (``supervisor.py``), which starts it as ``python -m
azmlinfsrv.servers.waitress``, hands it the listening sockets, and starts a new one if it crashes after booting.
"""

from __future__ import annotations

import _thread
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

import waitress
from azureml_inference_server_http import constants as c
from azureml_inference_server_http.log_config import apply_packaged_config
from azureml_inference_server_http.server.main_thread import deferred_signals
from prometheus_client import multiprocess
from waitress import receiver as waitress_receiver
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.parser import ParsingError
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask

from .. import worker
from ..launch import LaunchSettings
from . import allocator
from .supervisor import Handoff
from .supervisor import format_addresses
from .supervisor import listen_addresses
from .supervisor import receive_handoff

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


def _refuse_ambiguous_framing(parser_class: Any) -> None:
    """Make waitress refuse requests whose body length is ambiguous (RFC 9112 §6.3), the way requests are smuggled.

    waitress decodes a chunked body and drops Transfer-Encoding, ignoring a Content-Length sent with it, and then
    answers the request hidden behind the chunked body too. Refused here with its own 400, which closes the
    connection.
    """
    original = parser_class.parse_header
    if getattr(original, "_azmlinfsrv", False):
        return

    def parse_header(self: Any, header_plus: bytes) -> None:
        if b"\r\n " in header_plus or b"\r\n\t" in header_plus:
            # waitress unfolds obsolete line folding; a proxy in front may not, and the gunicorn worker refuses it.
            raise ParsingError("Obsolete line folding in a header field")
        original(self, header_plus)
        if (self.chunked and "CONTENT_LENGTH" in self.headers) or (
            self.version == "1.0" and "TRANSFER_ENCODING" in self.headers
        ):
            raise ParsingError("Transfer-Encoding with Content-Length, or on HTTP/1.0, is ambiguous")

    parse_header._azmlinfsrv = True  # type: ignore[attr-defined]
    parser_class.parse_header = parse_header
    # waitress checks a chunk extension with re.match, so ";x\n" passes on its prefix and the bare LF hides the
    # start of another request; the whole extension must match.
    receiver_module: Any = waitress_receiver
    if not isinstance(receiver_module.CHUNK_EXT_RE, _WholeMatch):
        receiver_module.CHUNK_EXT_RE = _WholeMatch(receiver_module.CHUNK_EXT_RE)


class _WholeMatch:
    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern

    def match(self, data: bytes) -> re.Match[bytes] | None:
        return self.pattern.fullmatch(data)


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


class _JsonErrorTask(ErrorTask):  # type: ignore[misc]
    """waitress's own protocol errors (413, 400 for malformed requests) as JSON bodies like the app's errors."""

    def execute(self) -> None:
        error: Any = getattr(self.request, "error", None)
        self.status = f"{error.code} {error.reason}"
        headers: Any = self.response_headers
        headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        body = json.dumps({"message": f"{error.reason}: {error.body}"}).encode("utf-8")
        self.content_length = len(body)
        self.write(body)


def server_trigger(server: Any) -> Any:
    """The trigger that wakes waitress's event loop (each listening server has one)."""
    trigger = getattr(server, "trigger", None)
    if trigger is None:
        trigger = next(d.trigger for d in server.map.values() if isinstance(d, BaseWSGIServer))
    return trigger


def _body_limit() -> int:
    try:
        megabytes = int(os.environ.get(c.ENV_MAX_REQUEST_BODY_MB, c.DEFAULT_MAX_REQUEST_BODY_MB))
    except ValueError:
        megabytes = c.DEFAULT_MAX_REQUEST_BODY_MB
    # 0 disables our limit; waitress then keeps its own default of 1 GiB. waitress refuses bodies of max_body bytes
    # or more, and a body of exactly the limit is allowed, hence the + 1.
    return megabytes * 1024 * 1024 + 1 if megabytes > 0 else 1024**3


def serve(settings: LaunchSettings, handoff: Handoff | None = None) -> int:
    """Serve until stopped; the exit code. Listens on the handoff's sockets, or binds them itself (Windows)."""
    allocator.tune()  # before any thread starts (see allocator.py)
    # Class attribute on waitress's channel: this process serves only our app, so the change stays with us.
    HTTPChannel.error_task_class = _JsonErrorTask
    _refuse_ambiguous_framing(HTTPRequestParser)
    # compat: upstream's waitress path ran WORKER_COUNT run() calls at once (its threads); one process here does
    # the work of WORKER_COUNT gunicorn workers, so it gets their run() slots.
    os.environ[c.ENV_WORKER_THREADS] = str(settings.workers * settings.threads)
    # Boot failures exit with upstream's 3 directly: the supervisor passes a child's code on when it never booted.
    app = worker.build_app(background_init=True, debug_listen_port=settings.debug_port, in_launcher=True)
    counted = _InFlight(app)
    threads = settings.workers * settings.threads + SPARE_THREADS
    listen = format_addresses(listen_addresses(dataclasses.asdict(settings)))
    where: dict[str, Any] = (
        {"sockets": handoff.sockets} if handoff and handoff.sockets else {"listen": " ".join(listen)}
    )
    try:
        server: Any = waitress.create_server(  # type: ignore[attr-defined]
            counted,
            **where,
            threads=threads,
            ident="azmlinfsrv",
            # Slow or idle clients are cut instead of holding a channel forever (docs/guarantees.md#w7).
            channel_timeout=60,
            clear_untrusted_proxy_headers=True,
            # waitress buffers a whole body before the app sees it, so the limit has to be applied here.
            max_request_body_size=_body_limit(),
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
        listeners: list[Any] = [d for d in getattr(server, "map", {}).values() if isinstance(d, BaseWSGIServer)]
        listeners = listeners or [server]

        def stop_accepting() -> None:
            for listener in listeners:
                # Only the listening socket: BaseWSGIServer.close() would also close the trigger through which
                # worker threads wake the event loop to send their responses.
                listener.accepting = False
                wasyncore.dispatcher.close(listener)

        # Closed from inside the event loop: closing a socket select() is waiting on from a signal handler makes
        # the interrupted select() fail with EBADF.
        listeners[0].trigger.pull_trigger(stop_accepting)
        threading.Thread(target=drain_then_exit, name="azmlinfsrv-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    if sys.platform != "win32":
        signal.signal(signal.SIGINT, on_sigterm)
    # Handlers a score script installed while loading (in the init thread) are applied by the event loop's thread.
    deferred_signals.wake = lambda: server_trigger(server).pull_trigger(deferred_signals.apply)
    deferred_signals.apply()
    if handoff is not None:
        threading.Thread(
            target=_announce_when_ready, args=(app, handoff), name="azmlinfsrv-booted", daemon=True
        ).start()
    server.run()
    logger.info("Shutting down: waitress")
    return 0


def _announce_when_ready(app: Any, handoff: Handoff) -> None:
    """Once init() has succeeded, the supervisor treats this process's death as a crash, not a boot failure."""
    state = getattr(app, "extensions", {}).get("azmlinfsrv.state")
    if state is not None:
        state.ready.wait()
    # The supervisor stopped or died: drain as on SIGTERM (the handler runs in the main thread).
    handoff.announce_booted(on_supervisor_gone=lambda: signal.raise_signal(signal.SIGTERM))


def _forget_dead_workers(pids: list[int]) -> None:
    """Live gauges (requests in flight) of a crashed predecessor must stop counting (prometheus-client multiprocess)."""
    if not pids or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    for pid in pids:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _supervised_main() -> int:
    apply_packaged_config()
    handoff = receive_handoff()
    _forget_dead_workers(handoff.dead)
    return serve(LaunchSettings(**handoff.settings), handoff)


if __name__ == "__main__":
    sys.exit(_supervised_main())
