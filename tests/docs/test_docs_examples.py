"""Every example runs: in-process through ``create_app`` and Flask's test client, and the custom host as a real
process on 127.0.0.1.

A score script added under ``examples/`` without a test here fails ``test_every_example_script_is_tested``.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from azmlinfsrv_testing import start_server
from azureml_inference_server_http.server import create_app
from flask import Flask

from .conftest import EXAMPLES

NUMPY_MODEL = EXAMPLES / "numpy_model"
TESTED_SCRIPTS = {
    "score.py",  # the README example; its own tests live next to it, this one only checks that it serves
    "numpy_model/score.py",
    "rawhttp_binary/score.py",
    "streaming/score.py",
}


def make_app(script: Path, tmp_path: Path, model_dir: Path | None = None) -> Flask:
    """The app for an example, isolated from the caller's environment and from any config.json."""
    environ = {"AML_APP_ROOT": str(tmp_path), "AZMLINFSRV_METRICS_ENABLED": "false"}
    if model_dir is not None:
        environ["AZUREML_MODEL_DIR"] = str(model_dir)
    return create_app(entry_script=str(script), environ=environ)


@pytest.fixture
def model_dir_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Score scripts read AZUREML_MODEL_DIR from their environment, as the CLI exports it."""
    model_dir = NUMPY_MODEL / "model"
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
    yield model_dir


def test_every_example_script_is_tested() -> None:
    scripts = {path.relative_to(EXAMPLES).as_posix() for path in EXAMPLES.rglob("score.py")}
    assert scripts == TESTED_SCRIPTS


# -- the README example --------------------------------------------------------------------------------------------


def test_readme_example_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    client = make_app(EXAMPLES / "score.py", tmp_path).test_client()
    response = client.post("/score", data=json.dumps({"data": [1, 2, 3]}))
    assert response.status_code == 200
    assert response.get_json()["count"] == 3


# -- numpy model from model_dir ------------------------------------------------------------------------------------


def test_numpy_model_predicts_from_the_model_dir(tmp_path: Path, model_dir_env: Path) -> None:
    client = make_app(NUMPY_MODEL / "score.py", tmp_path, model_dir_env).test_client()
    response = client.post("/score", json={"data": [[1, 2, 3, 4], [0, 0, 0, 0]]})
    assert response.status_code == 200, response.get_data(as_text=True)
    values = np.loadtxt(model_dir_env / "linear.txt")
    expected = [float(np.array([1, 2, 3, 4]) @ values[:4] + values[4]), float(values[4])]
    assert response.get_json() == pytest.approx(expected)
    assert response.get_json() == pytest.approx([17.0, 10.0])


def test_numpy_model_accepts_query_input_and_publishes_its_schema(tmp_path: Path, model_dir_env: Path) -> None:
    client = make_app(NUMPY_MODEL / "score.py", tmp_path, model_dir_env).test_client()
    assert client.get("/score?data=[[1,2,3,4]]").get_json() == pytest.approx([17.0])
    swagger = client.get("/swagger.json?version=3").get_json()
    service_input = swagger["components"]["schemas"]["ServiceInput"]
    assert service_input["properties"]["data"]["format"] == "numpy.ndarray"


def test_numpy_model_rejects_wrong_input(tmp_path: Path, model_dir_env: Path) -> None:
    client = make_app(NUMPY_MODEL / "score.py", tmp_path, model_dir_env).test_client()
    assert client.post("/score", data="[1]", content_type="application/json").status_code == 400
    assert client.post("/score", data="x", content_type="text/plain").status_code == 415
    wrong_shape = client.post("/score", json={"data": [[1, 2, 3]]})
    assert wrong_shape.status_code == 500
    assert wrong_shape.headers["x-ms-run-function-failed"] == "True"


def test_numpy_model_fails_to_start_without_model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    with pytest.raises(Exception) as info:
        make_app(NUMPY_MODEL / "score.py", tmp_path)
    assert "AZUREML_MODEL_DIR" in repr(info.value.__cause__)


# -- @rawhttp binary -------------------------------------------------------------------------------------------------


def test_rawhttp_binary_round_trip(tmp_path: Path) -> None:
    client = make_app(EXAMPLES / "rawhttp_binary" / "score.py", tmp_path).test_client()
    values = np.array([1.0, 2.0, 3.0], dtype="<f4")
    response = client.post("/score", data=values.tobytes(), content_type="application/octet-stream")
    assert response.status_code == 200
    assert response.mimetype == "application/octet-stream"
    probabilities = np.frombuffer(response.get_data(), dtype="<f4")
    expected = np.exp(values - 3.0) / np.exp(values - 3.0).sum()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)
    assert response.headers["x-ms-run-function-failed"] == "False"


def test_rawhttp_binary_answers_errors_itself(tmp_path: Path) -> None:
    client = make_app(EXAMPLES / "rawhttp_binary" / "score.py", tmp_path).test_client()
    assert client.get("/score").get_json()["request"].startswith("POST little-endian float32")
    assert client.post("/score", data=b"abc", content_type="application/octet-stream").status_code == 400
    assert client.post("/score", json=[1, 2]).status_code == 415
    assert client.open("/score", method="OPTIONS").status_code == 405


# -- streaming -------------------------------------------------------------------------------------------------------


def test_streaming_sends_one_event_per_word(tmp_path: Path) -> None:
    client = make_app(EXAMPLES / "streaming" / "score.py", tmp_path).test_client()
    response = client.post("/score", data=json.dumps({"prompt": "one two three", "delay": 0}), buffered=False)
    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "text/event-stream"
    chunks = [chunk.decode("utf-8") for chunk in response.response]
    assert [json.loads(c[len("data: ") :])["token"] for c in chunks[:-1]] == ["one", "two", "three"]
    assert chunks[-1] == "data: [DONE]\n\n"


def test_streaming_yields_before_the_answer_is_complete(tmp_path: Path) -> None:
    client = make_app(EXAMPLES / "streaming" / "score.py", tmp_path).test_client()

    def first_word(delay: float) -> tuple[float, Iterator[bytes]]:
        started = time.monotonic()
        response = client.post("/score", data=json.dumps({"prompt": "a b c d", "delay": delay}), buffered=False)
        chunks = iter(response.response)
        next(chunks)
        return time.monotonic() - started, chunks

    baseline, _ = first_word(0)  # the same request without pauses: its cost on this machine now
    started = time.monotonic()
    first, chunks = first_word(0.3)
    rest = list(chunks)
    total = time.monotonic() - started
    # The first word leaves at once (a pause before it would add 0.3 s to the baseline); three pauses follow it.
    assert first - baseline < 0.15, (first, baseline)
    assert total - first >= 0.85
    assert len(rest) == 4


def test_streaming_rejects_a_request_without_prompt(tmp_path: Path) -> None:
    client = make_app(EXAMPLES / "streaming" / "score.py", tmp_path).test_client()
    assert client.post("/score", data="{}").status_code == 400
    assert client.post("/score", data="not json").status_code == 400


# -- custom WSGI host, as a real process -----------------------------------------------------------------------------


def _post_json(url: str, payload: object) -> tuple[int, object]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_custom_host_serves_the_numpy_example(tmp_path: Path) -> None:
    # The testing package's launcher runs the example host as it runs azmlinfsrv: --host/--port, own process group.
    with start_server(
        command=[sys.executable, str(EXAMPLES / "custom_host" / "host.py")],
        cwd=tmp_path,
        log_dir=tmp_path,
        health_path="/health/ready",
    ) as host:
        status, body = _post_json(host.url + "/score", {"data": [[1, 2, 3, 4]]})
        assert status == 200
        assert body == pytest.approx([17.0])
        with urllib.request.urlopen(host.url + "/", timeout=5) as response:
            assert response.read() == b"Healthy"
        code = host.stop()
    output = host.logs()
    if sys.platform != "win32":
        assert code == 0, output
        assert "Stopped" in output
    assert "POST /score 200" in output
