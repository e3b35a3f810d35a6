"""The Open Inference Protocol routes in-process: every datatype both ways, the mapping to run(), and the errors."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from core_helpers import MakeClient
from flask.testing import FlaskClient

from azureml_inference_server_http.server.tensors import TensorError
from azureml_inference_server_http.server.tensors import nest
from azureml_inference_server_http.server.tensors import to_outputs
from azureml_inference_server_http.server.v2_model import tensor_spec

ECHO_JSON = """
import json
def init(): pass
def run(data):
    assert isinstance(data, str)
    return json.loads(data)
"""

# A numpy parameter per datatype, each returned as it arrived: the output keeps the dtype.
NUMPY_ECHO = """
import numpy as np
from inference_schema.schema_decorators import input_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
def init(): pass
@input_schema("x", NumpyParameterType(np.array([{sample}], dtype="{dtype}"), enforce_shape=False))
def run(x):
    assert isinstance(x, np.ndarray) and x.dtype == np.dtype("{dtype}"), (type(x), getattr(x, "dtype", None))
    return x
"""

SCHEMA = """
import numpy as np
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
def init(): pass
@input_schema("rows", NumpyParameterType(np.array([[1.0, 2.0]], dtype=np.float32)))
@input_schema("scale", StandardPythonParameterType(1.0))
@input_schema("labels", StandardPythonParameterType(["a"]))
@output_schema(StandardPythonParameterType({"total": [1.0], "names": ["a"]}))
def run(rows, scale, labels=["z"], offset=0):
    assert rows.dtype == np.float32
    return {"total": (rows.sum(axis=1) * scale + offset).tolist(), "names": labels}
"""

RAW = """
from azureml_inference_server_http.api.aml_request import rawhttp
def init(): pass
@rawhttp
def run(request):
    return "x"
"""

RESULT = """
import numpy as np
import pandas as pd
def init(): pass
def run(data):
    kind = data[len('{"kind":["'):].split('"')[0]
    return {
        "scalar": 3.5,
        "string": "hi",
        "none": None,
        "nan": {"v": [1.0, float("nan")]},
        "frame": pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]}),
        "ragged": [[1, 2], [3]],
        "bytes": {"b": [b"\\xff"]},
        "int32": np.arange(4, dtype=np.int32).reshape(2, 2),
        "object": object(),
    }[kind]
