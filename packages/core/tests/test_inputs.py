"""How requests become run()'s arguments in the three input modes (docs/compatibility.md#input-modes)."""

from __future__ import annotations

import json

import pytest
from core_helpers import ECHO
from core_helpers import MakeClient

SCHEMA = """
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

def init(): pass

@input_schema("num", StandardPythonParameterType(1))
@output_schema(StandardPythonParameterType(11))
def run(num):
    return num + 10
"""

RAW = """
from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse
import flask

def init(): pass

@rawhttp
def run(request):
    assert isinstance(request, flask.Request)
    return {"method": request.method, "query": request.query_string.decode(), "body": request.get_data(as_text=True)}
"""


def test_json_mode_post_passes_body_text(client: MakeClient) -> None:
    response = client(ECHO).post("/score", data='{"a": 1,  "b": [1,2]}')
    assert response.get_json() == '{"a": 1,  "b": [1,2]}'


def test_json_mode_get_builds_json_from_query(client: MakeClient) -> None:
    response = client(ECHO).get('/score?a=1&b=x&c=1.2&d=[1,2]&e=null&f=true&a=2&g=&h={"x":1}')
    assert response.get_json() == (
        '{"a": [1, 2], "b": "x", "c": 1.2, "d": [1, 2], "e": null, "f": true, "g": "", "h": {"x": 1}}'
    )
    assert client(ECHO).get("/score").get_json() == "{}"


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "text/plain", "application/octet-stream"],
)
def test_json_mode_ignores_content_type(client: MakeClient, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = '{"data": "some plain text"}'
    assert client(ECHO).post("/score", data=body, headers=headers).get_json() == body


def test_json_mode_invalid_utf8_is_400(client: MakeClient) -> None:
    response = client(ECHO).post("/score", data=b"\xff")
    assert response.status_code == 400
    assert response.get_json() == {
        "message": "Input cannot be decoded as UTF-8: 'utf-8' codec can't decode byte 0xff in position 0: "
        "invalid start byte"
    }


def test_json_mode_form_body_is_passed_raw(client: MakeClient) -> None:
    response = client(ECHO).post("/score", data="a=1&b=2", content_type="application/x-www-form-urlencoded")
    assert response.get_json() == "a=1&b=2"


def test_json_mode_keeps_defaults_and_passes_headers(client: MakeClient) -> None:
    source = """
    import json
    def init(): pass
    def run(data, request_headers, color="red"):
        return {"color": color, "header": request_headers.get("Test-Header"), "data": json.loads(data)}
    """
    response = client(source).post("/score", data='{"p": 1}', headers={"test-header": "v"})
    assert response.get_json() == {"color": "red", "header": "v", "data": {"p": 1}}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_schema_mode(client: MakeClient, method: str) -> None:
    app = client(SCHEMA)
    if method == "GET":
        response = app.get("/score?num=10&nums=20")
    else:
        response = app.post("/score", json={"num": 10, "nums": [10, 20]})
    assert response.status_code == 200
    assert response.get_json() == 20


def test_schema_mode_errors(client: MakeClient) -> None:
    app = client(SCHEMA)
    cases = [
        (
            app.post("/score", json={"a": 10}),
            400,
            "A value is not provided for the 'num' parameter.",
        ),
        (
            app.post("/score", json=[1, 2, 3]),
            400,
            "POST body should be a JSON dictionary.",
        ),
        (
            app.post("/score", data="", content_type="application/json"),
            400,
            "POST body is empty. Expecting a JSON dictionary.",
        ),
        (
            app.post("/score", data='{"num": 1}', content_type="text/plain"),
            415,
            "Expects Content-Type to be application/json",
        ),
        (
            app.post("/score", data="{", content_type="application/json"),
            400,
            (
                "POST body could not be decoded as JSON: Expecting property name enclosed in double quotes: "
                "line 1 column 2 (char 1)"
            ),
        ),
    ]
    for response, status, message in cases:
        assert response.status_code == status
        assert response.get_json() == {"message": message}
        assert response.headers["x-ms-run-function-failed"] == "False"


def test_schema_mode_accepts_json_variants(client: MakeClient) -> None:
    app = client(SCHEMA)
    for content_type in ("application/json; charset=utf-8", "application/vnd.foo+json"):
        assert app.post("/score", data='{"num": 1}', content_type=content_type).get_json() == 11


def test_schema_mode_defaults_and_undecorated_params(client: MakeClient) -> None:
    source = """
    from inference_schema.schema_decorators import input_schema
    from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
    def init(): pass
    @input_schema("num", StandardPythonParameterType(1))
    @input_schema("size", StandardPythonParameterType(1))
    def run(num, size=10, color="red"):
        return [num, size, color]
    """
    app = client(source)
    assert app.post("/score", json={"num": 1}).get_json() == [1, 10, "red"]
    assert app.post("/score", json={"num": 1, "size": 5}).get_json() == [1, 5, "red"]
    assert app.post("/score", json={"num": 1, "color": "blue"}).get_json() == [
        1,
        10,
        "blue",
    ]


def test_schema_conversion_failure_is_user_error(client: MakeClient) -> None:
    response = client(SCHEMA).post("/score", json={"num": "abc"})
    assert response.status_code == 500
    assert response.headers["x-ms-run-function-failed"] == "True"


def test_numpy_schema_input_arrives_as_array(client: MakeClient) -> None:
    source = """
    import numpy as np
    from inference_schema.schema_decorators import input_schema
    from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
    def init(): pass
    @input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
    def run(data):
        assert isinstance(data, np.ndarray)
        return data.sum(axis=0)
    """
    response = client(source).post("/score", json={"data": [[1.0, 2.0], [3.0, 4.0]]})
    assert response.status_code == 200, response.data
    assert response.get_json() == [4.0, 6.0]


def test_raw_mode_gets_flask_request_for_every_method(client: MakeClient) -> None:
    app = client(RAW)
    assert app.get("/score?a=1&b=x").get_json() == {
        "method": "GET",
        "query": "a=1&b=x",
        "body": "",
    }
    assert app.post("/score", data=b"[1, 2, 3]").get_json()["body"] == "[1, 2, 3]"
    assert app.options("/score").get_json()["method"] == "OPTIONS"
    head = app.head("/score")
    assert head.status_code == 200
    assert head.data == b""


def test_raw_mode_bad_json_in_run_is_user_error(client: MakeClient) -> None:
    source = """
    from azureml_inference_server_http.api.aml_request import rawhttp
    def init(): pass
    @rawhttp
    def run(request):
        return request.json
    """
    response = client(source).post("/score", data="{", content_type="application/json")
    assert response.status_code == 500
    assert response.get_json()["message"].startswith("An unexpected error occurred in scoring script.")


def test_legacy_import_names_work(client: MakeClient) -> None:
    source = """
    from azureml.contrib.services.aml_request import rawhttp, AMLRequest
    from azureml.contrib.services.aml_response import AMLResponse
    def init(): pass
    @rawhttp
    def run(request):
        return AMLResponse({"ok": True}, 200, json_str=True)
    """
    assert client(source).get("/score").get_json() == {"ok": True}


@pytest.mark.parametrize(
    "body",
    [
        "[" * 5000 + "]" * 5000,
        '{"num": NaN}',
        '{"num": 1e999}',
        '{"num": ' + "9" * 5000 + "}",
        b'{"num": "\xff"}',
        '{"num": Infinity}',
    ],
)
def test_schema_mode_hostile_json_is_400(client: MakeClient, body: str | bytes) -> None:
    response = client(SCHEMA).post("/score", data=body, content_type="application/json")
    assert response.status_code == 400, response.data
    assert response.get_json()["message"].startswith("POST body could not be decoded as JSON: ")


def test_query_with_deep_nesting_is_400(client: MakeClient) -> None:
    response = client(SCHEMA).get("/score?num=" + "[" * 3000 + "]" * 3000)
    assert response.status_code == 400


def test_query_invalid_utf8_is_400(client: MakeClient) -> None:
    response = client(ECHO).get("/score?a=%ff")
    assert response.status_code == 400
    assert "UTF-8" in response.get_json()["message"]


def test_utf16_json_body_accepted(client: MakeClient) -> None:
    body = json.dumps({"num": 2}).encode("utf-16")
    assert client(SCHEMA).post("/score", data=body, content_type="application/json").get_json() == 12


NUMPY_SHAPED = """
import numpy as np
from inference_schema.schema_decorators import input_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
def init(): pass
@input_schema("data", NumpyParameterType(np.zeros((2, 3), dtype=np.int64)))
def run(data):
    return {"dtype": str(data.dtype), "shape": list(data.shape), "type": type(data).__name__}
"""


def test_numpy_fast_path_keeps_inference_schema_semantics(client: MakeClient) -> None:
    app = client(NUMPY_SHAPED)
    ok = app.post("/score", json={"data": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]})
    assert ok.get_json() == {"dtype": "int64", "shape": [3, 3], "type": "ndarray"}
    # A wrong row length is refused by inference-schema's own check, as without the fast path.
    wrong = app.post("/score", json={"data": [[1, 2], [3, 4]]})
    assert wrong.status_code == 500
    assert wrong.headers["x-ms-run-function-failed"] == "True"
    not_a_list = app.post("/score", json={"data": 5})
    assert not_a_list.status_code == 500


def test_numpy_parameter_types_found_on_decorated_run(write_script) -> None:  # type: ignore[no-untyped-def]
    from azureml_inference_server_http.server import user_script

    path = write_script(NUMPY_SHAPED, "shaped.py")
    script = user_script.load(str(path), str(path.parent))
    assert list(script.numpy_params) == ["data"]
