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
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from email.message import Message
from typing import Any

from ._fake_endpoint import DEFAULT_HANG_LIMIT as DEFAULT_HANG_LIMIT
from ._fake_endpoint import ERROR
from ._fake_endpoint import HANG
from ._fake_endpoint import MAX_BODY_BYTES as MAX_BODY_BYTES
from ._fake_endpoint import OK
from ._fake_endpoint import REFUSE
from ._fake_endpoint import FakeEndpoint
from ._fake_endpoint import Reply

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

MODES = (OK, ERROR, HANG, REFUSE)

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
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


def _text(status: int, message: str) -> Reply:
    return status, "text/plain", message.encode("utf-8")


class FakeOtlpReceiver(FakeEndpoint[Span]):
    """An OTLP/HTTP trace endpoint on 127.0.0.1 that records what it receives.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`). ``mode`` may be changed at any time.
    Raises ImportError naming the install command when ``opentelemetry-proto`` is missing.
    """

    _name = "FakeOtlpReceiver"
    _modes = MODES
    _paths = (TRACES_PATH,)
    _noun = "spans"

    def __init__(self, *, mode: str = OK, hang_limit: float = DEFAULT_HANG_LIMIT) -> None:
        super().__init__(mode=mode, hang_limit=hang_limit)
        _load_proto()  # fail here, once, with the install command, rather than on every POST

    # -- where to send -----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base endpoint, e.g. ``http://127.0.0.1:40123`` (the exporter appends ``/v1/traces``)."""
        return super().url

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
        return self._received()

    def trace(self, trace_id: str) -> list[Span]:
        """The spans of one trace received so far."""
        return [span for span in self.spans if span.trace_id == trace_id]

    # -- what the traces endpoint answers ----------------------------------------------------------------------

    def _summary(self, record: Span) -> str:
        return record.name

    def _rejection(self, status: int) -> Reply:
        return _text(status, "not found" if status == 404 else "bad Content-Length")

    def _answer(self, mode: str, body: bytes, headers: Message) -> Reply:
        if mode == ERROR:
            return _text(503, "unavailable")
        content_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != PROTOBUF:
            return _text(415, "only application/x-protobuf is accepted")
        try:
            if "gzip" in headers.get("Content-Encoding", "").lower():
                body = gzip.decompress(body)
            spans = decode_spans(body)
        except (ValueError, OSError, EOFError) as exc:
            return _text(400, str(exc))
        self._record(spans)
        # An empty ExportTraceServiceResponse: everything accepted.
        return 200, PROTOBUF, b""
