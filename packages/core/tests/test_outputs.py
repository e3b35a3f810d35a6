"""run() results as responses (docs/compatibility.md#run-results; strict JSON, numpy and pandas results)."""

from __future__ import annotations

import json

import pytest
from core_helpers import MakeClient


def script(expr: str, imports: str = "") -> str:
    return f"{imports}\ndef init(): pass\ndef run(data):\n    return {expr}\n"


@pytest.mark.parametrize(
    ("expr", "body"),
    [
        ('{"a": 1}', b'{"a": 1}'),
        ('"hello"', b'"hello"'),
        ('(1, "a")', b'[1, "a"]'),
        ("None", b"{}"),
        ("float('nan')", b"null"),
        ("[1.5, float('inf')]", b"[1.5, null]"),
    ],
)
def test_plain_results(client: MakeClient, expr: str, body: bytes) -> None:
    response = client(script(expr)).post("/score")
    assert response.status_code == 200
    assert response.data == body
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["x-ms-run-function-failed"] == "False"
    exec_ms = response.headers["x-ms-run-fn-exec-ms"]
    assert len(exec_ms.split(".")[1]) == 3


def test_numpy_results(client: MakeClient) -> None:
    imports = "import numpy as np"
    assert client(script("np.arange(3)", imports)).post("/score").get_json() == [
        0,
        1,
        2,
    ]
    assert client(script("{'x': np.float32(1.5), 'n': np.int64(7)}", imports)).post("/score").get_json() == {
        "x": 1.5,
        "n": 7,
    }
    nan_array = client(script("np.array([1.0, np.nan])", imports)).post("/score")
    assert json.loads(nan_array.data, parse_constant=lambda c: pytest.fail(c)) == [
        1.0,
        None,
    ]


def test_pandas_results(client: MakeClient) -> None:
    imports = "import pandas as pd"
    frame = client(script("pd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})", imports)).post("/score")
    assert frame.get_json() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    series = client(script("pd.Series([1.0, 2.0])", imports)).post("/score")
    assert series.get_json() == [1.0, 2.0]


def test_standard_library_results(client: MakeClient) -> None:
    imports = "import datetime, decimal, uuid, dataclasses\n@dataclasses.dataclass\nclass P:\n    x: int\n"
    expr = (
        "{'d': datetime.datetime(2024, 1, 2, 3, 4, 5), 'dec': decimal.Decimal('1.5'), "
        "'u': uuid.UUID(int=1), 'p': P(3), 's': {1}}"
    )
    assert client(script(expr, imports)).post("/score").get_json() == {
        "d": "2024-01-02T03:04:05",
        "dec": 1.5,
        "u": "00000000-0000-0000-0000-000000000001",
        "p": {"x": 3},
        "s": [1],
    }


def test_unserializable_result_names_type_and_blames_user(client: MakeClient) -> None:
    response = client(script("object()")).post("/score")
    assert response.status_code == 500
    assert response.headers["x-ms-run-function-failed"] == "True"
    assert "builtins.object" in response.get_json()["message"]


def test_user_exception_is_500_with_fixed_message(client: MakeClient, caplog) -> None:  # type: ignore[no-untyped-def]
    response = client(script("1 / 0")).post("/score")
    assert response.status_code == 500
    assert response.get_json() == {
        "message": "An unexpected error occurred in scoring script. Check the logs for more info."
    }
    assert response.headers["x-ms-run-function-failed"] == "True"
    assert "ZeroDivisionError" in caplog.text
    assert "ZeroDivisionError" not in response.get_data(as_text=True)


def test_system_exit_in_run_is_json_500(client: MakeClient) -> None:
    source = "import sys\ndef init(): pass\ndef run(data):\n    sys.exit(3)\n"
    response = client(source).post("/score")
    assert response.status_code == 500
    assert response.headers["x-ms-run-function-failed"] == "True"


AML = "from azureml_inference_server_http.api.aml_response import AMLResponse"


def test_amlresponse_variants(client: MakeClient) -> None:
    empty = client(script("AMLResponse(None, 333)", AML)).post("/score")
    assert (empty.status_code, empty.data, empty.headers["Content-Type"]) == (
        333,
        b"{}",
        "application/json",
    )
    assert empty.headers["x-ms-run-function-failed"] == "False"
    text = client(script('AMLResponse("test", 444)', AML)).post("/score")
    assert (text.status_code, text.data) == (444, b"test")
    assert text.headers["Content-Type"] != "application/json"
    as_json = client(script('AMLResponse("test", 555, json_str=True)', AML)).post("/score")
    assert (as_json.status_code, as_json.data) == (555, b'"test"')
    assert as_json.headers["x-ms-run-function-failed"] == "True"


def test_amlresponse_headers_split_and_failed_forced(client: MakeClient) -> None:
    expr = (
        'AMLResponse(None, 555, {"a": "A", "b": "A, B, C", "content-type": "A", '
        '"x-ms-run-function-failed": "Z"}, run_function_failed=True)'
    )
    response = client(script(expr, AML)).post("/score")
    assert response.headers["a"] == "A"
    assert response.headers.getlist("b") == ["A", "B", "C"]
    assert response.headers.getlist("Content-Type")[0] == "application/json"
    assert response.headers.getlist("x-ms-run-function-failed") == ["True"]
    assert "x-ms-run-fn-exec-ms" in response.headers


def test_plain_flask_response_passes_through(client: MakeClient) -> None:
    source = (
        "from flask import Response\ndef init(): pass\ndef run(data):\n    return Response('hi', status='299 CUSTOM')\n"
    )
    response = client(source).post("/score")
    assert response.status == "299 CUSTOM"
    assert "x-ms-run-function-failed" not in response.headers


def test_streaming_response_streams(client: MakeClient) -> None:
    source = f"""
{AML}
def init(): pass
def run(data):
    def gen():
        for i in range(3):
            yield f"item {{i}}\\n"
    return AMLResponse(gen(), 200)
"""
    response = client(source).post("/score")
    assert response.is_streamed
    assert response.get_data(as_text=True) == "item 0\nitem 1\nitem 2\n"
