"""The Open Inference Protocol (V2) routes of a real server, called through Triton's own client (tritonclient.http).

The numpy example answers the same numbers through ``/v2/models/score/infer`` as through ``/score``, in JSON and in
the binary tensor extension, on gunicorn and on waitress; model and server metadata, readiness, the error mapping,
the scoring timeout and metrics hold as on ``/score``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from azmlinfsrv_testing.process import ServerProcess
from azmlinfsrv_testing.process import start_server
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "numpy_model"
RESOURCES = Path(__file__).parent / "resources"
ROWS = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 0.25, 8.0], [0.0, 0.0, 0.0, 0.0]])


def _client(server: ServerProcess) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


@pytest.fixture(scope="module", params=["gunicorn", "waitress"])
def numpy_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--entry_script", str(EXAMPLE / "score.py"), "--model_dir", str(EXAMPLE / "model")]
    with start_server([*args, "--server", request.param], log_dir=tmp_path_factory.mktemp("v2")) as server:
        yield server


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--entry_script", str(RESOURCES / "v2_plain.py"), "--model_name", "echo"]
    env = {"SCORING_TIMEOUT_MS": "1500"}
    with start_server(args, env=env, log_dir=tmp_path_factory.mktemp("v2plain")) as server:
        yield server


def _infer(client: triton.InferenceServerClient, binary_in: bool, binary_out: bool, **kwargs: object) -> np.ndarray:
    data = triton.InferInput("data", list(ROWS.shape), "FP64")
    data.set_data_from_numpy(ROWS, binary_data=binary_in)
    wanted = triton.InferRequestedOutput("output0", binary_data=binary_out)
    result = client.infer("score", [data], outputs=[wanted], **kwargs)  # type: ignore[arg-type]
    values = result.as_numpy("output0")
    assert values is not None
    return values


@pytest.mark.parametrize(("binary_in", "binary_out"), [(False, False), (True, True), (True, False), (False, True)])
def test_numpy_example_answers_the_same_numbers_as_score(
    numpy_server: ServerProcess, binary_in: bool, binary_out: bool
) -> None:
    expected = numpy_server.score(json={"data": ROWS.tolist()}).json()
    values = _infer(_client(numpy_server), binary_in, binary_out)
    assert values.dtype == np.float64
    assert values.shape == (3,)
    assert values.tolist() == expected  # exactly: the same float64 arithmetic on the same inputs


def test_versioned_infer_and_request_id(numpy_server: ServerProcess) -> None:
    client = _client(numpy_server)
    data = triton.InferInput("data", [1, 4], "FP64")
    data.set_data_from_numpy(ROWS[:1], binary_data=False)
    result = client.infer("score", [data], model_version="1", request_id="req-7")
    response = result.get_response()
    assert response["id"] == "req-7"
    assert response["model_name"] == "score"
    assert response["outputs"][0]["datatype"] == "FP64"
    expected = numpy_server.score(json={"data": ROWS[:1].tolist()}).json()
    assert result.as_numpy("output0").tolist() == expected  # type: ignore[union-attr]


def test_metadata_and_readiness_through_the_client(numpy_server: ServerProcess) -> None:
    client = _client(numpy_server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("score")
    assert client.is_model_ready("score", "1")
    assert not client.is_model_ready("other")
    server = client.get_server_metadata()
    assert server["name"] == "azmlinfsrv"
    assert "binary_tensor_data" in server["extensions"]
    model = client.get_model_metadata("score")
    assert model["name"] == "score"
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "data", "datatype": "FP64", "shape": [-1, 4]}]
    assert model["outputs"] == [{"name": "output0", "datatype": "FP64", "shape": [-1]}]


def _error(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()  # type: ignore[operator]
    return caught.value


def test_errors_come_back_as_the_protocol_says(numpy_server: ServerProcess) -> None:
    client = _client(numpy_server)
    unknown = _error(lambda: client.get_model_metadata("other"))
    assert unknown.status() == "404"
    assert "Unknown model 'other'" in unknown.message()
    assert _error(lambda: client.get_model_metadata("score", "2")).status() == "404"
    wrong_shape = triton.InferInput("data", [2, 3], "FP64")
    wrong_shape.set_data_from_numpy(np.zeros((2, 3)), binary_data=True)
    error = _error(lambda: client.infer("score", [wrong_shape]))
    assert error.status() == "400"
    assert "shape [2, 3]" in error.message()
    text = triton.InferInput("data", [1, 4], "BYTES")
    text.set_data_from_numpy(np.array([["a", "b", "c", "d"]], dtype=object), binary_data=False)
    error = _error(lambda: client.infer("score", [text]))
    assert error.status() == "400"
    assert "cannot be converted" in error.message()
    unknown_input = triton.InferInput("rows", [1, 4], "FP64")
    unknown_input.set_data_from_numpy(ROWS[:1])
    assert "no parameter 'rows'" in _error(lambda: client.infer("score", [unknown_input])).message()
    malformed = requests.post(numpy_server.url + "/v2/models/score/infer", data=b"{", timeout=10)
    assert malformed.status_code == 400
    assert set(malformed.json()) == {"error"}


def test_request_ids_and_headers_as_on_score(numpy_server: ServerProcess) -> None:
    body = {"inputs": [{"name": "data", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
    headers = {"x-request-id": "abc-123", "x-ms-client-request-id": "client-9"}
    response = requests.post(numpy_server.url + "/v2/models/score/infer", json=body, headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc-123"
    assert response.headers["x-ms-client-request-id"] == "client-9"
    assert response.headers["x-ms-run-function-failed"] == "False"
    assert "x-ms-run-fn-exec-ms" in response.headers
    assert "POST /v2/models/score/infer 200" in numpy_server.logs()


def test_plain_script_gets_its_inputs_as_one_json_object(plain_server: ServerProcess) -> None:
    client = _client(plain_server)
    assert client.get_model_metadata("echo")["name"] == "echo"  # --model_name
    numbers = triton.InferInput("numbers", [2, 2], "INT32")
    numbers.set_data_from_numpy(np.array([[1, 2], [3, 4]], dtype=np.int32), binary_data=True)
    words = triton.InferInput("words", [2], "BYTES")
    words.set_data_from_numpy(np.array(["ab", "cé"], dtype=object), binary_data=False)
    flags = triton.InferInput("flags", [3], "BOOL")
    flags.set_data_from_numpy(np.array([True, False, True]), binary_data=True)
    result = client.infer("echo", [numbers, words, flags], parameters={"scale": 2})
    # run() returned the dict it got: each key an output, datatypes inferred from the values.
    assert result.as_numpy("numbers").tolist() == [[1, 2], [3, 4]]  # type: ignore[union-attr]
    assert result.as_numpy("words").tolist() == [b"ab", "cé".encode()]  # type: ignore[union-attr]
    assert result.as_numpy("flags").tolist() == [True, False, True]  # type: ignore[union-attr]
    assert result.as_numpy("scale").tolist() == [2]  # type: ignore[union-attr]
    described = {output["name"]: output["datatype"] for output in result.get_response()["outputs"]}
    assert described == {"numbers": "INT64", "words": "BYTES", "flags": "BOOL", "scale": "INT64"}


def test_run_failure_timeout_and_metrics(plain_server: ServerProcess) -> None:
    client = _client(plain_server)
    fail = triton.InferInput("fail", [1], "INT64")
    fail.set_data_from_numpy(np.array([1], dtype=np.int64))
    error = _error(lambda: client.infer("echo", [fail]))
    assert error.status() == "500"
    assert "unexpected error occurred in scoring script" in error.message()
    sleep = triton.InferInput("sleep", [1], "FP64")
    sleep.set_data_from_numpy(np.array([5.0]), binary_data=False)
    error = _error(lambda: client.infer("echo", [sleep]))
    assert error.status() == "500"
    assert "Scoring timeout after 1500 ms" in error.message()
    assert _error(lambda: client.get_model_metadata("score")).status() == "404"  # renamed
    metrics = requests.get(plain_server.url + "/metrics", timeout=10).text
    infer_lines = [line for line in metrics.splitlines() if 'route="/v2/models/{name}/infer"' in line]
    assert any('status="500"' in line and not line.endswith(" 0.0") for line in infer_lines), infer_lines
