"""The machinery the fake telemetry endpoints share: a threaded HTTP server on 127.0.0.1 with outage modes.

:class:`FakeEndpoint` listens, switches between the ``"ok"``, ``"error"``, ``"hang"`` and ``"refuse"`` modes (and any
a subclass adds) while running, holds hung requests until released, counts POSTs and their headers, and keeps what was
accepted for :meth:`FakeEndpoint.wait_for`. A subclass names its modes and request paths, and turns a POST into a
reply (decoding and recording the body in ``"ok"`` mode); see :mod:`.collector` and :mod:`.otlp`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any
from typing import ClassVar
from typing import Generic
from typing import TypeVar

from .process import free_port

OK = "ok"
ERROR = "error"
HANG = "hang"
REFUSE = "refuse"

# The real services reject payloads over a few MB; a fake only needs a bound so a broken client cannot exhaust memory.
MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_HANG_LIMIT = 120.0

HOST = "127.0.0.1"

T = TypeVar("T")
SelfT = TypeVar("SelfT", bound="FakeEndpoint[Any]")
# An HTTP answer: status, Content-Type and body.
Reply = tuple[int, str, bytes]


class FakeEndpoint(Generic[T]):
    """An HTTP endpoint on 127.0.0.1 that records the items of type ``T`` it accepts. Subclasses set the class
    attributes and implement :meth:`_answer` and :meth:`_rejection`."""

    _name: ClassVar[str]  # the public class name, for the server thread and error messages
    _modes: ClassVar[tuple[str, ...]]
    _paths: ClassVar[tuple[str, ...]]  # the request paths POSTs are answered on; others get 404
    _noun: ClassVar[str]  # what the recorded items are called in wait_for's timeout message

    def __init__(self, *, mode: str, hang_limit: float) -> None:
        self._check_mode(mode)
        self.hang_limit = hang_limit
        self._mode = mode
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: list[T] = []
        self._posts = 0
        self._headers: list[dict[str, str]] = []
        self._hanging = 0
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._started = False

    # -- what a subclass provides ------------------------------------------------------------------------------

    def _answer(self, mode: str, body: bytes, headers: Message) -> Reply:
        """The reply to a POST on one of ``_paths`` in any mode but ``"hang"``; records what it accepts."""
        raise NotImplementedError

    def _rejection(self, status: int) -> Reply:
        """The reply for 404 (unknown path, or a GET), 411 (no Content-Length) or 413 (bad or too large a body)."""
        raise NotImplementedError

    def _summary(self, record: T) -> str:
        """A short label for one record (its kind, its name), listed when wait_for times out."""
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self: SelfT) -> SelfT:
        if self._started:
            return self
        self._started = True
        self._release.clear()
        if self._mode == REFUSE:
            # Nothing listens on a port the OS just handed out and took back, so connections to it are refused.
            self._port = free_port(HOST)
        else:
            self._listen()
        return self

    def stop(self) -> None:
        """Stop listening and release every hung request."""
        self._started = False
        self._release.set()
        self._close_listener()

    def __enter__(self: SelfT) -> SelfT:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _listen(self) -> None:
        self._server = _Server((HOST, self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self._name,
            daemon=True,
        )
        self._thread.start()

    def _close_listener(self) -> None:
        server, thread = self._server, self._thread
        self._server = None
        self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    # -- mode --------------------------------------------------------------------------------------------------

    def _check_mode(self, mode: str) -> None:
        if mode not in self._modes:
            raise ValueError(f"mode must be one of {self._modes}, not {mode!r}")

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        """Switch between the modes (see the fake's module docstring) while running."""
        self._check_mode(mode)
        previous = self._mode
        self._mode = mode
        if mode != HANG:
            # Requests hung in the previous mode end now (without an answer), as a recovering service would drop them.
            self._release.set()
        else:
            self._release.clear()
        if not self._started or (previous == REFUSE) == (mode == REFUSE):
            return
        if mode == REFUSE:
            self._close_listener()
        else:
            self._listen()  # same port: the address is reused so the endpoint clients were given stays valid

    # -- what was received -------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The endpoint, e.g. ``http://127.0.0.1:40123`` (without a trailing slash)."""
        if not self._port:
            raise RuntimeError(f"{self._name} is not started")
        return f"http://{HOST}:{self._port}"

    @property
    def posts(self) -> int:
        """How many POSTs arrived, whatever the mode (so outage tests can see that the exporter kept trying)."""
        with self._lock:
            return self._posts

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The headers of every POST received, in arrival order, whatever the mode (e.g. ``Authorization``, or what
        ``OTEL_EXPORTER_OTLP_HEADERS`` set)."""
        with self._lock:
            return [dict(headers) for headers in self._headers]

    @property
    def hanging(self) -> int:
        """How many requests are being held without an answer right now."""
        with self._lock:
            return self._hanging

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._posts = 0
            self._headers.clear()

    def wait_for(self, predicate: Callable[[T], bool], timeout: float = 30.0, count: int = 1) -> list[T]:
        """Wait until at least ``count`` of the accepted items (envelopes, spans) match ``predicate``; return all
        that match.

        Raises :class:`TimeoutError` after ``timeout`` seconds, listing what did arrive.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [record for record in self._records if _safe(predicate, record)]
                if len(matches) >= count:
                    return matches
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    labels = sorted({self._summary(record) for record in self._records})
                    raise TimeoutError(
                        f"{len(matches)} of {count} expected {self._noun} after {timeout} s; "
                        f"received {len(self._records)} {self._noun} ({', '.join(labels) or 'none'}) "
                        f"in {self._posts} POSTs"
                    )
                self._changed.wait(remaining)

    def _received(self) -> list[T]:
        """A copy of every item accepted so far, in arrival order."""
        with self._lock:
            return list(self._records)

    # -- called by the handler ---------------------------------------------------------------------------------

    def _record(self, records: list[T]) -> None:
        with self._changed:
            self._records.extend(records)
            self._changed.notify_all()

    def _count_post(self, headers: dict[str, str]) -> None:
        with self._lock:
            self._posts += 1
            self._headers.append(headers)

    def _hang(self) -> None:
        with self._lock:
            self._hanging += 1
        try:
            self._release.wait(self.hang_limit)
        finally:
            with self._lock:
                self._hanging -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Hung handler threads must not hold up stop(); they end on their own when released.
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], endpoint: FakeEndpoint[Any]) -> None:
        self.endpoint = endpoint
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's parameter name
        # The default writes one line per request to stderr; tests read the server's output, not the fake's.
        return None

    def _reply(self, reply: Reply) -> None:
        status, content_type, body = reply
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self._reply(self.server.endpoint._rejection(404))

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        endpoint = self.server.endpoint
        length_header = self.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header is not None else -1
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(endpoint._rejection(411 if length_header is None else 413))
            return
        body = self.rfile.read(length)
        endpoint._count_post(dict(self.headers.items()))
        if self.path.split("?", 1)[0].rstrip("/") not in endpoint._paths:
            self._reply(endpoint._rejection(404))
            return
        mode = endpoint.mode
        if mode == HANG:
            endpoint._hang()
            self.close_connection = True
            return
        self._reply(endpoint._answer(mode, body, self.headers))


def _safe(predicate: Callable[[T], bool], record: T) -> bool:
    # A predicate written for one kind of item may index keys another kind lacks; that is "no match".
    try:
        return bool(predicate(record))
    except (KeyError, IndexError, TypeError, AttributeError):
        return False
