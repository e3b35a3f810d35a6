"""GET /openapi.json: the OpenAPI 3.1 document of what the server answers (server/openapi.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from core_helpers import ECHO
from core_helpers import MakeClient
from flask import Flask

from azureml_inference_server_http.config import ServerConfig
from azureml_inference_server_http.server import get_state
from azureml_inference_server_http.server.openapi import view
from azureml_inference_server_http.server.state import ServerState

DECORATED = """
import numpy as np
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
def init(): pass
@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0]])))
@input_schema("count", StandardPythonParameterType(1))
@input_schema("options", StandardPythonParameterType({"a": 1, "b": "x"}))
@output_schema(StandardPythonParameterType({"total": 1.0}))
def run(data, count, options=None, extra=None):
    return {"total": float(data.sum()) * count}
"""

INTEGERS = """
import numpy as np
from inference_schema.schema_decorators import input_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
def init(): pass
@input_schema("data", NumpyParameterType(np.array([1, 2], dtype=np.int32)))
def run(data):
    return data.tolist()
"""

RAW = """
from azureml_inference_server_http.api.aml_request import rawhttp
def init(): pass
@rawhttp
def run(request):
    return request.get_data(as_text=True)
"""


def _document(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document: dict[str, Any] = json.loads(response.get_data())
    return document


def _get(client: MakeClient, source: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    response = client(source, env).get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.get_json()
    return document


def _resolve(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for key in node["$ref"].removeprefix("#/").split("/"):
            target = target[key]
        node = target
    return node


def test_openapi_route_serves_an_openapi_31_document(client: MakeClient) -> None:
    response = client(ECHO, {"SERVICE_NAME": "svc", "SERVICE_VERSION": "7"}).get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    assert (document["info"]["title"], document["info"]["version"]) == ("svc", "7")
    assert "security" not in document  # the server does not authenticate


def test_openapi_documents_every_route_and_method(make_app: Callable[..., Flask]) -> None:
    app = make_app(ECHO)
    document = _document(app)
    routes = {
        re.sub(r"<([a-z_]+)>", r"{\1}", rule.rule): rule.methods or set()
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
    }
    assert set(document["paths"]) == set(routes)
    for path, item in document["paths"].items():
        documented = {method.upper() for method in item}
        assert documented <= routes[path], path
        assert routes[path] - {"HEAD", "OPTIONS"} <= documented, path


def test_openapi_metrics_path_follows_the_setting(client: MakeClient) -> None:
    assert "/metrics" in _get(client, ECHO)["paths"]
    off = client(ECHO, {"AZMLINFSRV_METRICS_ENABLED": "false"})
    assert "/metrics" not in off.get("/openapi.json").get_json()["paths"]
    assert off.get("/metrics").status_code == 404


def test_openapi_path_prefix_goes_to_servers(client: MakeClient) -> None:
    document = _get(client, ECHO, {"SERVICE_PATH_PREFIX": "/a/b/"})
    assert [server["url"] for server in document["servers"]] == ["/a/b", "/"]
    assert "/score" in document["paths"]  # the routes themselves do not move
    assert "servers" not in _get(client, ECHO)


def test_openapi_undecorated_score(client: MakeClient) -> None:
    document = _get(client, ECHO)
    post = document["paths"]["/score"]["post"]
    assert post["requestBody"]["required"] is False
    assert _resolve(document, post["requestBody"]["content"]["application/json"]["schema"]) == {}
    assert set(post["responses"]) == {"200", "400", "413", "431", "500", "503"}
    get = document["paths"]["/score"]["get"]
    assert "parameters" not in get
    assert set(get["responses"]) == {"200", "400", "413", "414", "431", "500", "503"}
    assert _resolve(document, post["responses"]["200"]["content"]["application/json"]["schema"]) == {}


def test_openapi_decorated_input(client: MakeClient) -> None:
    document = _get(client, DECORATED)
    service_input = document["components"]["schemas"]["ServiceInput"]
    assert service_input["type"] == "object"
    # extra has a default; so has options, but inference-schema refuses None for a dict, so it is required in effect
    assert service_input["required"] == ["data", "count", "options"]
    properties = service_input["properties"]
    assert list(properties) == ["data", "count", "options", "extra"]
    assert properties["extra"] == {}  # no @input_schema: any value reaches run()
    # inference-schema checks a dict parameter's type only, and an int parameter takes booleans too
    assert properties["options"] == {"type": "object"}
    assert {"type": "boolean"} in properties["count"]["anyOf"]
    data = properties["data"]
    assert (data["minItems"], data["items"]["minItems"], data["items"]["maxItems"]) == (1, 3, 3)
    post = document["paths"]["/score"]["post"]
    assert post["requestBody"]["required"] is True
    assert list(post["requestBody"]["content"]) == ["application/json"]
    assert {"400", "413", "415", "500"} <= set(post["responses"])
    parameters = {p["name"]: p for p in document["paths"]["/score"]["get"]["parameters"]}
    assert {name: p["required"] for name, p in parameters.items()} == {
        "data": True,
        "count": True,
        "options": True,
        "extra": False,
    }
    assert parameters["data"]["content"]["application/json"]["schema"] == data
    assert "415" not in document["paths"]["/score"]["get"]["responses"]
    output = document["components"]["schemas"]["ServiceOutput"]
    assert output["properties"] == {"total": {"type": "number", "format": "double"}}


def test_openapi_decorated_document_matches_the_server(client: MakeClient) -> None:
    app = client(DECORATED)
    assert app.post("/score", json={"data": [[1, 2, 3]], "count": True, "options": {}}).status_code == 200
    assert app.post("/score", json={"data": [[1, 2, 3]], "count": 1}).status_code == 500  # options=None refused
    assert app.post("/score", json={"data": [[1, 2, 3]], "count": 2, "options": {"z": []}}).status_code == 200
    assert app.post("/score", json={"data": [[1, 2, 3]], "options": {}}).status_code == 400  # count is required
    assert app.post("/score", json={"data": [], "count": 1, "options": {}}).status_code == 500  # minItems 1
    assert app.post("/score", json={"data": [[1, 2]], "count": 1, "options": {}}).status_code == 500  # 3 columns
    assert app.get('/score?data=[[1,2,3]]&count=1&options={"a":1}').status_code == 200


def _accepts(schema: dict[str, Any], value: Any) -> bool:
    """The few JSON Schema keywords the numpy element schemas use."""
    if "anyOf" in schema:
        return any(_accepts(option, value) for option in schema["anyOf"])
    types = schema.get("type")
    kinds = {
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "null": value is None,
        "string": isinstance(value, str),
    }
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(kinds[name] for name in names):
            return False
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        return False
    if kinds["number"] and "minimum" in schema and value < schema["minimum"]:
        return False
    return not (kinds["number"] and "maximum" in schema and value > schema["maximum"])


def _numpy_accepts(value: Any, dtype: Any) -> bool:
    try:
        np.array([[value, 1, 2]], dtype=dtype)  # in a row, as the server hands it to numpy
    except (ValueError, TypeError, OverflowError):
        return False
    return True


ELEMENT_VALUES = [
    0,
    -1,
    1.5,
    2**31,
    -(2**31) - 1,
    2**63,
    1e300,
    True,
    None,
    "12",
    " -7 ",
    "1.5",
    "1e3",
    "inf",
    "-Infinity",
    "nan",
    "1_000",
    "0_0_1",
    "1__0",
    "abc",
    "",
    "0x10",
    [],
    {},
]


@pytest.mark.parametrize(("source", "dtype"), [(DECORATED, np.float64), (INTEGERS, np.int32)], ids=["f8", "i4"])
def test_openapi_numpy_elements_match_what_numpy_accepts(client: MakeClient, source: str, dtype: Any) -> None:
    """Every value the element schema allows, numpy converts; every value it refuses, numpy refuses (for this list:
    the schema is exact on these, and on the rest it errs on the side of refusing)."""
    data = _get(client, source)["components"]["schemas"]["ServiceInput"]["properties"]["data"]
    while data.get("type") == "array" and data.get("items", {}).get("type") == "array":
        data = data["items"]
    element = data["items"]
    mismatches = [value for value in ELEMENT_VALUES if _accepts(element, value) != _numpy_accepts(value, dtype)]
    assert mismatches == [], mismatches


def test_openapi_raw_score(client: MakeClient) -> None:
    document = _get(client, RAW)
    score = document["paths"]["/score"]
    assert score["post"]["requestBody"] == {"required": False, "content": {"*/*": {"schema": {}}}}
    assert set(score["post"]["responses"]) == {"default", "413", "431", "500", "503"}  # run() sets the status
    assert "options" not in score  # under @rawhttp, run() answers OPTIONS too


def test_openapi_body_limit(client: MakeClient) -> None:
    limited = _get(client, ECHO, {"MAX_REQUEST_BODY_MB": "2"})
    description = limited["paths"]["/score"]["post"]["responses"]["413"]["description"]
    assert str(2 * 1024 * 1024) in description
    unlimited = _get(client, ECHO, {"MAX_REQUEST_BODY_MB": "0"})
    assert "413" not in unlimited["paths"]["/score"]["post"]["responses"]


def test_openapi_swagger_route_lists_the_versions_served(client: MakeClient, tmp_path: Path) -> None:
    parameter = _get(client, ECHO)["paths"]["/swagger.json"]["get"]["parameters"][0]
    assert parameter["schema"]["enum"] == ["2", "2.0", "3", "3.0", "3.1"]
    assert parameter["required"] is False
    # A user document in AML_APP_ROOT is served as it is, whatever JSON it holds (docs/compatibility.md#user-swagger).
    (tmp_path / "swagger.json").write_text('"a string"', encoding="utf-8")
    ok = _get(client, ECHO)["paths"]["/swagger.json"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {}


def test_openapi_error_bodies_are_the_documented_shape(client: MakeClient) -> None:
    app = client(ECHO)
    document = app.get("/openapi.json").get_json()
    error = document["components"]["schemas"]["Error"]
    for response in (
        app.get("/swagger.json?version=9"),  # 404
        app.get("/score", headers={"x-request-id": "x" * 101}),  # 431
        app.post("/score", data=b"\xff", content_type="text/plain"),  # 400
    ):
        status = str(response.status_code)
        declared = _resolve(
            document,
            document["paths"][response.request.path]["get" if response.request.method == "GET" else "post"][
                "responses"
            ][status],
        )
        assert response.mimetype in declared["content"]
        body = response.get_json()
        assert set(body) == set(error["required"]) and isinstance(body["message"], str)


def test_openapi_not_ready_is_503() -> None:
    state = ServerState(ServerConfig())
    state.settled.set()  # init() failed: settled, never ready
    response = view(state)()
    assert response.status_code == 503
    assert response.mimetype == "application/json"
    assert set(json.loads(response.get_data())) == {"message"}


def test_openapi_is_rebuilt_on_reload(make_app: Callable[..., Flask], write_script: Callable[[str, str], Path]) -> None:
    app = make_app(ECHO)
    assert "parameters" not in _document(app)["paths"]["/score"]["get"]
    write_script(DECORATED, "score.py")
    assert get_state(app).reload()
    assert "parameters" in _document(app)["paths"]["/score"]["get"]
