"""One regression test per problem the fuzz suite found (see docs/reliability-fuzz.md, "Findings").

Each test pins the smallest input that showed the problem, so it keeps failing until the problem is fixed and fails
again if it comes back. The fuzzers themselves find these again too, but only when their budget happens to reach
the input; these tests do every time.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azmlinfsrv_testing import latency
from azmlinfsrv_testing import time_limit
from azureml_inference_server_http.config import ServerConfig
from azureml_inference_server_http.exceptions import ConfigFileError
from azureml_inference_server_http.server import create_app
from azureml_inference_server_http.server.cors import CorsPolicy
from flask import Flask

from .servers import RESOURCES
from .servers import ServerProcess
from .smuggling import CANARY
from .smuggling import END
from .smuggling import parse_responses

DECORATED = RESOURCES / "decorated_score.py"
UNDECORATED = RESOURCES / "undecorated_score.py"


@pytest.fixture(scope="module")
def undecorated_app() -> Flask:
    return create_app(entry_script=str(UNDECORATED), environ={"AML_APP_ROOT": str(RESOURCES)})


@pytest.fixture(scope="module")
def decorated_app() -> Flask:
    return create_app(entry_script=str(DECORATED), environ={"AML_APP_ROOT": str(RESOURCES)})


def _document(app: Flask, version: str) -> dict[str, Any]:
    response = app.test_client().get(f"/swagger.json?version={version}")
    assert response.status_code == 200
    document: dict[str, Any] = json.loads(response.get_data())
    return document


def _openapi(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document: dict[str, Any] = json.loads(response.get_data())
    return document


def _resolve(document: dict[str, Any], schema: Any) -> Any:
    """Follow ``$ref`` (local references only) until a schema that is not a reference."""
    while isinstance(schema, dict) and "$ref" in schema:
        node: Any = document
        for key in schema["$ref"].removeprefix("#/").split("/"):
            node = node[key]
        schema = node
    return schema


# --- found by the parser fuzzers ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/score", "/swagger.json"])
def test_query_with_raw_non_utf8_bytes_is_400(undecorated_app: Flask, path: str) -> None:
    """Fuzz target ``query`` / ``wsgi_*``: a query string holding raw (not %-encoded) non-UTF-8 bytes, as a WSGI
    server other than gunicorn or waitress may pass it, made ``request.args`` raise UnicodeDecodeError: 500."""
    response = undecorated_app.test_client().get(path, environ_overrides={"QUERY_STRING": "a=\xff"})
    assert response.status_code == 400, response.get_data()
    assert "message" in json.loads(response.get_data())


def test_config_file_nested_too_deep_is_a_config_file_error(tmp_path: Path) -> None:
    """Fuzz target ``config``: a config.json nested deeper than Python's recursion limit raised RecursionError
    from ``ServerConfig.from_env`` instead of the declared ConfigFileError."""
    config = tmp_path / "config.json"
    config.write_text("[" * 5000 + "]" * 5000, encoding="utf-8")
    with pytest.raises(ConfigFileError):
        ServerConfig.from_env({"AZUREML_CONFIG_FILE": str(config)})


def test_cors_entry_is_not_case_folded_beyond_ascii() -> None:
    """Fuzz target ``cors``: entries are lower-cased with ``str.lower()``, which folds U+212A KELVIN SIGN to an
    ASCII ``k``; a configured ``https://\u212aevin.example`` then allowed the different origin
    ``https://kevin.example``."""
    policy = CorsPolicy.parse("https://\u212aevin.example")
    assert policy is not None
    assert not policy.allows("https://kevin.example")


# --- found by schemathesis over /swagger.json --------------------------------------------------------


