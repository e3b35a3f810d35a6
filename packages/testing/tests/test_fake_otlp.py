"""The fake OTLP receiver decodes what a real OpenTelemetry exporter sends, and its outage modes work."""

from __future__ import annotations

import builtins
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from azmlinfsrv_testing.otlp import INSTALL_HINT
from azmlinfsrv_testing.otlp import FakeOtlpReceiver
from azmlinfsrv_testing.otlp import Span

pytest_plugins = ["pytester"]

otlp_exporter = pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
from opentelemetry.exporter.otlp.proto.http import Compression  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export import SpanExportResult  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402
from opentelemetry.trace import Status  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402


@pytest.fixture
def receiver() -> Iterator[FakeOtlpReceiver]:
    with FakeOtlpReceiver(hang_limit=30) as fake:
        yield fake


def exporter(url: str, **kwargs: Any) -> Any:
    return otlp_exporter.OTLPSpanExporter(endpoint=url + "/v1/traces", **kwargs)


def provider_for(exporter_: Any) -> TracerProvider:
    provider = TracerProvider(resource=Resource({"service.name": "fake-test", "deployment": "blue"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter_))
    return provider


def post(url: str, body: bytes, content_type: str = "application/x-protobuf", path: str = "/v1/traces") -> int:
    request = urllib.request.Request(url + path, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_spans_from_a_real_exporter_are_decoded_with_ids_parentage_and_attributes(receiver: FakeOtlpReceiver) -> None:
    provider = provider_for(exporter(receiver.url))
    tracer = provider.get_tracer("scope-a")
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER, attributes={"n": 3, "s": "x", "b": True}) as p:
        with tracer.start_as_current_span("child", attributes={"list": [1, 2], "f": 0.5}) as c:
            c.set_status(Status(StatusCode.ERROR, "bad"))
            c.add_event("exception")
    provider.shutdown()
    child, parent = receiver.wait_for(lambda span: True, timeout=10, count=2)
    assert isinstance(parent, Span)
    assert parent.trace_id == format(p.get_span_context().trace_id, "032x")
    assert parent.span_id == format(p.get_span_context().span_id, "016x")
    assert parent.parent_span_id == ""
    assert (parent.name, parent.kind, parent.status) == ("parent", "server", "unset")
    assert parent.attributes == {"n": 3, "s": "x", "b": True}
    assert child.parent_span_id == parent.span_id and child.trace_id == parent.trace_id
    assert child.span_id == format(c.get_span_context().span_id, "016x")
    assert (child.name, child.kind, child.status, child.status_message) == ("child", "internal", "error", "bad")
    assert child.attributes == {"list": [1, 2], "f": 0.5}
    assert child.events == ("exception",)
    assert child.resource["service.name"] == "fake-test" and child.resource["deployment"] == "blue"
    assert child.scope == "scope-a"
    assert child.duration_ms >= 0 and parent.start_time_unix_nano <= child.start_time_unix_nano
    assert receiver.trace(parent.trace_id) == [child, parent]
    assert receiver.posts == 2
    headers = {key.lower(): value for key, value in receiver.request_headers[0].items()}
    assert headers["content-type"] == "application/x-protobuf"


def test_gzip_payloads_and_exporter_headers(receiver: FakeOtlpReceiver) -> None:
    provider = provider_for(exporter(receiver.url, compression=Compression.Gzip, headers={"x-api-key": "k1"}))
    provider.get_tracer("t").start_span("zipped").end()
    provider.shutdown()
    [span] = receiver.wait_for(lambda s: s.name == "zipped", timeout=10)
    assert span.name == "zipped"
    headers = {key.lower(): value for key, value in receiver.request_headers[0].items()}
    assert headers["content-encoding"] == "gzip" and headers["x-api-key"] == "k1"


def test_bad_payloads_wrong_types_and_paths_are_refused(receiver: FakeOtlpReceiver) -> None:
    assert post(receiver.url, b"\xff\xff\xff not protobuf") == 400
    assert post(receiver.url, b"{}", content_type="application/json") == 415
    assert post(receiver.url, b"", path="/v1/metrics") == 404
    assert post(receiver.url, b"") == 200  # an empty request is a valid, empty export
    assert receiver.spans == []
    assert receiver.posts == 4
    receiver.clear()
    assert receiver.posts == 0


def test_wait_for_times_out_naming_what_arrived(receiver: FakeOtlpReceiver) -> None:
    with pytest.raises(TimeoutError, match="0 of 1 expected spans after 0.2 s; received 0 spans"):
        receiver.wait_for(lambda span: span.name == "never", timeout=0.2)


def test_error_mode_answers_503_and_records_nothing(receiver: FakeOtlpReceiver) -> None:
    receiver.mode = "error"
    assert exporter(receiver.url, timeout=2).export([]) in (SpanExportResult.FAILURE, SpanExportResult.SUCCESS)
    provider = provider_for(exporter(receiver.url, timeout=1))
    provider.get_tracer("t").start_span("lost").end()
    provider.shutdown()
    assert receiver.spans == [] and receiver.posts >= 1


def test_hang_mode_holds_the_exporter_until_its_timeout_then_releases(receiver: FakeOtlpReceiver) -> None:
    receiver.mode = "hang"
    provider = provider_for(exporter(receiver.url, timeout=0.5))
    provider.get_tracer("t").start_span("held").end()  # SimpleSpanProcessor: exports (and times out) right here
    assert receiver.hanging == 1 and receiver.spans == []
    receiver.mode = "ok"
    deadline = time.monotonic() + 10
    while receiver.hanging and time.monotonic() < deadline:
        time.sleep(0.02)
    assert receiver.hanging == 0
    provider.get_tracer("t").start_span("after").end()
    provider.shutdown()
    assert [span.name for span in receiver.wait_for(lambda s: True, timeout=10)] == ["after"]


def test_refuse_mode_closes_the_port_and_ok_reopens_the_same_one() -> None:
    with FakeOtlpReceiver(mode="refuse") as receiver:
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect(("127.0.0.1", receiver.port))
        port = receiver.port
        receiver.mode = "ok"
        assert receiver.port == port
        assert post(receiver.url, b"") == 200
        receiver.mode = "refuse"
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect(("127.0.0.1", port))


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        FakeOtlpReceiver(mode="sometimes")


def test_env_points_an_exporter_here(receiver: FakeOtlpReceiver) -> None:
    env = receiver.env(OTEL_SERVICE_NAME="svc")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == receiver.url == f"http://127.0.0.1:{receiver.port}"
    assert env["OTEL_SERVICE_NAME"] == "svc" and receiver.traces_url == receiver.url + "/v1/traces"


def test_without_opentelemetry_proto_it_fails_once_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_proto(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry.proto"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_proto)
    with pytest.raises(ImportError) as caught:
        FakeOtlpReceiver()
    assert str(caught.value) == INSTALL_HINT
    assert 'pip install "azureml-inference-server-http-testing[otlp]"' in INSTALL_HINT


def test_otlp_fixture_is_started_for_the_test_and_stopped_after(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pathlib import Path

        def test_receiver(azmlinfsrv_otlp):
            Path("port.txt").write_text(str(azmlinfsrv_otlp.port))
            assert azmlinfsrv_otlp.mode == "ok" and azmlinfsrv_otlp.spans == []
            assert azmlinfsrv_otlp.env()["OTEL_EXPORTER_OTLP_ENDPOINT"] == azmlinfsrv_otlp.url
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    port = int((pytester.path / "port.txt").read_text())
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
