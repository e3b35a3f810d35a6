"""OpenTelemetry tracing end to end: a real ``azmlinfsrv`` exporting spans to a local fake OTLP collector.

Tracing is turned on the standard way, ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at ``FakeOtlpReceiver`` on
127.0.0.1; the servers are started by ``azmlinfsrv_testing.process.start_server`` under gunicorn (the default) and
under waitress, whose run() goes through the scoring runner's thread.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from azmlinfsrv_testing.collector import FakeIngestion
from azmlinfsrv_testing.collector import envelope_kind
from azmlinfsrv_testing.collector import envelope_properties
from azmlinfsrv_testing.otlp import FakeOtlpReceiver
from azmlinfsrv_testing.otlp import Span
from azmlinfsrv_testing.process import ServerProcess
from azmlinfsrv_testing.process import start_server
from conftest import RESOURCES

pytest.importorskip("azmlinfsrv_otel", reason="needs the otel package")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.posix,
    pytest.mark.skipif(not hasattr(os, "killpg"), reason="stops servers by process group (POSIX)"),
]

SCRIPT = RESOURCES / "tracing_score.py"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
TRACEPARENT_HEADER = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[0-3]$")
SPAN_TIMEOUT = 30.0
MODELS = {"gunicorn": (), "waitress": ("--server", "waitress")}


@pytest.fixture
def receiver() -> Iterator[FakeOtlpReceiver]:
    with FakeOtlpReceiver(hang_limit=60) as fake:
        yield fake


def serve(tmp_path: Path, env: dict[str, str], *flags: str) -> ServerProcess:
    return start_server(["--entry_script", str(SCRIPT), *flags], env=env, cwd=RESOURCES, log_dir=tmp_path)


def score(server: ServerProcess, body: str = "{}", **headers: str) -> requests.Response:
    return requests.post(
        server.url + "/score", data=body, headers={"Content-Type": "application/json", **headers}, timeout=30
    )


def spans_of(receiver: FakeOtlpReceiver, trace_id: str, count: int) -> dict[str, Span]:
    spans = receiver.wait_for(lambda span: span.trace_id == trace_id, timeout=SPAN_TIMEOUT, count=count)
    return {span.name: span for span in spans}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_spans_continue_the_incoming_trace_with_correct_parentage_and_attributes(
    model: str, receiver: FakeOtlpReceiver, tmp_path: Path
) -> None:
    env = receiver.env(OTEL_SERVICE_NAME="tracing-e2e", OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test")
    with serve(tmp_path, env, *MODELS[model]) as server:
        response = score(server, traceparent=TRACEPARENT, tracestate="vendor=1", **{"x-request-id": "trace-req-1"})
        assert response.status_code == 200, response.text
        match = TRACEPARENT_HEADER.match(response.headers["traceparent"])
        assert match is not None and match.group(1) == TRACE_ID
        spans = spans_of(receiver, TRACE_ID, count=3)
        server_span, run_span, user_span = spans["POST /score"], spans["run"], spans["user-work"]
        # The server span continues the caller's span and is the one the response names.
        assert server_span.parent_span_id == PARENT_ID and server_span.kind == "server"
        assert server_span.span_id == match.group(2)
        assert server_span.trace_state == "vendor=1"
        assert run_span.parent_span_id == server_span.span_id and run_span.kind == "internal"
        assert user_span.parent_span_id == run_span.span_id
        assert response.json() == {"trace_id": TRACE_ID, "user_span_id": user_span.span_id}
        port = int(server.url.rsplit(":", 1)[1])
        assert {
            "http.request.method": "POST",
            "url.path": "/score",
            "url.scheme": "http",
            "http.route": "/score",
            "http.response.status_code": 200,
            "server.address": "127.0.0.1",
            "server.port": port,
            "client.address": "127.0.0.1",
            "azmlinfsrv.request_id": "trace-req-1",
        }.items() <= server_span.attributes.items()
        assert server_span.attributes["user_agent.original"].startswith("python-requests/")
        assert run_span.attributes["code.function.name"] == "run"
        assert user_span.attributes == {"user.marker": "inside-run"}
        assert server_span.resource["service.name"] == "tracing-e2e"
        assert server_span.resource["deployment.environment"] == "test"
        # init() ran in a trace of its own, before any request.
        [init_span] = receiver.wait_for(lambda span: span.name == "init", timeout=SPAN_TIMEOUT)
        assert init_span.parent_span_id == "" and init_span.trace_id != TRACE_ID
        assert init_span.attributes["code.filepath"] == str(SCRIPT)
        # The per-request log line names the trace.
        deadline = time.monotonic() + 10
        while "POST /score 200" not in server.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        [line] = [line for line in server.logs().splitlines() if "POST /score 200" in line]
        assert line.endswith(f" trace_id={TRACE_ID}")


def test_without_a_traceparent_a_new_trace_starts_and_failures_are_marked(
    receiver: FakeOtlpReceiver, tmp_path: Path
) -> None:
    with serve(tmp_path, receiver.env()) as server:
        ok = score(server)
        failed = score(server, '{"fail": 1}')
        assert ok.status_code == 200 and failed.status_code == 500
        ok_trace = TRACEPARENT_HEADER.match(ok.headers["traceparent"])
        failed_trace = TRACEPARENT_HEADER.match(failed.headers["traceparent"])
        assert ok_trace is not None and failed_trace is not None
        assert ok_trace.group(1) != failed_trace.group(1)
        assert ok.json()["trace_id"] == ok_trace.group(1)
        fresh = spans_of(receiver, ok_trace.group(1), count=3)
        assert fresh["POST /score"].parent_span_id == ""  # a root: nobody called with a context
        broken = spans_of(receiver, failed_trace.group(1), count=3)
        assert broken["POST /score"].status == "error"
        assert broken["POST /score"].attributes["http.response.status_code"] == 500
        assert broken["run"].status == "error" and "exception" in broken["run"].events
        assert broken["user-work"].status == "error"
        # Probes are not traced; the swagger route is.
        assert requests.get(server.url + "/health/ready", timeout=10).status_code == 200
        assert "traceparent" not in requests.get(server.url + "/", timeout=10).headers
        assert "traceparent" in requests.get(server.url + "/swagger.json", timeout=10).headers


def test_app_insights_items_carry_the_trace_id_when_both_are_on(receiver: FakeOtlpReceiver, tmp_path: Path) -> None:
    with FakeIngestion() as ingestion:
        env = receiver.env(
            AML_APP_INSIGHTS_ENABLED="true",
            AML_APP_INSIGHTS_KEY=ingestion.instrumentation_key,
            APPLICATIONINSIGHTS_CONNECTION_STRING=ingestion.connection_string,
        )
        with serve(tmp_path, env) as server:
            response = score(server, traceparent=TRACEPARENT, **{"x-request-id": "both-on"})
            assert response.status_code == 200
            [request] = ingestion.wait_for(
                lambda e: envelope_kind(e) == "request" and envelope_properties(e)["Request Id"] == "both-on",
                timeout=SPAN_TIMEOUT,
            )
            properties = envelope_properties(request)
            assert properties["Trace Id"] == TRACE_ID
            # The fields the items had before are unchanged: the operation id is still the request id.
            assert request["tags"]["ai.operation.id"] == "both-on"
            assert spans_of(receiver, TRACE_ID, count=3)["POST /score"].attributes["azmlinfsrv.request_id"] == "both-on"


def _median_latencies(servers: list[ServerProcess], count: int) -> list[float]:
    """Median latency of each server, the requests interleaved so that the machine's load hits all alike."""
    sessions = [requests.Session() for _ in servers]
    times: list[list[float]] = [[] for _ in servers]
    for _ in range(count):
        for index, server in enumerate(servers):
            started = time.perf_counter()
            response = sessions[index].post(
                server.url + "/score", data="{}", headers={"Content-Type": "application/json"}
            )
            times[index].append(time.perf_counter() - started)
            assert response.status_code == 200
    return [statistics.median(samples) for samples in times]


def test_a_hanging_collector_does_not_slow_requests(tmp_path: Path) -> None:
    with FakeOtlpReceiver(mode="hang", hang_limit=60) as hanging:
        small_queue = hanging.env(OTEL_BSP_MAX_QUEUE_SIZE="64", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="16")
        with serve(tmp_path / "off", {}) as off, serve(tmp_path / "hang", small_queue) as held:
            _median_latencies([off, held], 50)  # warm up; fills the queue of the held server
            baseline, traced = _median_latencies([off, held], 300)
            deadline = time.monotonic() + 10
            while not hanging.hanging and time.monotonic() < deadline:
                time.sleep(0.02)
            assert hanging.hanging >= 1  # the exporter really is stuck on the collector
    # Tracing costs a few microseconds per request; a stuck collector adds nothing to that.
    assert traced < 1.5 * baseline