"""

DATATYPES = {
    "BOOL": ("bool", [True, False, True]),
    "UINT8": ("uint8", [0, 7, 255]),
    "UINT16": ("uint16", [0, 7, 65535]),
    "UINT32": ("uint32", [0, 7, 2**32 - 1]),
    "UINT64": ("uint64", [0, 7, 2**64 - 1]),
    "INT8": ("int8", [-128, 0, 127]),
    "INT16": ("int16", [-(2**15), 0, 2**15 - 1]),
    "INT32": ("int32", [-(2**31), 0, 2**31 - 1]),
    "INT64": ("int64", [-(2**63), 0, 2**63 - 1]),
    "FP16": ("float16", [0.5, -2.0, 1024.0]),
    "FP32": ("float32", [0.5, -2.25, 1048576.0]),
    "FP64": ("float64", [0.1, -2.5, 1e300]),
    "BYTES": ("object", ["a", "", "é"]),
}


def _infer(client: FlaskClient, body: Any, model: str = "score", **kwargs: Any) -> Any:
    return client.post(f"/v2/models/{model}/infer", json=body, **kwargs)


def _binary_request(document: dict[str, Any], blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(document).encode()
    return header + b"".join(blobs), {"Inference-Header-Content-Length": str(len(header))}


def _split(response: Any) -> tuple[dict[str, Any], bytes]:
    body = response.get_data()
    length = int(response.headers["Inference-Header-Content-Length"])
    return json.loads(body[:length]), body[length:]


def _encode(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    return (
        np.array(values, dtype=DATATYPES[datatype][0])
        .astype(np.dtype(DATATYPES[datatype][0]).newbyteorder("<"))
        .tobytes()
    )


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_reaches_a_numpy_parameter_and_comes_back_in_json(client: MakeClient, datatype: str) -> None:
    dtype, values = DATATYPES[datatype]
    sample = repr(values[0])
    app = client(NUMPY_ECHO.format(dtype=dtype, sample=sample))
    body = {"inputs": [{"name": "x", "shape": [3], "datatype": datatype, "data": values}]}
    response = _infer(app, body)
    assert response.status_code == 200, response.get_data()
    output = response.get_json()["outputs"][0]
    assert output == {"name": "output0", "datatype": datatype, "shape": [3], "data": values}


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_in_binary_both_ways(client: MakeClient, datatype: str) -> None:
    dtype, values = DATATYPES[datatype]
    app = client(NUMPY_ECHO.format(dtype=dtype, sample=repr(values[0])))
    blob = _encode(datatype, values)
    document = {
        "inputs": [{"name": "x", "shape": [3], "datatype": datatype, "parameters": {"binary_data_size": len(blob)}}],
        "parameters": {"binary_data_output": True},
    }
    data, headers = _binary_request(document, [blob])
    response = app.post("/v2/models/score/infer", data=data, headers=headers)
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "application/octet-stream"
    header, binary = _split(response)
    output = header["outputs"][0]
    assert output["datatype"] == datatype
    assert output["parameters"] == {"binary_data_size": len(blob)}
    assert binary == blob


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_reaches_a_plain_run_as_json_lists(client: MakeClient, datatype: str) -> None:
    _, values = DATATYPES[datatype]
    blob = _encode(datatype, values)
    document = {
        "inputs": [
            {"name": "json", "shape": [3, 1], "datatype": datatype, "data": [[v] for v in values]},
            {"name": "bin", "shape": [1, 3], "datatype": datatype, "parameters": {"binary_data_size": len(blob)}},
        ]
    }
    data, headers = _binary_request(document, [blob])
    response = client(ECHO_JSON).post("/v2/models/score/infer", data=data, headers=headers)
    assert response.status_code == 200, response.get_data()
    outputs = {output["name"]: output for output in response.get_json()["outputs"]}
    assert outputs["json"]["data"] == values and outputs["json"]["shape"] == [3, 1]
    assert outputs["bin"]["shape"] == [1, 3]
    if datatype.startswith("FP"):
        assert outputs["bin"]["data"] == pytest.approx(values, rel=1e-3)
    else:
        assert outputs["bin"]["data"] == values


def test_schema_script_inputs_parameters_defaults_and_metadata(client: MakeClient) -> None:
    app = client(SCHEMA)
    metadata = app.get("/v2/models/score").get_json()
    assert metadata["inputs"] == [
        {"name": "rows", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "scale", "datatype": "FP64", "shape": [1]},
        {"name": "labels", "datatype": "BYTES", "shape": [-1]},
    ]
    assert metadata["outputs"] == [
        {"name": "total", "datatype": "FP64", "shape": [-1]},
        {"name": "names", "datatype": "BYTES", "shape": [-1]},
    ]
    body = {
        "id": "r1",
        "inputs": [
            {"name": "rows", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]},
            {"name": "scale", "shape": [1], "datatype": "FP64", "data": [2]},
        ],
        "parameters": {"offset": 1, "binary_data_output": False},
        "outputs": [{"name": "total"}],
    }
    answer = _infer(app, body).get_json()
    assert answer["id"] == "r1"
    assert answer["outputs"] == [{"name": "total", "datatype": "FP64", "shape": [2], "data": [7.0, 15.0]}]
    missing = _infer(app, {"inputs": [body["inputs"][0]]})  # type: ignore[index]
    assert missing.status_code == 400
    assert missing.get_json() == {"error": "A value is not provided for the 'scale' parameter."}
    wrong = dict(body, outputs=[{"name": "nope"}])
    assert _infer(app, wrong).status_code == 400
    shape = {"inputs": [{"name": "rows", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}, body["inputs"][1]]}  # type: ignore[index]
    assert "run() takes shape [-1, 2]" in _infer(app, shape).get_json()["error"]


def test_per_output_binary_choice(client: MakeClient) -> None:
    app = client(SCHEMA)
    body = {
        "inputs": [
            {"name": "rows", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
            {"name": "scale", "shape": [1], "datatype": "FP64", "data": [1]},
            {"name": "labels", "shape": [2], "datatype": "BYTES", "data": ["x", "yz"]},
        ],
        "outputs": [{"name": "names", "parameters": {"binary_data": True}}, {"name": "total"}],
    }
    header, binary = _split(_infer(app, body))
    assert [output["name"] for output in header["outputs"]] == ["names", "total"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": len(binary)}
    assert binary == struct.pack("<I", 1) + b"x" + struct.pack("<I", 2) + b"yz"
    assert header["outputs"][1]["data"] == [3.0]


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        ("scalar", 200, [{"name": "output0", "datatype": "FP64", "shape": [1], "data": [3.5]}]),
        ("string", 200, [{"name": "output0", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]),
        ("none", 200, []),
        ("nan", 200, [{"name": "v", "datatype": "FP64", "shape": [2], "data": [1.0, None]}]),
        (
            "frame",
            200,
            [
                {"name": "a", "datatype": "INT64", "shape": [2], "data": [1, 2]},
                {"name": "b", "datatype": "FP64", "shape": [2], "data": [0.5, 1.5]},
            ],
        ),
        ("int32", 200, [{"name": "output0", "datatype": "INT32", "shape": [2, 2], "data": [0, 1, 2, 3]}]),
        ("ragged", 500, "ragged lists"),
        ("bytes", 500, "not UTF-8"),
        ("object", 500, "which is no tensor"),
    ],
)
def test_results_become_tensors(client: MakeClient, kind: str, status: int, expected: Any) -> None:
    body = {"inputs": [{"name": "kind", "shape": [1], "datatype": "BYTES", "data": [kind]}]}
    response = _infer(client(RESULT), body)
    assert response.status_code == status, response.get_data()
    if status == 200:
        assert response.get_json()["outputs"] == expected
    else:
        assert expected in response.get_json()["error"]
        assert response.headers["x-ms-run-function-failed"] == "True"


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        ({"inputs": []}, {}, "non-empty list"),
        ({"inputs": [{"name": "a", "shape": [2], "datatype": "FP99", "data": [1, 2]}]}, {}, "datatype 'FP99'"),
        ({"inputs": [{"name": "a", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}, {}, "shape [3] needs 3"),
        ({"inputs": [{"name": "a", "shape": [-1], "datatype": "FP32", "data": []}]}, {}, "non-negative"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "INT8", "data": [300]}]}, {}, "do not fit INT8"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [1.5]}]}, {}, "do not fit INT64"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "INT64", "data": [True]}]}, {}, "not booleans"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "BOOL", "data": [1]}]}, {}, "true or false"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": [1]}]}, {}, "must be strings"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": ["x"]}]}, {}, "do not fit FP32"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}] * 2}, {}, "given twice"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], "id": 5}, {}, "id must be"),
        ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": 1}, {}, "object"),
        (
            {"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]},
            {"Inference-Header-Content-Length": "x"},
            "must be an integer",
        ),
        ([1], {}, "must be a JSON object"),
    ],
)
def test_malformed_requests_are_400_with_an_error_body(
    client: MakeClient, body: Any, headers: dict[str, str], message: str
) -> None:
    response = _infer(client(ECHO_JSON), body, headers=headers)
    assert response.status_code == 400
    assert response.headers["x-ms-run-function-failed"] == "False"
    error = response.get_json()["error"]
    assert message in error


def test_binary_sizes_must_add_up(client: MakeClient) -> None:
    app = client(ECHO_JSON)
    for size, blob, message in ((8, b"\0" * 8, "needs 4"), (4, b"\0" * 6, "2 bytes of binary data after")):
        document = {
            "inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": size}}]
        }
        data, headers = _binary_request(document, [blob])
        response = app.post("/v2/models/score/infer", data=data, headers=headers)
        assert response.status_code == 400
        assert message in response.get_json()["error"]


def test_model_names_versions_and_raw_scripts(client: MakeClient) -> None:
    app = client(ECHO_JSON, env={"AZMLINFSRV_MODEL_NAME": "mine"})
    body = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}
    assert _infer(app, body, model="mine").status_code == 200
    assert _infer(app, body, model="score").status_code == 404
    assert app.post("/v2/models/mine/versions/1/infer", json=body).status_code == 200
    response = app.post("/v2/models/mine/versions/2/infer", json=body)
    assert response.status_code == 404
    assert "Unknown version '2'" in response.get_json()["error"]
    assert app.get("/v2/models/mine/versions/1/ready").get_json() == {"name": "mine", "ready": True}
    raw = _infer(client(RAW), body)
    assert raw.status_code == 501
    assert "@rawhttp" in raw.get_json()["error"]


def test_body_limit_applies(client: MakeClient) -> None:
    app = client(ECHO_JSON, env={"MAX_REQUEST_BODY_MB": "1"})
    data = [0.0] * 300_000
    body = {"inputs": [{"name": "a", "shape": [len(data)], "datatype": "FP64", "data": data}]}
    response = _infer(app, body)
    assert response.status_code == 413
    assert "MAX_REQUEST_BODY_MB" in response.get_json()["error"]


def test_infer_is_counted_in_metrics_under_its_route(client: MakeClient) -> None:
    app = client(ECHO_JSON)
    body = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}
    assert _infer(app, body).status_code == 200
    metrics = app.get("/metrics").get_data(as_text=True)
    assert 'azmlinfsrv_requests_total{method="POST",route="/v2/models/{name}/infer",status="200"} 1.0' in metrics


def test_nest_and_schema_specs() -> None:
    assert nest([1, 2, 3, 4, 5, 6], [2, 3]) == [[1, 2, 3], [4, 5, 6]]
    assert nest([1, 2, 3, 4], [2, 1, 2]) == [[[1, 2]], [[3, 4]]]
    assert nest([7], []) == 7
    assert nest([], [2, 0]) == [[], []]
    assert tensor_spec({"type": "array", "items": {"type": "integer", "format": "uint8"}}) == {
        "datatype": "UINT8",
        "shape": [-1],
    }
    assert tensor_spec({"type": "object"}) is None
    with pytest.raises(TensorError):
        to_outputs([1, "a", None], {})
