"""The Open Inference Protocol (V2) routes and bodies in ``/openapi.json``, for a loaded script."""

from __future__ import annotations

from typing import Any

from .. import constants as c
from .tensors import NUMPY_DTYPES
from .user_script import InputMode
from .user_script import UserScript
from .v2_model import BINARY
from .v2_model import JSON
from .v2_model import MODEL_VERSION


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def openapi_schemas() -> dict[str, Any]:
    """The V2 bodies, for the components of /openapi.json."""
    parameters = {"type": "object"}
    tensor_shape = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    return {
        "V2Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
            "additionalProperties": False,
        },
        "V2ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "V2TensorMetadata": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": {"enum": list(NUMPY_DTYPES)},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
            },
        },
        "V2ModelMetadata": {
            "type": "object",
            "required": ["name", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _ref("V2TensorMetadata")},
                "outputs": {"type": "array", "items": _ref("V2TensorMetadata")},
            },
        },
        "V2ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "V2InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": parameters,
                "inputs": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "shape", "datatype", "data"],
                        "properties": {
                            "name": {"type": "string"},
                            "shape": tensor_shape,
                            "datatype": {"enum": list(NUMPY_DTYPES)},
                            "parameters": parameters,
                            "data": {"type": "array"},
                        },
                    },
                },
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "parameters": parameters},
                    },
                },
            },
        },
        "V2InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "shape", "datatype"],
                        "properties": {
                            "name": {"type": "string"},
                            "shape": tensor_shape,
                            "datatype": {"enum": list(NUMPY_DTYPES)},
                            "parameters": parameters,
                            "data": {"type": "array"},
                        },
                    },
                },
            },
        },
    }


def openapi_paths(script: UserScript, model_name: str, body_limit: int | None) -> dict[str, Any]:
    """The V2 routes of /openapi.json for a loaded script."""

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": {JSON: {"schema": _ref("V2Error")}}}

    header_too_long = error(
        f"A request id header is longer than {c.HEADER_LIMIT} characters (or the headers are over the HTTP "
        "server's limits, which it answers itself, as on /score)."
    )
    internal = {
        "description": "run() raised or timed out (`x-ms-run-function-failed: True`, V2 error body), or an error in "
        "the server (`False`, the server's error body).",
        "content": {JSON: {"schema": {"anyOf": [_ref("V2Error"), _ref("Error")]}}},
    }
    unknown = error("No such model or version.")
    not_ready = error("init() has not completed (or failed).")
    name_parameter = {"name": "model_name", "in": "path", "required": True, "schema": {"enum": [model_name]}}
    version_parameter = {"name": "model_version", "in": "path", "required": True, "schema": {"enum": [MODEL_VERSION]}}
    paths: dict[str, Any] = {
        "/v2": {
            "get": {
                "operationId": "V2ServerMetadata",
                "summary": "Open Inference Protocol: server metadata.",
                "responses": {
                    "200": {"description": "The server.", "content": {JSON: {"schema": _ref("V2ServerMetadata")}}},
                    "431": header_too_long,
                    "500": internal,
                },
            }
        }
    }
    infer_responses: dict[str, Any] = {
        "200": {
            "description": "The outputs: JSON, or with binary outputs (the binary tensor extension) the JSON header "
            "of `Inference-Header-Content-Length` bytes followed by the outputs' bytes.",
            "content": {
                JSON: {"schema": _ref("V2InferenceResponse")},
                BINARY: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "400": error("The request is not a valid inference request for this model: see `error`."),
        "404": unknown,
    }
    if body_limit is not None:
        infer_responses["413"] = error(f"The body is larger than {body_limit} bytes (MAX_REQUEST_BODY_MB).")
    infer_responses["431"] = header_too_long
    infer_responses["500"] = internal
    if script.mode is InputMode.RAW:
        infer_responses["501"] = error("run() is decorated with @rawhttp: call /score.")
    infer_responses["503"] = not_ready
    for prefix, parameters, suffix in (
        ("/v2/models/{model_name}", [name_parameter], ""),
        ("/v2/models/{model_name}/versions/{model_version}", [name_parameter, version_parameter], "Version"),
    ):
        paths[prefix] = {
            "get": {
                "operationId": f"V2ModelMetadata{suffix}",
                "summary": "Open Inference Protocol: the model's inputs and outputs.",
                "parameters": parameters,
                "responses": {
                    "200": {"description": "The model.", "content": {JSON: {"schema": _ref("V2ModelMetadata")}}},
                    "404": unknown,
                    "431": header_too_long,
                    "500": internal,
                    "503": not_ready,
                },
            }
        }
        ready = {"content": {JSON: {"schema": _ref("V2ModelReady")}}}
        paths[f"{prefix}/ready"] = {
            "get": {
                "operationId": f"V2ModelReady{suffix}",
                "summary": "Open Inference Protocol: model readiness (a probe: never waits for init()).",
                "parameters": parameters,
                "responses": {
                    "200": {"description": "Ready.", **ready},
                    "404": unknown,
                    "431": header_too_long,
                    "500": internal,
                    "503": {"description": "Not ready.", **ready},
                },
            }
        }
        paths[f"{prefix}/infer"] = {
            "post": {
                "operationId": f"V2ModelInfer{suffix}",
                "summary": "Open Inference Protocol: call run() with tensors (docs/v2.md).",
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": _ref("V2InferenceRequest")},
                        BINARY: {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "responses": infer_responses,
            }
        }
    return paths
