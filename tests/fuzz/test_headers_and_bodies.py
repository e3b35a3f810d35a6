"""R7 (header limits and injection) and R12 (content types no parser but JSON may touch), over real servers.

R7: 100-character ids are echoed, 101 give 431 JSON; oversized and numerous headers give a 4xx; CR, LF and NUL in
a header never inject a header into the response; nothing gives a 5xx.
R12: a decorated run() answers 415 to every non-JSON content type, quickly, whatever the size of the body; no
deserializer other than JSON ever runs (a pickle that would create a file when loaded, a 10 000-part multipart body).
"""

from __future__ import annotations

import io
import json
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azmlinfsrv_testing import latency
from azmlinfsrv_testing import time_limit
from azureml_inference_server_http.server import create_app

from .servers import RESOURCES
from .servers import ServerProcess
from .smuggling import parse_responses
from .test_regressions import _exchange

DECORATED = RESOURCES / "decorated_score.py"
UNDECORATED = RESOURCES / "undecorated_score.py"


@pytest.fixture(scope="module", params=["gunicorn", "waitress"])
def decorated_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    log_dir = tmp_path_factory.mktemp(f"headers-{request.param}")
    with ServerProcess(DECORATED, log_dir, server=str(request.param)) as server:
        yield server


def _json_message(response: requests.Response) -> str:
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    message = response.json()["message"]
    assert isinstance(message, str)
    return message


# --- R7 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/score", "/swagger.json"])
def test_id_headers_at_and_over_the_limit(decorated_server: ServerProcess, path: str) -> None:
    url = decorated_server.url + path
    method = "POST" if path == "/score" else "GET"
    body: dict[str, Any] = {"data": [[1.0, 2.0, 3.0]], "label": "a"}
    ok = requests.request(method, url, json=body, headers={"x-request-id": "r" * 100, "TraceId": "t" * 100}, timeout=10)
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-request-id"] == "r" * 100
    assert ok.headers["TraceId"] == "t" * 100
    for headers in ({"x-request-id": "r" * 101}, {"x-ms-client-request-id": "c" * 101}, {"TraceId": "t" * 101}):
        refused = requests.request(method, url, json=body, headers=headers, timeout=10)
        assert refused.status_code == 431, (headers, refused.status_code, refused.text)
        assert "must not exceed 100 characters" in _json_message(refused)
        for name, value in headers.items():
            assert refused.headers.get(name) != value, f"{name} echoed although refused"


# gunicorn's limits: 8190 bytes per header field, 100 fields (docs/compatibility.md#score). waitress has one
# limit, 256 KiB for the whole header block, so below that it accepts what gunicorn refuses; both must refuse
# beyond their limits.
@pytest.mark.parametrize(
    ("name", "headers", "refused_by"),
    [
        ("one-9000-byte-header", {"X-Big": "b" * 9000}, ("gunicorn",)),
        ("one-70000-byte-header", {"X-Big": "b" * 70000}, ("gunicorn",)),
        ("150-headers", {f"X-H{i}": "v" for i in range(150)}, ("gunicorn",)),
        ("one-300000-byte-header", {"X-Big": "b" * 300_000}, ("gunicorn", "waitress")),
        ("long-id-10000", {"x-request-id": "r" * 10000}, ("gunicorn", "waitress")),
    ],
)
def test_oversized_headers_are_refused_never_5xx(
    decorated_server: ServerProcess, name: str, headers: dict[str, str], refused_by: tuple[str, ...]
) -> None:
    try:
        response = requests.get(decorated_server.url + "/", headers=headers, timeout=10)
    except requests.ConnectionError:
        assert decorated_server.server in refused_by, f"{name}: connection dropped"
        return  # dropping the connection is an acceptable refusal for headers this large
    assert response.status_code < 500, (name, response.status_code, response.text[:200])
    if decorated_server.server in refused_by:
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:200])


