"""A fake OpenTelemetry collector: a real OTLP/HTTP endpoint on 127.0.0.1 that records the spans it receives.

Point a server at it with ``OTEL_EXPORTER_OTLP_ENDPOINT=<FakeOtlpReceiver.url>`` (or ``env=receiver.env()``). It
accepts what a collector's ``POST /v1/traces`` accepts in binary protobuf (``application/x-protobuf``, optionally
gzip-compressed), decodes it with ``opentelemetry-proto`` and keeps each span as a plain :class:`Span`. Decoding
needs the ``otlp`` extra: ``pip install "azureml-inference-server-http-testing[otlp]"``. It can also simulate an
outage, so tests can check that tracing never slows requests down:

* ``"ok"``: record the spans and answer 200;
* ``"error"``: answer 503 (retryable for OTLP clients) without recording anything;
* ``"hang"``: read the request and never answer (until the receiver stops or ``hang_limit`` passes);
* ``"refuse"``: nothing listens on the port, so connections are refused.

Example::

    with FakeOtlpReceiver() as receiver:
        server = start_server([...], env=receiver.env())
        ...
        [span] = receiver.wait_for(lambda s: s.name == "POST /score")
        assert span.parent_span_id == "b7ad6b7169203331"
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = [
    "ERROR",
    "HANG",
    "INSTALL_HINT",
    "MODES",
    "OK",
    "REFUSE",
    "FakeOtlpReceiver",
    "Span",
    "decode_spans",
]

OK = "ok"
ERROR = "error"
HANG = "hang"
REFUSE = "refuse"
MODES = (OK, ERROR, HANG, REFUSE)

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
# A collector's default limit is a few MB; a fake only needs a bound so a broken client cannot exhaust memory.
MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_HANG_LIMIT = 120.0
INSTALL_HINT = (
    'FakeOtlpReceiver decodes OTLP with opentelemetry-proto: pip install "azureml-inference-server-http-testing[otlp]"'
)

# OTLP's enum values as the names tests compare against.
_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUSES = {0: "unset", 1: "ok", 2: "error"}


@dataclass(frozen=True)
class Span:
    """One received span. Ids are lowercase hex (32 digits for traces, 16 for spans); ``parent_span_id`` is ``""``
    for a root span. ``kind`` is ``"server"``, ``"internal"``, ``"client"``...; ``status`` is ``"unset"``, ``"ok"``
    or ``"error"``. Attribute values are Python values (arrays as lists)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    attributes: dict[str, Any]
    status: str
    status_message: str = ""
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""
    trace_state: str = ""
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    events: tuple[str, ...] = ()  # event names, e.g. "exception"

    @property
    def duration_ms(self) -> float:
        return (self.end_time_unix_nano - self.start_time_unix_nano) / 1e6


Predicate = Callable[[Span], bool]


def _value(any_value: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python value."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    value = getattr(any_value, kind)
    if kind == "array_value":
        return [_value(item) for item in value.values]
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in value.values}
    if kind == "bytes_value":
        return bytes(value)
    return value


def _attributes(key_values: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in key_values}


def _load_proto() -> Any:
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return trace_service_pb2


def decode_spans(body: bytes) -> list[Span]:
    """The spans of one binary ``ExportTraceServiceRequest``; raises ValueError when it is not one."""
    trace_service_pb2 = _load_proto()
    request = trace_service_pb2.ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # protobuf's DecodeError, whose module differs between protobuf versions
        raise ValueError(f"not an OTLP ExportTraceServiceRequest: {exc}") from exc
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                spans.append(
                    Span(
                        trace_id=bytes(span.trace_id).hex(),
                        span_id=bytes(span.span_id).hex(),
                        parent_span_id=bytes(span.parent_span_id).hex(),
                        name=span.name,
                        kind=_KINDS.get(span.kind, str(span.kind)),
                        attributes=_attributes(span.attributes),
                        status=_STATUSES.get(span.status.code, str(span.status.code)),
                        status_message=span.status.message,
                        resource=resource,
                        scope=scope,
                        trace_state=span.trace_state,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        events=tuple(event.name for event in span.events),
                    )
                )
    return spans


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Hung handler threads must not hold up stop(); they end on their own when released.
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], receiver: FakeOtlpReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's parameter name
        # The default writes one line per request to stderr; tests read the server's output, not the fake's.
        return None

    def _reply(self, status: int, body: bytes = b"", content_type: str = PROTOBUF) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self._reply(404, b"not found", "text/plain")

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        receiver = self.server.receiver
        length_header = self.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header is not None else -1
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(411 if length_header is None else 413, b"bad Content-Length", "text/plain")
            return
        body = self.rfile.read(length)
        receiver._count_post(dict(self.headers.items()))
        if self.path.split("?", 1)[0].rstrip("/") != TRACES_PATH:
            self._reply(404, b"not found", "text/plain")
            return
        mode = receiver.mode
        if mode == HANG:
            receiver._hang()
            self.close_connection = True
            return
        if mode == ERROR:
            self._reply(503, b"unavailable", "text/plain")
            return
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != PROTOBUF:
            self._reply(415, b"only application/x-protobuf is accepted", "text/plain")
            return
        try:
            if "gzip" in self.headers.get("Content-Encoding", "").lower():
                body = gzip.decompress(body)
            spans = decode_spans(body)
        except (ValueError, OSError, EOFError) as exc:
            self._reply(400, str(exc).encode("utf-8"), "text/plain")
            return
        receiver._record(spans)
        # An empty ExportTraceServiceResponse: everything accepted.
        self._reply(200)