def test_decorated_schema_violating_value_is_a_user_script_error(decorated_app: Flask) -> None:
    """schemathesis (not_a_server_error): a value of the wrong type for an ``@input_schema`` parameter is refused
    by inference-schema inside the decorator. compat: upstream 1.5.1 answers this 500 "An unexpected error occurred
    in scoring script" with ``x-ms-run-function-failed: True``, and clients rely on the flag; kept
    (docs/compatibility.md#schema-mode).
    What must never happen is a server error: the failure is attributed to the script, and the worker lives."""
    body = {"data": [[1.0, 2.0, 3.0]], "label": "a", "scale": {}}
    client = decorated_app.test_client()
    response = client.post("/score", json=body)
    assert response.status_code == 500, (response.status_code, response.get_data())
    assert response.headers["x-ms-run-function-failed"] == "True"
    assert response.get_json() == {
        "message": "An unexpected error occurred in scoring script. Check the logs for more info."
    }
    assert client.post("/score", json={"data": [[1.0, 2.0, 3.0]], "label": "a"}).status_code == 200


# Findings 9 to 14 are inaccuracies of upstream's /swagger.json, kept byte for byte (compat,
# docs/compatibility.md#swagger). Each test below checks the point against /openapi.json, our exact document, and
# the server's actual answer; test_swagger_is_still_upstreams_document checks that /swagger.json still has all of
# them.


def test_openapi_health_declares_the_content_type_it_returns(undecorated_app: Flask) -> None:
    """Finding 9, schemathesis (content_type_conformance): ``GET /`` answers ``text/html; charset=utf-8``."""
    response = undecorated_app.test_client().get("/")
    assert response.status_code == 200 and response.get_data() == b"Healthy"
    ok = _openapi(undecorated_app)["paths"]["/"]["get"]["responses"]["200"]
    assert list(ok["content"]) == [response.mimetype]
    assert ok["content"][response.mimetype]["schema"]["const"] == "Healthy"


@pytest.mark.parametrize("path", ["/swagger.json", "/openapi.json"])
def test_openapi_document_operations_declare_a_json_object(undecorated_app: Flask, path: str) -> None:
    """Finding 10, schemathesis (response_schema_conformance, content_type_conformance): ``GET /swagger.json``
    answers an ``application/json`` object (so does ``GET /openapi.json``)."""
    response = undecorated_app.test_client().get(path)
    assert response.status_code == 200
    assert isinstance(json.loads(response.get_data()), dict)
    ok = _openapi(undecorated_app)["paths"][path]["get"]["responses"]["200"]
    assert list(ok["content"]) == [response.mimetype] == ["application/json"]
    assert ok["content"]["application/json"]["schema"] == {"type": "object"}


def test_openapi_documents_get_on_score(undecorated_app: Flask, decorated_app: Flask) -> None:
    """Finding 11, schemathesis (unsupported_method): ``GET /score`` is served (the query becomes run()'s input);
    for a decorated run() its parameters are run()'s, each value JSON."""
    assert undecorated_app.test_client().get("/score?a=1").status_code == 200
    assert "get" in _openapi(undecorated_app)["paths"]["/score"]
    query = 'data=[[1.0,2.0,3.0]]&label="a"'
    assert decorated_app.test_client().get(f"/score?{query}").status_code == 200
    parameters = _openapi(decorated_app)["paths"]["/score"]["get"]["parameters"]
    assert [(p["name"], p["in"], list(p["content"])) for p in parameters] == [
        (name, "query", ["application/json"]) for name in ("data", "label", "scale")
    ]


def test_openapi_decorated_input_lists_required_parameters(decorated_app: Flask) -> None:
    """Finding 12, schemathesis (positive_data_acceptance): ``{}`` is refused with 400 because ``data`` and ``label``
    have no default; a row of the wrong length is refused (500, finding 8) because the sample has 3 columns."""
    client = decorated_app.test_client()
    assert client.post("/score", json={}).status_code == 400
    assert client.post("/score", json={"data": [[1.0, 2.0, 3.0]], "label": "a"}).status_code == 200
    assert client.post("/score", json={"data": [[1.0]], "label": "a"}).status_code == 500
    document = _openapi(decorated_app)
    service_input = document["components"]["schemas"]["ServiceInput"]
    assert service_input["required"] == ["data", "label"]
    rows = service_input["properties"]["data"]
    assert rows["minItems"] == 1
    assert (rows["items"]["minItems"], rows["items"]["maxItems"]) == (3, 3)
    parameters = document["paths"]["/score"]["get"]["parameters"]
    assert {p["name"]: p["required"] for p in parameters} == {"data": True, "label": True, "scale": False}


