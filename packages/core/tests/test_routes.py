"""Routes, request ids and the headers every response of upstream's routes carries (docs/compatibility.md#http)."""

from __future__ import annotations

import gc
import json
import socket
import uuid
from collections.abc import Callable
from importlib import metadata

from core_helpers import ECHO
from core_helpers import MakeClient
from flask import Flask
from werkzeug.test import create_environ

UUID_LEN = 36
# What azmlinfsrv sets for the app: the installed version, not upstream's.
SERVER_VERSION = f"azmlinfsrv/{metadata.version('azureml-inference-server-http-core')}"


def test_health_answers_healthy(client: MakeClient) -> None:
    response = client(ECHO).get("/")
    assert response.status_code == 200
    assert response.data == b"Healthy"
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"


def test_request_id_generated_when_absent(client: MakeClient) -> None:
    response = client(ECHO).post("/score", data="{}")
    request_id = response.headers["x-request-id"]
    uuid.UUID(request_id)
    assert response.headers["x-ms-request-id"] == request_id
    assert "x-ms-client-request-id" not in response.headers


def test_request_id_echoed_and_not_overwritten_by_script(client: MakeClient) -> None:
    source = """
    from azureml_inference_server_http.api.aml_response import AMLResponse
    def init(): pass
    def run(data):
        return AMLResponse("", 200, {"x-request-id": "cannot-be-overwritten"})
    """
    response = client(source).post("/score", headers={"x-request-id": "mine"})
    assert response.headers.getlist("x-request-id") == ["mine"]


def test_request_id_limit_is_100_characters(client: MakeClient) -> None:
    app = client(ECHO)
    assert app.post("/score", headers={"x-request-id": "a" * 100}).status_code == 200
    response = app.post("/score", headers={"x-request-id": "a" * 101})
    assert response.status_code == 431
    assert response.get_json() == {"message": "x-request-id must not exceed 100 characters"}
    for header in ("x-request-id", "x-ms-request-id", "x-ms-client-request-id"):
        assert header not in response.headers


def test_request_id_limit_applies_to_health(client: MakeClient) -> None:
    assert client(ECHO).get("/", headers={"x-request-id": "a" * 101}).status_code == 431


def test_client_request_id_table(client: MakeClient) -> None:
    app = client(ECHO)
    cases = [
        ({"x-ms-request-id": "B"}, ("B", "B")),
        ({"x-ms-client-request-id": "C"}, ("C", "C")),
        ({"x-request-id": "A", "x-ms-request-id": "B"}, ("B", "B")),
        ({"x-ms-request-id": "B", "x-ms-client-request-id": "C"}, ("B", "C")),
        ({"x-request-id": "A", "x-ms-client-request-id": "C"}, ("C", "C")),
    ]
    for headers, (legacy, client_id) in cases:
        response = app.post("/score", headers=headers)
        assert response.headers["x-ms-request-id"] == legacy, headers
        assert response.headers["x-ms-client-request-id"] == client_id, headers
        if "x-request-id" in headers:
            assert response.headers["x-request-id"] == headers["x-request-id"]


def test_empty_request_id_is_kept_empty(client: MakeClient) -> None:
    response = client(ECHO).post("/score", headers={"x-request-id": ""})
    assert response.status_code == 200
    assert "x-request-id" not in response.headers
    assert "x-ms-request-id" not in response.headers


def test_client_request_id_limit(client: MakeClient) -> None:
    app = client(ECHO)
    for header in ("x-ms-request-id", "x-ms-client-request-id"):
        assert app.post("/score", headers={header: "c" * 100}).status_code == 200
        response = app.post("/score", headers={header: "c" * 101, "x-request-id": "A"})
        assert response.status_code == 431
        assert response.get_json() == {
            "message": "x-ms-request-id and x-ms-client-request-id must not exceed 100 characters"
        }
        assert response.headers["x-request-id"] == "A"
        assert "x-ms-request-id" not in response.headers
        assert "x-ms-client-request-id" not in response.headers


def test_legacy_request_id_logs_deprecation(client: MakeClient, caplog) -> None:  # type: ignore[no-untyped-def]
    client(ECHO).post("/score", headers={"x-ms-request-id": "1234"})
    assert any("x-ms-request-id header has been deprecated" in r.getMessage() for r in caplog.records)


def test_trace_id_echoed_and_capped(client: MakeClient) -> None:
    app = client(ECHO)
    assert app.post("/score", headers={"TraceId": "test-id"}).headers["TraceId"] == "test-id"
    response = app.post("/score", headers={"TraceId": "t" * 101})
    assert response.status_code == 431
    assert "t" * 101 not in str(response.headers)


