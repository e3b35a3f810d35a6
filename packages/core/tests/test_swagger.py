"""GET /swagger.json (docs/compatibility.md#swagger)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from core_helpers import ECHO
from core_helpers import MakeClient

from azureml_inference_server_http.server import create_app

NUMPY = """
import numpy as np
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
def init(): pass
@input_schema("data", NumpyParameterType(np.array([10, 9, 8, 7, 6, 5, 4, 3, 2, 1], dtype=np.int64)))
@output_schema(NumpyParameterType(np.array([3726.995])))
def run(data):
    return data
"""


def test_versions_and_aliases(client: MakeClient) -> None:
    app = client(ECHO)
    assert app.get("/swagger.json").get_json()["swagger"] == "2.0"
    assert app.get("/swagger.json?version=2.0").get_json()["swagger"] == "2.0"
    assert app.get("/swagger.json?version=3").get_json()["openapi"] == "3.0.3"
    assert app.get("/swagger.json?version=3.0").data == app.get("/swagger.json?version=3").data
    assert app.get("/swagger.json?version=3.1").get_json()["openapi"] == "3.1.0"


def test_bad_version(client: MakeClient) -> None:
    response = client(ECHO).get("/swagger.json?version=3.0a")
    assert response.status_code == 404
    assert response.get_json() == {"message": "Swagger version [3.0a] is not valid. Supported versions: [2, 3, 3.1]."}


def test_undecorated_schemas(client: MakeClient) -> None:
    doc = client(ECHO).get("/swagger.json").get_json()
    assert doc["definitions"]["ServiceInput"] == {"type": "object", "example": {}}
    assert doc["definitions"]["ServiceOutput"] == {"type": "object", "example": {}}
    assert list(doc) == [
        "swagger",
        "info",
        "schemes",
        "consumes",
        "produces",
        "securityDefinitions",
        "paths",
        "definitions",
    ]
    assert list(doc["paths"]) == ["/", "/score", "/swagger.json"]
    assert doc["info"]["description"] == "API specification for the Azure Machine Learning service ML service"


def test_decorated_schemas(client: MakeClient) -> None:
    doc = client(NUMPY).get("/swagger.json").get_json()
    assert doc["definitions"]["ServiceInput"] == {
        "type": "object",
        "properties": {
            "data": {
                "type": "array",
                "items": {"type": "integer", "format": "int64"},
                "format": "numpy.ndarray",
            }
        },
        "example": {"data": [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]},
    }
    assert doc["definitions"]["ServiceOutput"] == {
        "type": "array",
        "items": {"type": "number", "format": "double"},
        "example": [3726.995],
        "format": "numpy.ndarray",
    }
    v3 = client(NUMPY).get("/swagger.json?version=3").get_json()
    assert v3["components"]["schemas"]["ServiceInput"] == doc["definitions"]["ServiceInput"]


def test_version_2_unavailable_for_mixed_lists(client: MakeClient) -> None:
    source = """
from inference_schema.schema_decorators import input_schema
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
def init(): pass
@input_schema("data", StandardPythonParameterType([1, "a"]))
def run(data): return data
"""
    app = client(source)
    response = app.get("/swagger.json?version=2")
    assert response.status_code == 404
    assert response.get_json() == {
        "message": "Swagger version [2] is not supported for the scoring script. Supported swagger versions: [3, 3.1]."
    }
    assert app.get("/swagger.json?version=3").status_code == 200


def test_prefix_and_names(client: MakeClient) -> None:
    env = {
        "SERVICE_PATH_PREFIX": "/a/b/",
        "SERVICE_NAME": 'my "quoted" \\ service',
        "SERVICE_VERSION": "2.1",
    }
    doc = client(ECHO, env=env).get("/swagger.json").get_json()
    assert list(doc["paths"]) == ["/a/b/", "/a/b/score", "/a/b/swagger.json"]
    assert doc["info"]["title"] == 'my "quoted" \\ service'
    assert doc["info"]["version"] == "2.1"


def test_user_documents(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text(ECHO)
    (tmp_path / "swagger2.json").write_text(json.dumps("swagger2"))
    (tmp_path / "swagger3.json").write_text(json.dumps("swagger3"))
    (tmp_path / "swagger3.1.json").write_text("{}")  # falsy: ignored
    environ = {"AML_APP_ROOT": str(tmp_path), "AZUREML_ENTRY_SCRIPT": "score.py"}
    app = create_app(environ=environ).test_client()
    assert app.get("/swagger.json").get_json() == "swagger2"
    assert app.get("/swagger.json?version=3").get_json() == "swagger3"
    assert app.get("/swagger.json?version=3.1").get_json()["openapi"] == "3.1.0"
    (tmp_path / "swagger.json").write_text(json.dumps("swagger"))
    assert create_app(environ=environ).test_client().get("/swagger.json").get_json() == "swagger"


def test_invalid_user_document_fails_boot(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text(ECHO)
    (tmp_path / "swagger.json").write_text("{not json")
    with pytest.raises(ValueError):
        create_app(environ={"AML_APP_ROOT": str(tmp_path), "AZUREML_ENTRY_SCRIPT": "score.py"})