def test_openapi_score_body_is_required_where_the_server_requires_it(
    decorated_app: Flask, undecorated_app: Flask
) -> None:
    """Finding 13, schemathesis (positive_data_acceptance): a decorated run() needs a body (none: 415/400); an
    undecorated one takes none (run() gets an empty string)."""
    assert decorated_app.test_client().post("/score").status_code in (400, 415)
    assert _openapi(decorated_app)["paths"]["/score"]["post"]["requestBody"]["required"] is True
    assert undecorated_app.test_client().post("/score").status_code == 200
    assert _openapi(undecorated_app)["paths"]["/score"]["post"]["requestBody"]["required"] is False


@pytest.mark.parametrize("body", [[None, None], "text", 1, None, {}], ids=repr)
def test_openapi_undecorated_input_allows_what_the_server_accepts(undecorated_app: Flask, body: Any) -> None:
    """Finding 14, schemathesis (negative_data_rejection): an undecorated run() gets any body as text and answers
    200, so its input is any JSON value (or any text), not an object."""
    client = undecorated_app.test_client()
    assert client.post("/score", json=body).status_code == 200
    assert client.post("/score", data="not JSON", content_type="text/plain").status_code == 200
    document = _openapi(undecorated_app)
    content = document["paths"]["/score"]["post"]["requestBody"]["content"]
    assert _resolve(document, content["application/json"]["schema"]) == {}
    assert content["text/plain"]["schema"] == {"type": "string"}


