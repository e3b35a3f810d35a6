"""Tests a user writes for their score script, here examples/score.py, with the azmlinfsrv pytest plugin.

Installing azureml-inference-server-http brings the plugin; these fixtures need no import or conftest:

* ``azmlinfsrv_client``: the script loaded in this process, called without a socket (fast; most tests);
* ``azmlinfsrv_server``: the real ``azmlinfsrv`` command on a free 127.0.0.1 port (what deployment runs);
* ``azmlinfsrv_collector``: a fake Application Insights endpoint that records what the server sends.

Run with ``pytest examples/test_score.py`` from any directory.
"""

from __future__ import annotations

from pathlib import Path

from azmlinfsrv_testing import ClientFactory
from azmlinfsrv_testing import FakeIngestion
from azmlinfsrv_testing import ServerFactory
from azmlinfsrv_testing import envelope_kind
from azmlinfsrv_testing import envelope_properties

SCORE = Path(__file__).with_name("score.py")
PAYLOAD = {"data": [1, 2, 3]}


def test_score_returns_a_result(azmlinfsrv_client: ClientFactory) -> None:
    client = azmlinfsrv_client(SCORE)

    response = client.score(json=PAYLOAD)

    assert response.status_code == 200, response.text
    assert response.headers["x-ms-run-function-failed"] == "False"
    assert response.json() == {"result": [1.0, 2.0, 3.0], "count": 3}


def test_init_reads_the_model_dir(azmlinfsrv_client: ClientFactory, tmp_path: Path) -> None:
    (tmp_path / "scale.txt").write_text("10", encoding="utf-8")
    client = azmlinfsrv_client(SCORE, model_dir=tmp_path)

    assert client.score(json=PAYLOAD).json()["result"] == [10.0, 20.0, 30.0]


def test_bad_input_is_a_run_failure(azmlinfsrv_client: ClientFactory) -> None:
    client = azmlinfsrv_client(SCORE)

    response = client.score(json={"rows": [1, 2, 3]})  # run() expects a "data" key

    assert response.status_code == 500
    assert response.headers["x-ms-run-function-failed"] == "True"


def test_health_and_swagger(azmlinfsrv_client: ClientFactory) -> None:
    client = azmlinfsrv_client(SCORE)

    assert client.health().text == "Healthy"
    assert client.swagger(version="2").json()["swagger"] == "2.0"


def test_real_server_scores(azmlinfsrv_server: ServerFactory) -> None:
    server = azmlinfsrv_server(SCORE)

    response = server.score(json=PAYLOAD)

    assert response.status_code == 200, server.logs()
    assert response.json()["count"] == 3
    assert "init: scale=1.0" in server.logs()


def test_requests_reach_application_insights(
    azmlinfsrv_server: ServerFactory, azmlinfsrv_collector: FakeIngestion
) -> None:
    server = azmlinfsrv_server(
        SCORE,
        env={
            "AML_APP_INSIGHTS_ENABLED": "true",
            "APPLICATIONINSIGHTS_CONNECTION_STRING": azmlinfsrv_collector.connection_string,
        },
    )

    server.score(json=PAYLOAD, headers={"x-request-id": "example-request-1"})

    # The exporter sends in the background every few seconds; wait for the request's envelope to arrive.
    [request] = azmlinfsrv_collector.wait_for(
        lambda envelope: (
            envelope_kind(envelope) == "request" and envelope_properties(envelope)["Request Id"] == "example-request-1"
        ),
        timeout=30,
    )
    assert envelope_properties(request)["resultCode"] == "200"
