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
    in scoring script" with ``x-ms-run-function-failed: True`` (BEHAVIOR.md §3.5), and clients rely on the flag; kept.
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


@pytest.mark.xfail(
    strict=True,
    reason="compat: the document is upstream 1.5.1's, kept as is (BEHAVIOR.md §8); see docs/reliability-fuzz.md",
)
def test_swagger_health_declares_the_content_type_it_returns(undecorated_app: Flask) -> None:
    """schemathesis (content_type_conformance): ``GET /`` answers ``text/html; charset=utf-8`` but Swagger 2
    declares ``application/json`` (top-level ``produces``) and OpenAPI 3 declares ``text/plain``."""
    actual = undecorated_app.test_client().get("/").headers["Content-Type"].split(";")[0]
    v2 = _document(undecorated_app, "2")
    produces = v2["paths"]["/"]["get"].get("produces", v2["produces"])
    v3 = _document(undecorated_app, "3")
    assert actual in produces
    assert actual in v3["paths"]["/"]["get"]["responses"]["200"]["content"]


@pytest.mark.xfail(
    strict=True,
    reason="compat: the document is upstream 1.5.1's, kept as is (BEHAVIOR.md §8); see docs/reliability-fuzz.md",
)
def test_swagger_document_operation_declares_a_json_object(undecorated_app: Flask) -> None:
    """schemathesis (response_schema_conformance, content_type_conformance): ``GET /swagger.json`` answers an
    ``application/json`` object, but the document declares its 200 response as ``{"type": "string"}`` (and, in
    OpenAPI 3, as ``text/plain``)."""
    v2 = _document(undecorated_app, "2")
    assert v2["paths"]["/swagger.json"]["get"]["responses"]["200"]["schema"].get("type") == "object"
    v3 = _document(undecorated_app, "3")
    assert "application/json" in v3["paths"]["/swagger.json"]["get"]["responses"]["200"]["content"]


@pytest.mark.xfail(
    strict=True,
    reason="compat: the document is upstream 1.5.1's, kept as is (BEHAVIOR.md §8); see docs/reliability-fuzz.md",
)
def test_swagger_documents_get_on_score(undecorated_app: Flask) -> None:
    """schemathesis (unsupported_method): ``GET /score`` is served (query parameters become run()'s input) but
    the document lists only ``post``; a client or gateway built from it expects 405."""
    assert undecorated_app.test_client().get("/score?a=1").status_code == 200
    for version in ("2", "3"):
        assert "get" in _document(undecorated_app, version)["paths"]["/score"]


@pytest.mark.xfail(
    strict=True,
    reason="compat: the document is upstream 1.5.1's, kept as is (BEHAVIOR.md §8); see docs/reliability-fuzz.md",
)
def test_swagger_decorated_input_lists_required_parameters(decorated_app: Flask) -> None:
    """schemathesis (positive_data_acceptance): ``{}`` is valid against ServiceInput, which has no ``required``,
    yet is refused with 400 because ``data`` and ``label`` have no default."""
    assert decorated_app.test_client().post("/score", json={}).status_code == 400
    for version, pointer in (("2", ("definitions",)), ("3", ("components", "schemas"))):
        document: Any = _document(decorated_app, version)
        for key in pointer:
            document = document[key]
        assert sorted(document["ServiceInput"].get("required", [])) == ["data", "label"]


@pytest.mark.xfail(
    strict=True,
    reason="compat: the document is upstream 1.5.1's, kept as is (BEHAVIOR.md §8); see docs/reliability-fuzz.md",
)
def test_swagger_score_body_is_required(decorated_app: Flask) -> None:
    """schemathesis (positive_data_acceptance): the body of ``POST /score`` is optional in the document
    (no ``required: true``), but a request without one is refused (415/400)."""
    assert decorated_app.test_client().post("/score").status_code in (400, 415)
    v2 = _document(decorated_app, "2")
    assert v2["paths"]["/score"]["post"]["parameters"][0].get("required") is True
    v3 = _document(decorated_app, "3")
    assert v3["paths"]["/score"]["post"]["requestBody"].get("required") is True


@pytest.mark.xfail(
    strict=True,
    reason="compat: the document is upstream 1.5.1's, kept as is (BEHAVIOR.md §8); see docs/reliability-fuzz.md",
)
def test_swagger_undecorated_input_allows_what_the_server_accepts(undecorated_app: Flask) -> None:
    """schemathesis (negative_data_rejection): an undecorated run() gets any body as text and answers 200, but
    ServiceInput says ``{"type": "object"}``, so a JSON array is 'schema-violating' yet accepted."""
    assert undecorated_app.test_client().post("/score", json=[None, None]).status_code == 200
    schema = _document(undecorated_app, "2")["definitions"]["ServiceInput"]
    assert schema.get("type") in (None, ["object", "array", "string", "number", "integer", "boolean", "null"])


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
            refused = client.post(
                server.url + "/score", data=b"x" * 70_000, headers={"Content-Type": "text/plain"}, timeout=10
            )
            assert refused.status_code == 415
            started = time.monotonic()
            live = requests.get(server.url + "/health/live", timeout=10)
            elapsed = time.monotonic() - started
    assert live.status_code == 200
    assert elapsed < 1.0, f"liveness took {elapsed:.2f} s after a response that left the body unread"