def test_swagger_is_still_upstreams_document(undecorated_app: Flask, decorated_app: Flask) -> None:
    """compat: ``/swagger.json`` keeps every inaccuracy above, as upstream 1.5.1 serves it.

    See docs/compatibility.md#generated-swagger.
    """
    v2, v3 = _document(undecorated_app, "2"), _document(undecorated_app, "3")
    # 9: GET / declared as application/json (v2) and text/plain (v3)
    assert v2["produces"] == ["application/json"] and "produces" not in v2["paths"]["/"]["get"]
    assert list(v3["paths"]["/"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    # 10: GET /swagger.json declared as a string (and text/plain in v3)
    assert v2["paths"]["/swagger.json"]["get"]["responses"]["200"]["schema"] == {"type": "string"}
    assert v3["paths"]["/swagger.json"]["get"]["responses"]["200"]["content"] == {
        "text/plain": {"schema": {"type": "string"}}
    }
    for document in (v2, v3):
        # 11: POST only on /score
        assert list(document["paths"]["/score"]) == ["post"]
    # 14: the undecorated input is an object
    assert v2["definitions"]["ServiceInput"] == {"type": "object", "example": {}}
    assert v3["components"]["schemas"]["ServiceInput"] == {"type": "object", "example": {}}
    d2, d3 = _document(decorated_app, "2"), _document(decorated_app, "3")
    # 12: no "required" in ServiceInput
    assert "required" not in d2["definitions"]["ServiceInput"]
    assert "required" not in d3["components"]["schemas"]["ServiceInput"]
    # 13: the body is optional
    assert "required" not in d2["paths"]["/score"]["post"]["parameters"][0]
    assert "required" not in d3["paths"]["/score"]["post"]["requestBody"]


# --- found by the request-smuggling probes -----------------------------------------------------------


@pytest.fixture(scope="module", params=["gunicorn", "waitress"])
def real_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log_dir = tmp_path_factory.mktemp(f"regressions-{request.param}")
    with ServerProcess(UNDECORATED, log_dir, server=str(request.param), env={"MAX_REQUEST_BODY_MB": "1"}) as server:
        yield server


def _exchange(port: int, raw: bytes, wait: float = 3.0) -> tuple[bytes, bool]:
    """Send ``raw``; read until the server closes or ``wait`` seconds pass. Returns (data, closed)."""
    data = b""
    deadline = time.monotonic() + wait
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(raw)
        sock.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return data, True
            if not chunk:
                return data, True
            data += chunk
    return data, False


def _post(*headers: str) -> bytes:
    return (
        "POST /score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + "".join(f"{h}\r\n" for h in headers)
        + "\r\n"
    ).encode("latin-1")


@pytest.mark.parametrize(
    "body",
    [
        b"0x0\r\n\r\n",
        b"-0\r\n\r\n",
        b"0_0\r\n\r\n",
        b"0\n\n",
        b"5\r\nab\r\n0\r\n\r\n",
        b"0\r\nContent-Length: 5\r\n\r\n",
    ],
    ids=["hex-prefix", "signed", "underscore", "bare-lf", "short-data", "trailer-content-length"],
)
def test_malformed_chunked_body_is_never_5xx(real_server: ServerProcess, body: bytes) -> None:
    """Smuggling probes ``chunk-*`` on gunicorn: gunicorn's chunked reader raises (InvalidChunkSize,
    InvalidHeaderName, ...) from ``wsgi.input.read()`` inside the app, and the app answers 500 'unexpected internal
    error' for what is a malformed request."""
    # The canary request after the body gives a server that waits for a proper line ending something to read.
    data, _ = _exchange(real_server.port, _post("Transfer-Encoding: chunked") + body + CANARY)
    responses, _, _ = parse_responses(data)
    assert responses, f"no response: {data!r}"
    assert responses[0].status < 500, f"{responses[0].status} {responses[0].body[:200]!r}"


def test_content_length_with_transfer_encoding_gets_one_response_and_close(real_server: ServerProcess) -> None:
    """Smuggling probe ``cl-te`` on waitress: with both headers, waitress reads the chunked body, ignores
    Content-Length and keeps the connection, so the request hidden after the last chunk is answered too
    (RFC 9112 §6.3: reject, or close the connection after responding)."""
    body = END + CANARY
    data, closed = _exchange(
        real_server.port, _post("Transfer-Encoding: chunked", f"Content-Length: {len(body)}") + body
    )
    responses, extra, _ = parse_responses(data)
    assert len(responses) + extra == 1, f"{len(responses) + extra} responses: {data!r}"
    assert closed, "connection kept open"


def test_request_over_the_body_limit_closes_the_connection(real_server: ServerProcess) -> None:
    """Smuggling probe ``cl-overflow`` on gunicorn: the app answers 413 from Content-Length and asks for
    ``Connection: close``, but gunicorn drops that hop-by-hop header, answers ``Connection: keep-alive`` and keeps
    reading the announced body from the connection."""
    data, closed = _exchange(real_server.port, _post("Content-Length: 209715200") + b"{" * 1000)
    responses, _, _ = parse_responses(data)
    assert responses and responses[0].status == 413, data[:300]
    assert responses[0].headers.get("connection", "").lower() == "close", responses[0].headers
    assert closed, "connection kept open after 413"


@pytest.mark.parametrize("server_kind", ["gunicorn", "waitress"])
def test_unread_body_does_not_stall_the_server(server_kind: str, tmp_path: Path) -> None:
    """Found by the R12 timing check: on gunicorn, after a response that leaves about 70 KB of the request body
    unread (here a 415), the worker's main loop closes that connection 'gracefully', blocking for up to 2 s while it
    waits for the client's FIN (gunicorn ``util.close_graceful``, called from ``ThreadWorker.finish_request``). Every
    other request, liveness included, waits meanwhile; a client repeating this keeps the worker stalled."""
    import requests

    with ServerProcess(DECORATED, tmp_path / "server", server=server_kind) as server:
        with requests.Session() as client:  # keeps its connection open after the response, as pooled clients do
            baseline = latency(lambda: requests.get(server.url + "/health/live", timeout=30))
            refused = client.post(
                server.url + "/score", data=b"x" * 70_000, headers={"Content-Type": "text/plain"}, timeout=10
            )
            assert refused.status_code == 415
            started = time.monotonic()
            live = requests.get(server.url + "/health/live", timeout=10)
            elapsed = time.monotonic() - started
    assert live.status_code == 200
    # The stall lasts up to 2 s; a liveness probe otherwise costs what it cost before the refused request.
    limit = time_limit(baseline, baseline, failure=baseline + 2.0)
    assert elapsed < limit, f"liveness took {elapsed:.2f} s after a response that left the body unread ({limit:.2f})"