@pytest.mark.parametrize(
    "raw_header",
    [
        b"x-request-id: a\rInjected: 1",
        b"x-request-id: a\nInjected: 1",
        b"x-request-id: a\x00Injected: 1",
        b"x-request-id: a\r\n Injected: 1",
        b"TraceId: a\r\n\tInjected: 1",
        b"x-request-id: caf\xe9",
        b"x-request-id: %0d%0aInjected: 1",
    ],
    ids=["cr", "lf", "nul", "obs-fold", "obs-fold-tab", "latin-1", "percent-encoded"],
)
def test_control_characters_never_inject_headers(decorated_server: ServerProcess, raw_header: bytes) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + raw_header + b"\r\nConnection: close\r\n\r\n"
    data, _ = _exchange(decorated_server.port, raw)
    responses, _, _ = parse_responses(data)
    assert responses, f"no response to {raw_header!r}"
    response = responses[0]
    assert response.status < 500, (raw_header, response.status, response.body[:200])
    assert "injected" not in response.headers, f"header injected: {data[:500]!r}"
    head = data.split(b"\r\n\r\n", 1)[0]
    assert not any(line.lower().startswith(b"injected") for line in head.split(b"\r\n")), head


# --- R12 ------------------------------------------------------------------------------------------------


class _Touch:
    """Unpickling this creates a file: proof that something ran pickle.loads on a request body."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def _multipart(parts: int) -> tuple[bytes, str]:
    boundary = "fuzzboundary"
    out = io.BytesIO()
    for i in range(parts):
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'.encode("ascii"))
    out.write(f"--{boundary}--\r\n".encode("ascii"))
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _bodies(sentinel: Path) -> list[tuple[str, str, bytes]]:
    multipart, multipart_type = _multipart(10_000)
    pickled = pickle.dumps(_Touch(str(sentinel)))
    return [
        ("text", "text/plain", b'{"data": [[1.0, 2.0, 3.0]], "label": "a"}'),
        ("form", "application/x-www-form-urlencoded", b"data=1&" * 20_000),
        ("multipart-10000-parts", multipart_type, multipart),
        ("pickle", "application/python-pickle", pickled),
        ("octet-stream-pickle", "application/octet-stream", pickled),
        ("xml", "application/xml", b"<a>" * 10_000 + b"</a>" * 10_000),
    ]


def test_decorated_run_refuses_non_json_content_types_quickly(decorated_server: ServerProcess, tmp_path: Path) -> None:
    sentinel = tmp_path / "unpickled"
    # A refusal of a tiny body: the cost of a 415 on this server under this load, parsing nothing.
    baseline = latency(
        lambda: requests.post(
            decorated_server.url + "/score", data=b"x", headers={"Content-Type": "text/plain"}, timeout=30
        )
    )
    for name, content_type, body in _bodies(sentinel):
        started = time.monotonic()
        # "Connection: close" so that the stall of test_regressions.test_unread_body_does_not_stall_the_server
        # (a separate finding) does not count against the 415 here.
        response = requests.post(
            decorated_server.url + "/score",
            data=body,
            headers={"Content-Type": content_type, "Connection": "close"},
            timeout=30,
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 415, (name, response.status_code, response.text[:200])
        assert "application/json" in _json_message(response)
        # Sending the body is the only extra work; parsing 10 000 parts or fields would take much longer.
        assert elapsed < time_limit(baseline, baseline, budget=2.0), (name, elapsed, baseline)
    assert not sentinel.exists(), "a request body was unpickled"


@pytest.mark.parametrize("script", [DECORATED, UNDECORATED], ids=["decorated", "undecorated"])
def test_no_deserializer_but_json_runs(script: Path, tmp_path: Path) -> None:
    """In-process, both input modes: no body is parsed as a form, multipart or pickle; nothing answers 5xx."""
    client = create_app(entry_script=str(script), environ={"AML_APP_ROOT": str(RESOURCES)}).test_client()
    sentinel = tmp_path / "unpickled"
    baseline = latency(lambda: client.post("/score", data=b"x", headers={"Content-Type": "text/plain"}))
    for name, content_type, body in _bodies(sentinel):
        started = time.monotonic()
        response = client.post("/score", data=body, headers={"Content-Type": content_type})
        elapsed = time.monotonic() - started
        assert response.status_code < 500, (name, response.status_code, response.get_data()[:200])
        if script == UNDECORATED and response.status_code == 200:
            # The body reached run() as text, unparsed.
            assert json.loads(response.get_data())["length"] == len(body.decode("utf-8")), name
        assert elapsed < time_limit(baseline, baseline, budget=2.0), (name, elapsed, baseline)
    assert not sentinel.exists(), "a request body was unpickled"
