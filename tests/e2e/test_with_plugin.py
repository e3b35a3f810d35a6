"""The project's own end-to-end checks written with the pytest plugin that users get (azmlinfsrv_testing)."""

from __future__ import annotations

import pytest
from azmlinfsrv_testing import ClientFactory
from azmlinfsrv_testing import ServerFactory
from conftest import RESOURCES

pytestmark = pytest.mark.e2e


def test_in_process_and_real_server_agree(azmlinfsrv_client: ClientFactory, azmlinfsrv_server: ServerFactory) -> None:
    script = RESOURCES / "swagger_score.py"
    payload = {"data": [1.0, 2.0, 3.5]}
    in_process = azmlinfsrv_client(script).score(json=payload)
    server = azmlinfsrv_server(script, "--worker_count", "2", "--threads", "2")
    real = server.score(json=payload)
    assert in_process.status_code == real.status_code == 200
    assert in_process.json() == real.json() == [6.5]
    assert in_process.headers["x-ms-run-function-failed"] == real.headers["x-ms-run-function-failed"] == "False"
    assert "Worker Count: 2" in server.logs()


def test_real_server_swagger_lists_decorated_input(azmlinfsrv_server: ServerFactory) -> None:
    server = azmlinfsrv_server(RESOURCES / "swagger_score.py")
    document = server.swagger(version="3").json()
    assert document["openapi"] == "3.0.3"
    assert document["components"]["schemas"]["ServiceInput"]["properties"]["data"]["format"] == "numpy.ndarray"


def test_real_server_openapi_describes_what_it_serves(azmlinfsrv_server: ServerFactory) -> None:
    server = azmlinfsrv_server(RESOURCES / "swagger_score.py")
    response = server.request("GET", "/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert document["components"]["schemas"]["ServiceInput"]["required"] == ["data"]
    assert set(document["paths"]["/score"]) == {"get", "post", "options"}
    assert "/openapi.json" in document["paths"]
    # /swagger.json is still upstream's document: POST only on /score, no "required".
    swagger = server.swagger(version="3").json()
    assert list(swagger["paths"]["/score"]) == ["post"]
    assert "required" not in swagger["components"]["schemas"]["ServiceInput"]
