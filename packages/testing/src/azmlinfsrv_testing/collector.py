"""A fake Application Insights ingestion endpoint: a real HTTP server on 127.0.0.1 that records envelopes.

Point a server at it with ``APPLICATIONINSIGHTS_CONNECTION_STRING=<FakeIngestion.connection_string>``. It accepts
what the real ``/v2/track`` and ``/v2.1/track`` endpoints accept (a JSON array, one JSON object, or newline-delimited
JSON, optionally gzip-compressed) and answers like the service does. It can also simulate an outage, so tests can
check that telemetry never slows requests down:

* ``"ok"``: record the envelopes and answer 200;
* ``"error"``: answer 500 without recording anything;
* ``"hang"``: read the request and never answer (until the endpoint stops or ``hang_limit`` passes);
* ``"refuse"``: nothing listens on the port, so connections are refused;
* ``"partial"``: answer 206 and reject every item as invalid (status 400), recording nothing, as the service does
  for envelopes it cannot accept.

Example::

    with FakeIngestion() as ingestion:
        env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = ingestion.connection_string
        ...
        [item] = ingestion.wait_for(lambda e: request_id(e) == "abc", timeout=30)
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = [
    "ERROR",
    "HANG",
    "MODES",
    "OK",
    "PARTIAL",
    "REFUSE",
    "FakeIngestion",
    "envelope_kind",
    "envelope_properties",
]

OK = "ok"
ERROR = "error"
HANG = "hang"
REFUSE = "refuse"
PARTIAL = "partial"
MODES = (OK, ERROR, HANG, REFUSE, PARTIAL)

TRACK_PATHS = ("/v2/track", "/v2.1/track")
# The real service rejects payloads over a few MB; a fake only needs a bound so a broken client cannot exhaust memory.
MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_HANG_LIMIT = 120.0

_KINDS = {
    "RequestData": "request",
    "ExceptionData": "exception",
    "MessageData": "trace",
    "EventData": "event",
    "MetricData": "metric",
    "RemoteDependencyData": "dependency",
}

Envelope = dict[str, Any]
Predicate = Callable[[Envelope], bool]


def envelope_kind(envelope: Envelope) -> str:
    """``"request"``, ``"exception"``, ``"trace"``, ``"event"``, ``"metric"``, ``"dependency"`` or ``"unknown"``."""
    data = envelope.get("data")
    base_type = data.get("baseType") if isinstance(data, dict) else None
    return _KINDS.get(str(base_type), "unknown")


def envelope_properties(envelope: Envelope) -> dict[str, Any]:
    """The custom properties (``customDimensions`` in the portal) of an envelope, or ``{}``."""
    data = envelope.get("data")
    base = data.get("baseData") if isinstance(data, dict) else None
    properties = base.get("properties") if isinstance(base, dict) else None
    return properties if isinstance(properties, dict) else {}


def _parse_items(body: bytes, content_encoding: str) -> list[Any]:
    """Decode a track payload into its items; raises ValueError when it is not one of the accepted shapes."""
    if "gzip" in content_encoding.lower() or body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    text = body.decode("utf-8").strip()
    if not text:
        return []
    if text.startswith("["):
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError("the payload is not a JSON array")
        return items
    try:
        return [json.loads(text)]
    except ValueError:
        # Newline-delimited JSON: one envelope per line.
        return [json.loads(line) for line in text.splitlines() if line.strip()]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Hung handler threads must not hold up stop(); they end on their own when released.
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], ingestion: FakeIngestion) -> None:
        self.ingestion = ingestion
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's parameter name
        # The default writes one line per request to stderr; tests read the server's output, not the fake's.
        return None

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        ingestion = self.server.ingestion
        path = self.path.split("?", 1)[0].rstrip("/")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self.close_connection = True
            self._reply(411, {"error": "Content-Length required"})
            return
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(413, {"error": "payload too large"})
            return
        body = self.rfile.read(length)
        ingestion._count_post(dict(self.headers.items()))
        if path not in TRACK_PATHS:
            self._reply(404, {"error": "not found"})
            return
        mode = ingestion.mode
        if mode == HANG:
            ingestion._hang()
            self.close_connection = True
            return
        if mode == ERROR:
            self._reply(500, {"itemsReceived": 0, "itemsAccepted": 0, "errors": []})
            return
        try:
            items = _parse_items(body, self.headers.get("Content-Encoding", ""))
        except (ValueError, OSError, EOFError) as exc:
            error = {"index": 0, "statusCode": 400, "message": f"Invalid payload: {exc}"}
            self._reply(400, {"itemsReceived": 0, "itemsAccepted": 0, "errors": [error]})
            return
        if mode == PARTIAL:
            rejected = [
                {"index": index, "statusCode": 400, "message": "Invalid envelope (rejected by FakeIngestion)"}
                for index in range(len(items))
            ]
            self._reply(206, {"itemsReceived": len(items), "itemsAccepted": 0, "errors": rejected})
            return
        envelopes = [item for item in items if isinstance(item, dict)]
        errors = [
            {"index": index, "statusCode": 400, "message": "Invalid envelope: not a JSON object"}
            for index, item in enumerate(items)
            if not isinstance(item, dict)
        ]
        ingestion._record(envelopes)
        status = 206 if errors else 200
        self._reply(status, {"itemsReceived": len(items), "itemsAccepted": len(envelopes), "errors": errors})


class FakeIngestion:
    """An Application Insights ingestion endpoint on 127.0.0.1 that records what it receives.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`). ``mode`` may be changed at any time.
    """

    def __init__(
        self,
        *,
        mode: str = OK,
        instrumentation_key: str | None = None,
        hang_limit: float = DEFAULT_HANG_LIMIT,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.instrumentation_key = instrumentation_key or str(uuid.uuid4())
        self.hang_limit = hang_limit
        self._mode = mode
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._envelopes: list[Envelope] = []
        self._posts = 0
        self._headers: list[dict[str, str]] = []
        self._hanging = 0
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> FakeIngestion:
        if self._started:
            return self
        self._started = True
        self._release.clear()
        if self._mode == REFUSE:
            self._port = _reserve_closed_port()
        else:
            self._listen()
        return self

    def stop(self) -> None:
        """Stop listening and release every hung request."""
        self._started = False
        self._release.set()
        self._close_listener()

    def __enter__(self) -> FakeIngestion:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _listen(self) -> None:
        self._server = _Server(("127.0.0.1", self._port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="FakeIngestion",
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

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        """Switch between the modes (see the module docstring) while running."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
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
            self._listen()  # same port: the address is reused so existing connection strings stay valid

    # -- what was received -------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The ingestion endpoint, e.g. ``http://127.0.0.1:40123`` (without a trailing slash)."""
        if not self._port:
            raise RuntimeError("FakeIngestion is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def connection_string(self) -> str:
        """``InstrumentationKey=<uuid>;IngestionEndpoint=<url>/``, the shape Azure portals hand out."""
        return f"InstrumentationKey={self.instrumentation_key};IngestionEndpoint={self.url}/"

    @property
    def envelopes(self) -> list[Envelope]:
        """A copy of every envelope accepted so far, in arrival order."""
        with self._lock:
            return list(self._envelopes)

    @property
    def posts(self) -> int:
        """How many POSTs arrived, whatever the mode (so outage tests can see that the exporter kept trying)."""
        with self._lock:
            return self._posts

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The headers of every POST received, in arrival order, whatever the mode (e.g. ``Authorization``)."""
        with self._lock:
            return [dict(headers) for headers in self._headers]

    def authorizations(self) -> list[str | None]:
        """The ``Authorization`` header of every POST (``None`` where there was none), e.g. ``Bearer <token>``."""
        return [_header(headers, "Authorization") for headers in self.request_headers]

    @property
    def hanging(self) -> int:
        """How many requests are being held without an answer right now."""
        with self._lock:
            return self._hanging

    def items(self, kind: str) -> list[Envelope]:
        """The accepted envelopes of one kind (see :func:`envelope_kind`)."""
        return [envelope for envelope in self.envelopes if envelope_kind(envelope) == kind]

    def clear(self) -> None:
        with self._lock:
            self._envelopes.clear()
            self._posts = 0
            self._headers.clear()

    def wait_for(self, predicate: Predicate, timeout: float = 30.0, count: int = 1) -> list[Envelope]:
        """Wait until at least ``count`` accepted envelopes match ``predicate``; return all that match.

        Raises :class:`TimeoutError` after ``timeout`` seconds, listing what did arrive.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [envelope for envelope in self._envelopes if _safe(predicate, envelope)]
                if len(matches) >= count:
                    return matches
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    kinds = [envelope_kind(envelope) for envelope in self._envelopes]
                    raise TimeoutError(
                        f"{len(matches)} of {count} expected envelopes after {timeout} s; "
                        f"received {len(kinds)} envelopes ({', '.join(sorted(set(kinds))) or 'none'}) "
                        f"in {self._posts} POSTs"
                    )
                self._changed.wait(remaining)

    # -- called by the handler ---------------------------------------------------------------------------------

    def _record(self, envelopes: list[Envelope]) -> None:
        with self._changed:
            self._envelopes.extend(envelopes)
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


def _header(headers: dict[str, str], name: str) -> str | None:
    # HTTP header names are case-insensitive; clients differ in how they spell them.
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _safe(predicate: Predicate, envelope: Envelope) -> bool:
    # A predicate written for one kind of envelope may index keys another kind lacks; that is "no match".
    try:
        return bool(predicate(envelope))
    except (KeyError, IndexError, TypeError, AttributeError):
        return False


def _reserve_closed_port() -> int:
    """A port on 127.0.0.1 where, right now, nothing listens (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
