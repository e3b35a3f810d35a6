"""The OpenTelemetry tracer: context in from the request, spans out to a (fake) OTLP collector, never blocking."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azmlinfsrv_otel import OtelTracer
from azmlinfsrv_otel import create_tracer
from azmlinfsrv_otel import make_resource
from azmlinfsrv_otel import tracer as tracer_module
from azmlinfsrv_testing.otlp import FakeOtlpReceiver
from azureml_inference_server_http.config import ServerConfig
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
EXPORTER_TIMEOUT = 10.0
ENVIRON = {
    "REQUEST_METHOD": "POST",
    "PATH_INFO": "/score",
    "HTTP_TRACEPARENT": f"00-{TRACE_ID}-{PARENT_ID}-01",
    "HTTP_TRACESTATE": "vendor=abc",
}


@pytest.fixture
def memory() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(memory: InMemorySpanExporter) -> Iterator[OtelTracer]:
    made = OtelTracer(Resource({"service.name": "unit"}), [SimpleSpanProcessor(memory)], set_global=False)
    yield made
    made.shutdown(1.0)


@pytest.fixture
def receiver() -> Iterator[FakeOtlpReceiver]:
    with FakeOtlpReceiver(hang_limit=30) as fake:
        yield fake


def test_a_request_continues_the_incoming_trace_and_is_current_until_finished(
    tracer: OtelTracer, memory: InMemorySpanExporter
) -> None:
    before = trace.get_current_span()
    request = tracer.start_request(ENVIRON, "POST /score", {"http.request.method": "POST"})
    current = trace.get_current_span().get_span_context()
    assert format(current.trace_id, "032x") == TRACE_ID == request.trace_id
    assert request.traceparent == f"00-{TRACE_ID}-{current.span_id:016x}-01"
    with tracer.span("run", {"code.function.name": "run"}):
        # What a score script does: the global API's tracer, with the current context.
        with tracer.provider.get_tracer("user").start_as_current_span("user-span"):
            pass
    request.finish(200, {"http.response.status_code": 200}, None)
    assert trace.get_current_span() is before
    user, run, server = memory.get_finished_spans()
    assert server.kind == SpanKind.SERVER and server.name == "POST /score"
    assert server.parent is not None and server.parent.is_remote
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert server.context.trace_state.get("vendor") == "abc"
    assert dict(server.attributes or {}) == {"http.request.method": "POST", "http.response.status_code": 200}
    assert server.status.status_code == StatusCode.UNSET
    assert run.parent is not None and run.parent.span_id == server.context.span_id
    assert run.kind == SpanKind.INTERNAL and dict(run.attributes or {}) == {"code.function.name": "run"}
    assert user.parent is not None and user.parent.span_id == run.context.span_id
    assert {span.context.trace_id for span in (user, run, server)} == {int(TRACE_ID, 16)}


def test_without_a_traceparent_a_new_trace_starts(tracer: OtelTracer, memory: InMemorySpanExporter) -> None:
    request = tracer.start_request({"REQUEST_METHOD": "GET"}, "GET /score", {})
    request.finish(200, {}, None)
    [server] = memory.get_finished_spans()
    assert server.parent is None
    assert request.trace_id == format(server.context.trace_id, "032x") != TRACE_ID
    assert request.traceparent.startswith(f"00-{request.trace_id}-")


def test_a_malformed_traceparent_is_ignored(tracer: OtelTracer, memory: InMemorySpanExporter) -> None:
    request = tracer.start_request({"HTTP_TRACEPARENT": "00-zz-yy-01"}, "POST /score", {})
    request.finish(200, {}, None)
    [server] = memory.get_finished_spans()
    assert server.parent is None and request.trace_id != "0" * 32


def test_server_errors_and_exceptions_mark_the_spans(tracer: OtelTracer, memory: InMemorySpanExporter) -> None:
    request = tracer.start_request(ENVIRON, "POST /score", {})
    with pytest.raises(ValueError), tracer.span("run", {}):
        raise ValueError("model failed")
    request.finish(500, {"error.type": "500"}, None)
    client_error = tracer.start_request(ENVIRON, "POST /score", {})
    client_error.finish(415, {}, None)
    crashed = tracer.start_request(ENVIRON, "POST /score", {})
    crashed.finish(500, {}, RuntimeError("app crashed"))
    run, server, client, crash = memory.get_finished_spans()
    assert run.status.status_code == StatusCode.ERROR
    assert [event.name for event in run.events] == ["exception"]
    assert server.status.status_code == StatusCode.ERROR
    assert client.status.status_code == StatusCode.UNSET  # 4xx is the client's error, not the server's
    assert crash.status.status_code == StatusCode.ERROR and [event.name for event in crash.events] == ["exception"]


def test_the_sampler_comes_from_the_environment(memory: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    made = OtelTracer(Resource({}), [SimpleSpanProcessor(memory)], set_global=False)
    request = made.start_request({}, "POST /score", {})
    request.finish(200, {}, None)
    made.shutdown(1.0)
    assert memory.get_finished_spans() == ()
    # Not sampled (flag bit 0 clear), but still a valid context for the response.
    assert int(request.traceparent.rsplit("-", 1)[1], 16) & 1 == 0


def test_service_name_otel_variables_win_over_the_servers_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=blue")
    resource = make_resource("ML service")
    assert resource.attributes["service.name"] == "ML service"
    assert resource.attributes["deployment.environment"] == "blue"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-otel")
    assert make_resource("ML service").attributes["service.name"] == "from-otel"
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
    assert make_resource("ML service").attributes["service.name"] == "from-attributes"


def test_create_tracer_is_off_without_an_endpoint_or_with_the_exporter_none(monkeypatch: pytest.MonkeyPatch) -> None:
    assert create_tracer(ServerConfig()) is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert create_tracer(ServerConfig(tracing_enabled=True)) is None


def test_create_tracer_exports_to_the_configured_endpoint_with_headers(
    receiver: FakeOtlpReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in receiver.env(OTEL_EXPORTER_OTLP_HEADERS="x-tenant=t1", OTEL_SERVICE_NAME="svc").items():
        monkeypatch.setenv(name, value)
    installed: list[Any] = []
    monkeypatch.setattr(tracer_module.trace, "set_tracer_provider", installed.append)
    monkeypatch.setattr(tracer_module.trace, "get_tracer_provider", trace.ProxyTracerProvider)
    with caplog.at_level("INFO", logger="azmlinfsrv.trace"):
        made = create_tracer(ServerConfig.from_env({"AML_APP_ROOT": "/nonexistent", **receiver.env()}))
    assert isinstance(made, OtelTracer)
    assert installed == [made.provider]  # the score script's own spans go through it too
    assert f"OpenTelemetry traces are sent to {receiver.url}/v1/traces" in caplog.messages
    made.start_request(ENVIRON, "POST /score", {}).finish(200, {}, None)
    [span] = receiver.wait_for(lambda s: s.name == "POST /score", timeout=10)
    made.shutdown(2.0)
    assert span.trace_id == TRACE_ID and span.parent_span_id == PARENT_ID
    assert span.resource["service.name"] == "svc" and span.scope == "azmlinfsrv"
    assert {key.lower(): value for key, value in receiver.request_headers[0].items()}["x-tenant"] == "t1"


def _requests(made: OtelTracer, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        request = made.start_request(ENVIRON, "POST /score", {"http.request.method": "POST"})
        with made.span("run", {}):
            pass
        request.finish(200, {"http.response.status_code": 200}, None)
    return time.perf_counter() - started


def test_a_hanging_collector_neither_slows_requests_nor_grows_the_queue(
    receiver: FakeOtlpReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "256")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    reachable = OtelTracer(Resource({}), exporter=OTLPSpanExporter(endpoint=receiver.traces_url), set_global=False)
    baseline = _requests(reachable, 1000)
    reachable.shutdown(5.0)
    with FakeOtlpReceiver(mode="hang", hang_limit=30) as hanging:
        exporter = OTLPSpanExporter(endpoint=hanging.traces_url, timeout=10)
        held = OtelTracer(Resource({}), exporter=exporter, set_global=False)
        with caplog.at_level(logging.WARNING):
            elapsed = _requests(held, 1000)
        deadline = time.monotonic() + 10
        while not hanging.hanging and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hanging.hanging >= 1  # the export thread really is stuck on the collector
        [processor] = held.provider._active_span_processor._span_processors  # type: ignore[attr-defined]
        queue = processor._batch_processor._queue
        assert len(queue) <= 256  # the rest were dropped, not kept
        # Reported once (the interval is a minute), with a count, not once per span.
        [report] = [message for message in caplog.messages if "span export queue is full" in message]
        assert int(report.split(": ")[1].split()[0]) >= 1
        started = time.perf_counter()
        held.shutdown(0.5)
        # Shutdown gives up after its own timeout instead of waiting out the exporter's (10 s).
        assert time.perf_counter() - started < EXPORTER_TIMEOUT / 4
        # The export thread ends once its send times out; wait for that here, so that it does not log its retries
        # into another test's output after this collector has gone.
        processor._batch_processor._worker_thread.join(EXPORTER_TIMEOUT + 5)
    assert elapsed < 2 * baseline


def test_dropped_spans_are_reported_once_per_interval_with_their_count(caplog: pytest.LogCaptureFixture) -> None:
    reports = tracer_module._DropReports(interval=3600)
    sdk_logger = logging.getLogger("test.sdk.processor")
    sdk_logger.addFilter(reports)
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(50):
                sdk_logger.warning("Queue full, dropping %s.", "Span")
            sdk_logger.warning("another warning")
    finally:
        sdk_logger.removeFilter(reports)
    assert caplog.messages == [
        "The span export queue is full (is the OTLP collector reachable?): 1 span(s) dropped",
        "another warning",
    ]
    assert reports._dropped == 49  # counted for the next report
