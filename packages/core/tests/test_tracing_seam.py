"""The tracing seam: off by default at no cost, and with a tracer the spans, headers and log line it promises."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import pytest
from flask import Flask

from azureml_inference_server_http.config import ServerConfig
from azureml_inference_server_http.server import state as state_module
from azureml_inference_server_http.server import tracing
from azureml_inference_server_http.server.app import _DirectScoreRoute
from azureml_inference_server_http.server.tracing import NO_TRACING
from azureml_inference_server_http.server.tracing import TracingMiddleware
from azureml_inference_server_http.server.tracing import current_trace_id
from azureml_inference_server_http.server.tracing import load_tracer

SCRIPT = """
from azureml_inference_server_http.server.tracing import current_trace_id

def init():
    pass

def run(data):
    if "boom" in str(data):
        raise ValueError("boom")
    return {"trace_id": current_trace_id()}
"""
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        (ENDPOINT, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({**ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_SERVICE_NAME": "model"}, False),  # naming a service does not turn tracing on
    ],
)
def test_tracing_enabled_rule(environ: dict[str, str], enabled: bool) -> None:
    config = ServerConfig.from_env({"AML_APP_ROOT": "/nonexistent-app-root", **environ})
    assert config.tracing_enabled is enabled


# -- off ---------------------------------------------------------------------------------------------------------------


def test_without_an_endpoint_no_plugin_is_looked_up_and_nothing_is_added(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    looked_up: list[str] = []
    monkeypatch.setattr(tracing.metadata, "entry_points", lambda group: looked_up.append(group) or [])
    app = make_app(SCRIPT)
    state = state_module_state(app)
    assert state.tracer is NO_TRACING and not state.tracing_on
    assert looked_up == []  # not even the entry-point scan at boot
    # The request path has no tracing layer at all: the score route's own shortcut is the outermost WSGI app.
    assert isinstance(app.wsgi_app, _DirectScoreRoute)
    with caplog.at_level(logging.INFO, logger="azmlinfsrv"):
        response = app.test_client().post("/score", json={"data": 1}, headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    assert "traceparent" not in response.headers
    assert response.get_json() == {"trace_id": ""}
    [line] = [message for message in caplog.messages if message.startswith("POST /score 200 ")]
    assert "trace_id" not in line


def test_an_endpoint_without_the_plugin_warns_once_and_stays_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tracing.metadata, "entry_points", lambda group: [])
    with caplog.at_level(logging.WARNING, logger="azmlinfsrv.trace"):
        assert load_tracer(ServerConfig(tracing_enabled=True)) is None
    [message] = caplog.messages
    assert "pip install azureml-inference-server-http-otel" in message


def test_a_failing_plugin_is_logged_and_tracing_stays_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class EntryPoint:
        def load(self) -> Callable[[ServerConfig], object]:
            def factory(config: ServerConfig) -> object:
                raise RuntimeError("exporter misconfigured")

            return factory

    monkeypatch.setattr(tracing.metadata, "entry_points", lambda group: [EntryPoint()])
    with caplog.at_level(logging.ERROR, logger="azmlinfsrv.trace"):
        assert load_tracer(ServerConfig(tracing_enabled=True)) is None
    assert "Could not start tracing" in caplog.text and "exporter misconfigured" in caplog.text


def test_no_tracing_span_is_a_null_context() -> None:
    with NO_TRACING.span("run", {}) as inside:
        assert inside is None
    assert current_trace_id() == ""


# -- on, with a recording tracer ------------------------------------------------------------------------------------


@dataclass
class FakeSpan:
    name: str
    attributes: dict[str, Any]
    parent: FakeSpan | None
    trace_id: str = TRACE_ID
    traceparent: str = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    environ_traceparent: str | None = None
    status_code: int | None = None
    error: BaseException | None = None
    ended: bool = False
    children: list[FakeSpan] = field(default_factory=list)

    def finish(self, status_code: int, attributes: Mapping[str, Any], error: BaseException | None) -> None:
        self.attributes.update(attributes)
        self.status_code = status_code
        self.error = error
        self.ended = True
        FakeTracer.current = self.parent


class FakeTracer:
    """Records what the server asks of a tracer; "current" is one slot (the tests make one request at a time)."""

    current: FakeSpan | None = None

    def __init__(self) -> None:
        self.spans: list[FakeSpan] = []
        self.shut_down = False
        FakeTracer.current = None

    def start_request(self, environ: Mapping[str, Any], name: str, attributes: Mapping[str, Any]) -> FakeSpan:
        span = FakeSpan(name, dict(attributes), FakeTracer.current, environ_traceparent=environ.get("HTTP_TRACEPARENT"))
        self.spans.append(span)
        FakeTracer.current = span
        return span

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, Any]) -> Iterator[FakeSpan]:
        span = FakeSpan(name, dict(attributes), FakeTracer.current)
        self.spans.append(span)
        FakeTracer.current = span
        try:
            yield span
        except BaseException as exc:
            span.error = exc
            raise
        finally:
            span.ended = True
            FakeTracer.current = span.parent

    def shutdown(self, timeout: float) -> None:
        self.shut_down = True


def state_module_state(app: Flask) -> state_module.ServerState:
    from azureml_inference_server_http.server import get_state

    return get_state(app)


@pytest.fixture
def traced_app(make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> tuple[Flask, FakeTracer]:
    tracer = FakeTracer()
    configs: list[ServerConfig] = []

    def load(config: ServerConfig) -> FakeTracer:
        configs.append(config)
        return tracer

    monkeypatch.setattr(state_module, "load_tracer", load)
    app = make_app(SCRIPT, env=ENDPOINT)
    assert [config.tracing_enabled for config in configs] == [True]
    return app, tracer


def test_init_runs_in_a_span_of_its_own(traced_app: tuple[Flask, FakeTracer]) -> None:
    app, tracer = traced_app
    [init] = tracer.spans
    assert init.name == "init" and init.parent is None and init.ended
    assert init.attributes["code.function.name"] == "init"
    assert init.attributes["code.filepath"].endswith("score.py")


def test_a_request_gets_a_server_span_a_run_span_and_a_traceparent(
    traced_app: tuple[Flask, FakeTracer], caplog: pytest.LogCaptureFixture
) -> None:
    app, tracer = traced_app
    assert isinstance(app.wsgi_app, TracingMiddleware)
    with caplog.at_level(logging.INFO, logger="azmlinfsrv"):
        response = app.test_client().post(
            "/score?verbose=1",
            json={"data": 1},
            headers={"traceparent": TRACEPARENT, "x-request-id": "req-1", "User-Agent": "probe/1.0"},
        )
    assert response.status_code == 200
    _, server, run = tracer.spans
    assert server.name == "POST /score" and server.parent is None and server.ended
    assert server.environ_traceparent == TRACEPARENT  # the tracer gets the incoming context to continue
    assert server.status_code == 200 and server.error is None
    assert {
        "http.request.method": "POST",
        "url.path": "/score",
        "url.query": "verbose=1",
        "url.scheme": "http",
        "http.route": "/score",
        "server.address": "localhost",
        "user_agent.original": "probe/1.0",
        "http.response.status_code": 200,
        "azmlinfsrv.request_id": "req-1",
    }.items() <= server.attributes.items()
    assert run.name == "run" and run.parent is server and run.ended
    assert run.attributes["code.function.name"] == "run"
    assert response.headers["traceparent"] == server.traceparent
    # Inside run() and on the per-request log line, the request's trace id.
    assert response.get_json() == {"trace_id": TRACE_ID}
    [line] = [message for message in caplog.messages if message.startswith("POST /score?verbose=1 200 ")]
    assert line.endswith(f" trace_id={TRACE_ID}")
    assert current_trace_id() == ""  # reset after the request


def test_a_failing_run_marks_both_spans(traced_app: tuple[Flask, FakeTracer]) -> None:
    app, tracer = traced_app
    response = app.test_client().post("/score", json={"data": "boom"})
    assert response.status_code == 500
    _, server, run = tracer.spans
    assert isinstance(run.error, ValueError)
    assert server.status_code == 500 and server.attributes["error.type"] == "500"


def test_probes_are_not_traced_and_other_routes_are_named_by_their_route(
    traced_app: tuple[Flask, FakeTracer],
) -> None:
    app, tracer = traced_app
    client = app.test_client()
    for path in ("/", "/health/live", "/health/ready", "/v2/health/ready", "/metrics"):
        response = client.get(path)
        assert "traceparent" not in response.headers, path
    assert [span.name for span in tracer.spans] == ["init"]
    assert client.get("/swagger.json").headers["traceparent"]
    assert client.get("/no/such/route").status_code == 404
    assert [span.name for span in tracer.spans[1:]] == ["GET /swagger.json", "GET"]
    assert tracer.spans[2].status_code == 404 and "http.route" not in tracer.spans[2].attributes