class FakeOtlpReceiver:
    """An OTLP/HTTP trace endpoint on 127.0.0.1 that records what it receives.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`). ``mode`` may be changed at any time.
    Raises ImportError naming the install command when ``opentelemetry-proto`` is missing.
    """

    def __init__(self, *, mode: str = OK, hang_limit: float = DEFAULT_HANG_LIMIT) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        _load_proto()  # fail here, once, with the install command, rather than on every POST
        self.hang_limit = hang_limit
        self._mode = mode
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._spans: list[Span] = []
        self._posts = 0
        self._headers: list[dict[str, str]] = []
        self._hanging = 0
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> FakeOtlpReceiver:
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

    def __enter__(self) -> FakeOtlpReceiver:
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
            name="FakeOtlpReceiver",
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
            # Requests hung in the previous mode end now (without an answer), as a recovering collector would drop them.
            self._release.set()
        else:
            self._release.clear()
        if not self._started or (previous == REFUSE) == (mode == REFUSE):
            return
        if mode == REFUSE:
            self._close_listener()
        else:
            self._listen()  # same port: the address is reused so the endpoint stays valid

    # -- where to send -----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The base endpoint, e.g. ``http://127.0.0.1:40123`` (the exporter appends ``/v1/traces``)."""
        if not self._port:
            raise RuntimeError("FakeOtlpReceiver is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def traces_url(self) -> str:
        """The traces endpoint itself, for ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``."""
        return self.url + TRACES_PATH

    def env(self, **extra: str) -> dict[str, str]:
        """Variables that send a server's spans here: ``OTEL_EXPORTER_OTLP_ENDPOINT`` and a short batch delay (so
        tests see spans within a fraction of a second), plus ``extra``."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.url, "OTEL_BSP_SCHEDULE_DELAY": "100", **extra}

    # -- what was received -------------------------------------------------------------------------------------

    @property
    def spans(self) -> list[Span]:
        """A copy of every span accepted so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    @property
    def posts(self) -> int:
        """How many POSTs arrived, whatever the mode (so outage tests can see that the exporter kept trying)."""
        with self._lock:
            return self._posts

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The headers of every POST received, in arrival order, whatever the mode (``OTEL_EXPORTER_OTLP_HEADERS``)."""
        with self._lock:
            return [dict(headers) for headers in self._headers]

    @property
    def hanging(self) -> int:
        """How many requests are being held without an answer right now."""
        with self._lock:
            return self._hanging

    def trace(self, trace_id: str) -> list[Span]:
        """The spans of one trace received so far."""
        return [span for span in self.spans if span.trace_id == trace_id]

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._posts = 0
            self._headers.clear()

    def wait_for(self, predicate: Predicate, timeout: float = 30.0, count: int = 1) -> list[Span]:
        """Wait until at least ``count`` accepted spans match ``predicate``; return all that match.

        Raises :class:`TimeoutError` after ``timeout`` seconds, listing what did arrive.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [span for span in self._spans if _safe(predicate, span)]
                if len(matches) >= count:
                    return matches
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    names = sorted({span.name for span in self._spans})
                    raise TimeoutError(
                        f"{len(matches)} of {count} expected spans after {timeout} s; received {len(self._spans)} "
                        f"spans ({', '.join(names) or 'none'}) in {self._posts} POSTs"
                    )
                self._changed.wait(remaining)

    # -- called by the handler ---------------------------------------------------------------------------------

    def _record(self, spans: list[Span]) -> None:
        with self._changed:
            self._spans.extend(spans)
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


def _safe(predicate: Predicate, span: Span) -> bool:
    # A predicate written for one kind of span may index attributes another lacks; that is "no match".
    try:
        return bool(predicate(span))
    except (KeyError, IndexError, TypeError, AttributeError):
        return False


def _reserve_closed_port() -> int:
    """A port on 127.0.0.1 where, right now, nothing listens (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