def test_server_version_header(client: MakeClient) -> None:
    response = client(ECHO, env={"HTTP_X_MS_SERVER_VERSION": SERVER_VERSION}).post("/score")
    assert response.headers["x-ms-server-version"] == SERVER_VERSION
    assert "x-ms-server-version" not in client(ECHO).post("/score").headers


def test_unknown_path_is_json_404_without_id_headers(client: MakeClient) -> None:
    response = client(ECHO).get("/does_not_exist")
    assert response.status_code == 404
    assert response.get_json() == {
        "message": "The requested URL was not found on the server. If you entered the URL manually please check "
        "your spelling and try again."
    }
    assert response.headers["x-ms-run-function-failed"] == "False"
    assert "x-request-id" not in response.headers
    assert client(ECHO).get("/score/").status_code == 404


def test_wrong_method_is_json_405(client: MakeClient) -> None:
    app = client(ECHO)
    for method, path in (
        ("DELETE", "/"),
        ("POST", "/"),
        ("PUT", "/score"),
        ("POST", "/swagger.json"),
    ):
        response = app.open(path, method=method)
        assert response.status_code == 405, (method, path)
        assert response.get_json() == {"message": "The method is not allowed for the requested URL."}


def test_error_bodies_use_json_dumps_spacing(client: MakeClient) -> None:
    response = client("def init(): pass\ndef run(data): raise ValueError('x')\n").post("/score")
    assert response.data == (
        b'{"message": "An unexpected error occurred in scoring script. Check the logs for more info."}'
    )


def test_options_score_does_not_call_run(client: MakeClient) -> None:
    source = """
    def init(): pass
    def run(data): raise RuntimeError("must not be called")
    """
    response = client(source).options("/score")
    assert response.status_code == 200
    assert response.data == b""
    assert response.headers["x-ms-run-function-failed"] == "False"
    assert "x-ms-run-fn-exec-ms" not in response.headers


def test_head_score_is_405_for_non_raw(client: MakeClient) -> None:
    response = client(ECHO).head("/score")
    assert response.status_code == 405


def test_readiness_and_liveness_routes(client: MakeClient) -> None:
    app = client(ECHO)
    for prefix in ("", "/v2"):
        assert app.get(f"{prefix}/health/live").status_code == 200
        ready = app.get(f"{prefix}/health/ready")
        assert ready.status_code == 200
        assert json.loads(ready.data)["phase"] == "ready"


def test_metrics_count_score_requests(client: MakeClient) -> None:
    app = client(ECHO)
    for _ in range(3):
        app.post("/score", data="{}")
    text = app.get("/metrics").get_data(as_text=True)
    assert 'azmlinfsrv_requests_total{method="POST",route="/score",status="200"} 3.0' in text
    assert "azmlinfsrv_run_duration_seconds_count 3.0" in text


def test_metrics_can_be_turned_off(client: MakeClient) -> None:
    assert client(ECHO, env={"AZMLINFSRV_METRICS_ENABLED": "false"}).get("/metrics").status_code == 404


