"""The direct OTLP encoder writes the same message as the SDK's encoder, and the exporter sends it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azmlinfsrv_otel import OtelTracer
from azmlinfsrv_otel.encoding import FastOTLPSpanExporter
from azmlinfsrv_otel.encoding import encode_request
from azmlinfsrv_testing.otlp import FakeOtlpReceiver
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link
from opentelemetry.trace import NonRecordingSpan
from opentelemetry.trace import SpanContext
from opentelemetry.trace import SpanKind
from opentelemetry.trace import Status
from opentelemetry.trace import StatusCode
from opentelemetry.trace import TraceFlags
from opentelemetry.trace import TraceState
from opentelemetry.trace import set_span_in_context


@pytest.fixture
def spans() -> tuple[ReadableSpan, ...]:
    """SDK spans of every shape (remote parent, trace state, links, events, status, every attribute type, two
    scopes, a schema URL) and the server's own spans, one of them failed."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"deployment": "blue", "n": [1, 2]}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("scope-1", "1.0", schema_url="https://example.com/schema")
    remote = SpanContext(5, 6, True, TraceFlags(TraceFlags.SAMPLED), TraceState([("vendor", "1")]))
    attributes = {"s": "x", "i": -3, "f": 1.5, "b": True, "strings": ["a", "b"], "ints": [1, 2], "é": "ü"}
    with tracer.start_as_current_span(
        "outer",
        context=set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes=attributes,
        links=[Link(SpanContext(7, 8, True), {"k": "v"})],
    ) as outer:
        outer.add_event("event", {"x": 1})
        with provider.get_tracer("scope-2").start_as_current_span("inner", kind=SpanKind.CLIENT) as inner:
            inner.set_status(Status(StatusCode.ERROR, "bad"))
    server = OtelTracer(Resource.create(), [SimpleSpanProcessor(memory)], set_global=False)
    request = server.start_request(
        {"HTTP_TRACEPARENT": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "POST /score", {"u": "x"}
    )
    with pytest.raises(ValueError), server.span("run", {"code.function.name": "run"}):
        raise ValueError("failed run")
    request.finish(500, {"http.response.status_code": 500}, None)
    server.shutdown(1.0)
    return memory.get_finished_spans()


def decode(data: bytes) -> Any:
    message = ExportTraceServiceRequest()
    message.ParseFromString(data)
    return message


def test_the_encoding_equals_the_sdk_encoders(spans: tuple[ReadableSpan, ...]) -> None:
    assert len(spans) == 4
    expected = decode(encode_spans(spans).SerializePartialToString())
    assert decode(encode_request(spans)) == expected
    assert decode(encode_request(spans)) == expected  # again, from the attribute cache


def test_an_empty_batch_is_an_empty_request() -> None:
    assert encode_request([]) == b""


@pytest.fixture
def receiver() -> Iterator[FakeOtlpReceiver]:
    with FakeOtlpReceiver() as fake:
        yield fake


def test_the_exporter_sends_the_encoding(spans: tuple[ReadableSpan, ...], receiver: FakeOtlpReceiver) -> None:
    exporter = FastOTLPSpanExporter(endpoint=receiver.traces_url)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    names = [span.name for span in receiver.wait_for(lambda span: True, timeout=10, count=4)]
    assert sorted(names) == ["POST /score", "inner", "outer", "run"]
    receiver.mode = "error"
    assert FastOTLPSpanExporter(endpoint=receiver.traces_url, timeout=1).export(spans) == SpanExportResult.FAILURE


def test_without_the_byte_client_the_sdks_own_path_is_used(
    spans: tuple[ReadableSpan, ...], receiver: FakeOtlpReceiver
) -> None:
    exporter = FastOTLPSpanExporter(endpoint=receiver.traces_url)
    calls: list[int] = []

    class Elsewhere:
        """What an exporter release without a byte-level client looks like to the fast path."""

    real_client = exporter._client  # type: ignore[attr-defined]
    exporter._client = Elsewhere()  # type: ignore[attr-defined]

    def sdk_export(self: Any, batch: Any) -> SpanExportResult:
        calls.append(len(batch))
        return SpanExportResult.SUCCESS

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FastOTLPSpanExporter.__mro__[1], "export", sdk_export)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter._client = real_client  # type: ignore[attr-defined]
    assert calls == [4]