def test_cors_exact_origin(client: MakeClient) -> None:
    app = client(ECHO, env={"AML_CORS_ORIGINS": "www.microsoft.com,  https://bing.com"})
    response = app.options("/score", headers={"Origin": "www.microsoft.com"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "www.microsoft.com"
    assert "Access-Control-Allow-Origin" not in app.options("/score", headers={"Origin": "www.azure.com"}).headers
    lookalike = app.post("/score", headers={"Origin": "https://bing.com.evil.example"})
    assert "Access-Control-Allow-Origin" not in lookalike.headers
    preflight = app.options(
        "/score",
        headers={
            "Origin": "https://bing.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert preflight.headers["Access-Control-Allow-Headers"] == "content-type"


def test_cors_star_echoes_origin(client: MakeClient) -> None:
    response = client(ECHO, env={"AML_CORS_ORIGINS": "*"}).get("/", headers={"Origin": "https://a.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"


def test_body_over_limit_is_413_before_reading(client: MakeClient) -> None:
    app = client(ECHO, env={"MAX_REQUEST_BODY_MB": "1"})
    response = app.post("/score", data=b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413
    assert "exceeds the limit" in response.get_json()["message"]
    assert app.post("/score", data=b"x" * (1024 * 1024)).status_code == 200


def test_options_on_health_and_swagger_carry_ids(client: MakeClient) -> None:
    app = client(ECHO, env={"HTTP_X_MS_SERVER_VERSION": SERVER_VERSION})
    for path in ("/", "/swagger.json"):
        response = app.options(path, headers={"x-request-id": "opt"})
        assert response.status_code == 200
        assert response.data == b""
        assert response.headers["x-request-id"] == "opt"
        assert response.headers["x-ms-server-version"] == SERVER_VERSION
        assert sorted(m.strip() for m in response.headers["Allow"].split(",")) == ["GET", "HEAD", "OPTIONS"]


FLASK_CONTEXT = """
import flask

def init():
    pass

def run(data):
    return {"probe": flask.request.headers.get("X-Probe"), "app": flask.current_app.name, "data": data}
"""


def test_flask_request_and_app_are_available_in_run(client: MakeClient) -> None:
    """compat: /score skips Flask's dispatch pipeline, but run() still sees flask.request and current_app."""
    response = client(FLASK_CONTEXT).post("/score", data='{"a": 1}', headers={"X-Probe": "yes"})
    assert response.status_code == 200
    assert response.json == {"probe": "yes", "app": "azureml_inference_server_http", "data": '{"a": 1}'}


def test_score_route_methods_outside_get_and_post_take_flask_routing(client: MakeClient) -> None:
    app = client(ECHO)
    assert app.put("/score").status_code == 405
    assert app.open("/score", method="OPTIONS").status_code == 200
    assert app.get("/score/").status_code == 404


def test_generated_request_ids_are_version_4_uuids(client: MakeClient) -> None:
    app = client(ECHO)
    ids = {app.post("/score", data="{}").headers["x-request-id"] for _ in range(50)}
    assert len(ids) == 50
    for request_id in ids:
        parsed = uuid.UUID(request_id)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, request_id)


# -- the direct score route (app.py _DirectScoreRoute): Flask's routing skipped, Flask's request kept ----------------


def test_score_route_keeps_request_endpoint_and_url_for(client: MakeClient) -> None:
    source = """
    from flask import request, url_for
    def init(): pass
    def run(data):
        return {
            "endpoint": request.endpoint,
            "rule": request.url_rule.rule,
            "view_args": request.view_args,
            "swagger": url_for("swagger"),
            "external": url_for("score", _external=True),
        }
    """
    response = client(source).post("/score", data="{}", base_url="http://models.example:8080")
    assert response.get_json() == {
        "endpoint": "score",
        "rule": "/score",
        "view_args": {},
        "swagger": "/swagger.json",
        "external": "http://models.example:8080/score",
    }


def test_score_request_leaves_no_reference_cycles(make_app: Callable[..., Flask]) -> None:
    """Garbage in cycles waits for the collector, whose full passes stall every request in the process; a score
    request must be freed by reference counting alone (Werkzeug's routing matcher alone leaves a cycle per match)."""
    app = make_app(ECHO)
    body = b'{"data": 1}'
    left, right = socket.socketpair()  # a client connection, as gunicorn gives: run() stays in the calling thread

    def call() -> bytes:
        environ = create_environ("/score", method="POST", data=body, content_type="application/json")
        environ["gunicorn.socket"] = left
        statuses: list[str] = []
        result = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
        try:
            return b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()

    try:
        for _ in range(5):
            assert json.loads(call()) == body.decode()  # ECHO returns the body as a string
        gc.collect()
        gc.disable()
        try:
            for _ in range(50):
                call()
            unreachable = gc.collect()
        finally:
            gc.enable()
    finally:
        left.close()
        right.close()
    assert unreachable == 0


def test_responses_the_server_builds_keep_werkzeug_headers(client: MakeClient) -> None:
    """The plain-response shortcut hands over exactly what Werkzeug's conversion would."""
    app = client(ECHO)
    response = app.post("/score", data='{"a": 1}', headers={"x-request-id": "rid"})
    assert response.status_code == 200
    expected = json.dumps('{"a": 1}').encode()  # ECHO returns the body as a string
    assert response.data == expected
    assert response.headers["Content-Length"] == str(len(expected))
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["x-ms-run-function-failed"] == "False"
    assert response.headers["x-request-id"] == "rid"
    head = app.head("/")
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Content-Length"] == "7"  # the length of "Healthy", as Werkzeug gives for HEAD


def test_a_script_redirect_takes_werkzeug_path(client: MakeClient) -> None:
    source = """
    from flask import redirect
    def init(): pass
    def run(data):
        return redirect("/swagger.json")
    """
    response = client(source).post("/score", data="{}")
    assert response.status_code == 302
    assert response.headers["Location"] == "/swagger.json"
