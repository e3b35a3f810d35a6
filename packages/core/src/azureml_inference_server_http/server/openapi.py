"""The OpenAPI 3.1 document of ``GET /openapi.json``: what this server really answers, route by route.

``/swagger.json`` stays upstream's document byte for byte (docs/compatibility.md#swagger), with its inaccuracies:
the health route's content type, the document route typed as a string, ``GET /score`` missing, no ``required`` list, an
optional body, and an undecorated run() typed as an object (docs/reliability-fuzz.md, findings 9 to 14). This
document is our own addition, so it can be exact: every route this app registers, the request each input mode of
run() accepts, and every status the app answers with its real content type and body. Like the swagger documents,
it is built once per load of the score script (boot and reload) and served as pre-encoded bytes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

from flask import Response

from .. import constants as c
from ..config import ServerConfig
from . import v2_model
from . import v2_openapi
from .swagger import VERSION_ALIASES
from .swagger import SwaggerDocuments
from .swagger import service_schemas
from .user_script import InputMode
from .user_script import UserScript
from .user_script import schema_parameter_types

if TYPE_CHECKING:
    from .state import ServerState

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
MSG_NOT_READY = "The API description is not ready: init() has not completed."
_PHASES = ["starting", "initializing", "ready", "failed", "draining"]
# What float() (and so numpy) reads as a number: signs, "_" between digits, exponents, inf and nan, spaces around.
_FLOAT_TEXT = (
    r"^\s*[+-]?((([0-9](_?[0-9])*)(\.([0-9](_?[0-9])*)?)?|\.[0-9](_?[0-9])*)([eE][+-]?[0-9](_?[0-9])*)?"
    r"|[iI][nN][fF]([iI][nN][iI][tT][yY])?|[nN][aA][nN])\s*$"
)


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _error(description: str, *headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json_content(_ref("schemas", "Error"))}
    if headers:
        response["headers"] = {name: _ref("headers", name) for name in headers}
    return response


def _components(service_input: dict[str, Any], service_output: dict[str, Any]) -> dict[str, Any]:
    failed = c.HEADER_RUN_FUNCTION_FAILED
    ids = (c.HEADER_REQUEST_ID, c.HEADER_CLIENT_REQUEST_ID, c.HEADER_LEGACY_REQUEST_ID)
    return {
        "schemas": {
            "ServiceInput": service_input,
            "ServiceOutput": service_output,
            "Error": {
                "type": "object",
                "required": ["message"],
                "properties": {"message": {"type": "string"}},
                "additionalProperties": False,
            },
            "Liveness": {
                "type": "object",
                "required": ["live"],
                "properties": {"live": {"const": True}},
                "additionalProperties": False,
            },
            **v2_openapi.openapi_schemas(),
            "Readiness": {
                "type": "object",
                "required": ["ready", "phase"],
                "properties": {
                    "ready": {"type": "boolean"},
                    "phase": {"enum": _PHASES},
                    "init_seconds": {"type": "number", "minimum": 0},
                    "last_error": {"type": "string"},
                },
                "additionalProperties": False,
            },
        },
        "headers": {
            failed: {
                "description": "`True` when run() failed or timed out (the 500 is the score script's), else `False`.",
                "schema": {"enum": ["True", "False"]},
            },
            c.HEADER_RUN_FN_EXEC_MS: {
                "description": "Time spent in run(), in milliseconds.",
                "schema": {"type": "string", "pattern": r"^[0-9]+\.[0-9]{3}$"},
            },
            c.HEADER_REQUEST_ID: {
                "description": f"The request's `{c.HEADER_REQUEST_ID}`, or a new UUID when it sent none.",
                "schema": {"type": "string", "maxLength": c.HEADER_LIMIT},
            },
            c.HEADER_CLIENT_REQUEST_ID: {
                "description": f"The request's `{c.HEADER_CLIENT_REQUEST_ID}` (or deprecated `{ids[2]}`).",
                "schema": {"type": "string", "maxLength": c.HEADER_LIMIT},
            },
            c.HEADER_LEGACY_REQUEST_ID: {
                "description": "Deprecated: the client request id, else the request id.",
                "schema": {"type": "string", "maxLength": c.HEADER_LIMIT},
                "deprecated": True,
            },
        },
        "responses": {
            "BadRequest": _error("The request cannot be read: see `message`.", failed, *ids),
            "HeaderTooLong": {
                "description": f"A request id header (`{c.HEADER_REQUEST_ID}`, `{c.HEADER_CLIENT_REQUEST_ID}`, "
                f"`{c.HEADER_LEGACY_REQUEST_ID}`, `{c.HEADER_TRACE_ID}`) is longer than {c.HEADER_LIMIT} characters "
                "(JSON, with the header below); or the headers are over the HTTP server's limits (gunicorn: 100 "
                "fields of 8190 bytes), which the HTTP server answers itself (see the description at the top).",
                "headers": {failed: _ref("headers", failed)},
                "content": {JSON: {"schema": _ref("schemas", "Error")}, "text/html": {"schema": {"type": "string"}}},
            },
            "NotReady": _error("init() has not completed (or failed); retry later.", failed),
            "RequestLineTooLong": {
                "description": "The request line (mostly its query string) is longer than the HTTP server's limit "
                "(gunicorn: 4094 bytes), which the HTTP server answers itself (see the description at the top). "
                "waitress refuses a request line longer than its header limit with 431 instead.",
                "content": {
                    JSON: {"schema": _ref("schemas", "Error")},
                    "text/html": {"schema": {"type": "string"}},
                },
            },
            "InternalError": _error(
                f"An unexpected error in the server (`{failed}: False`), see the server log.", failed
            ),
        },
    }


# -- run()'s input, per input mode ----------------------------------------------------------------------


def _numpy_leaf(node: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """The values numpy turns into an element of ``dtype`` (``np.array(values, dtype=...)``), as a schema."""
    if dtype.kind == "f":
        # JSON numbers; null is NaN, booleans are 0 and 1, and numpy parses text as float() does.
        return {"anyOf": [node, {"type": ["boolean", "null"]}, {"type": "string", "pattern": _FLOAT_TEXT}]}
    if dtype.kind in "iu":
        import numpy as np

        info = np.iinfo(dtype)
        # Numbers in range (a fraction is truncated), booleans, and integers as text with fewer digits than the
        # bound, which always fit.
        digits = len(str(info.max)) - 1
        sign = "[+-]?" if dtype.kind == "i" else "[+]?"
        return {
            "anyOf": [
                {"type": "number", "minimum": int(info.min), "maximum": int(info.max)},
                {"type": "boolean"},
                {"type": "string", "pattern": rf"^\s*{sign}(0_?)*[0-9](_?[0-9]){{0,{digits - 1}}}\s*$"},
            ]
        }
    return node


def _numpy_accepts(schema: dict[str, Any], param_type: Any) -> dict[str, Any]:
    """NumpyParameterType beyond inference-schema's schema: the sample's shape, and numpy's conversions."""
    sample = getattr(param_type, "sample_input", None)
    shape = getattr(sample, "shape", None)
    dtype = getattr(sample, "dtype", None)
    if not isinstance(shape, tuple) or dtype is None or schema.get("type") != "array":
        return schema
    enforce_shape = bool(getattr(param_type, "enforce_shape", True))
    enforce_type = bool(getattr(param_type, "enforce_column_type", True))
    node = schema
    for depth in range(len(shape)):
        if enforce_shape:
            if depth > 0:
                # Every dimension but the first must have the sample's size.
                node["minItems"] = node["maxItems"] = int(shape[depth])
            elif len(shape) > 1:
                # An empty outer list is a 1-dimensional array: refused for a sample of more dimensions.
                node["minItems"] = 1
        if depth == len(shape) - 1:
            leaf = node.get("items", {})
            if not enforce_type:
                node["items"] = {"not": {"type": "array"}}
            elif dtype.names is None and isinstance(leaf, dict):
                node["items"] = _numpy_leaf(leaf, dtype)
        else:
            inner = node.get("items")
            if not isinstance(inner, dict) or inner.get("type") != "array":
                break
            node = inner
    return schema


def _accepts(schema: Any, param_type: Any) -> Any:
    """What an @input_schema type lets through to run(), which is not always what its schema says.

    inference-schema checks a standard Python value only at the top (and in nested parameter types): a dict's
    other keys and a list's items are not checked, and an ``int`` parameter takes booleans. numpy arrays are
    checked against the sample's shape and converted by numpy.
    """
    if not isinstance(schema, dict):
        return schema
    kind = type(param_type).__name__
    if kind == "NumpyParameterType":
        return _numpy_accepts(schema, param_type)
    if kind != "StandardPythonParameterType":
        return schema  # pandas and spark types: inference-schema's schema as it is
    sample_type = getattr(param_type, "sample_data_type", None)
    if sample_type is dict:
        nested = getattr(param_type, "sample_data_type_map", None) or {}
        properties = schema.get("properties") or {}
        accepted: dict[str, Any] = {"type": "object"}
        if nested:
            accepted["properties"] = {key: _accepts(properties.get(key, {}), value) for key, value in nested.items()}
        return accepted
    if sample_type is list:
        nested_list = list(getattr(param_type, "sample_data_type_list", None) or [])
        accepted = {"type": "array"}
        if nested_list:
            accepted["items"] = _accepts(schema.get("items", {}), nested_list[0])
        return accepted
    if sample_type is int:
        return {"anyOf": [schema, {"type": "boolean"}]}
    return schema


def _default_passes(default: Any, param_type: Any) -> bool:
    """Whether inference-schema lets a parameter's default through.

    The server passes an omitted parameter's default explicitly (inputs.py), so inference-schema checks it like a
    value from the request: a default its type refuses (``None`` for a dict) makes the parameter required in effect.
    """
    if param_type is None:
        return True
    try:
        from inference_schema.schema_decorators import _deserialize_input_argument

        _deserialize_input_argument(copy.deepcopy(default), param_type, "")
    except ImportError:  # pragma: no cover - the layout inference-schema 1.x has had so far
        return True
    except Exception:
        return False
    return True


def _schema_input(script: UserScript, service_input: Any) -> dict[str, Any]:
    """ServiceInput of a decorated run(): a JSON object, with ``required`` for the parameters without a default."""
    schema: dict[str, Any] = copy.deepcopy(service_input) if isinstance(service_input, dict) else {}
    schema["type"] = "object"
    properties = schema.setdefault("properties", {})
    for name in script.input_params:
        properties.setdefault(name, {})  # a run() parameter without @input_schema takes any JSON value
    param_types = schema_parameter_types(script.run)
    for name, param_type in param_types.items():
        if name in properties:
            properties[name] = _accepts(properties[name], param_type)
    required = [
        name
        for name in script.input_params
        if name not in script.defaults or not _default_passes(script.defaults[name], param_types.get(name))
    ]
    if required:
        schema["required"] = required
    return schema


def _score_requests(script: UserScript, service_input: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The GET (query parameters) and POST (body) halves of the score operations, by input mode."""
    if script.mode is InputMode.SCHEMA:
        properties = service_input.get("properties", {})
        required = set(service_input.get("required", []))
        get = {
            "description": "run()'s arguments as query parameters, each value JSON (a value that is not JSON "
            "is taken as a string).",
            "parameters": [
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "content": _json_content(properties.get(name, {})),
                }
                for name in script.input_params
            ],
        }
        post = {
            "description": "run()'s arguments as a JSON object; other keys are ignored.",
            "requestBody": {
                "required": True,
                "content": _json_content(_ref("schemas", "ServiceInput")),
            },
        }
        return get, post
    if script.mode is InputMode.RAW:
        anything = {"description": "run() gets the request itself (`@rawhttp`) and answers for itself."}
        return dict(anything), {**anything, "requestBody": {"required": False, "content": {"*/*": {"schema": {}}}}}
    # No parameter is declared: any name and value is accepted, and OpenAPI's free-form query object does not map
    # one to one onto a query string (nested values are flattened or dropped), so it would misstate what is sent.
    get = {
        "description": 'Any query string, given to run() as a JSON object in a string: `?a=1&b=x` gives `{"a": 1, '
        '"b": "x"}`. Values that are JSON are parsed under the input policy (the literals NaN and Infinity and '
        "numbers that overflow a float are refused with 400), other values are taken as text, and repeated names "
        "become lists.",
    }
    post = {
        "description": "The body, whatever its content type, decoded as UTF-8: run() gets it as a string.",
        "requestBody": {
            "required": False,
            "content": {
                JSON: {"schema": _ref("schemas", "ServiceInput")},
                "text/plain": {"schema": {"type": "string"}},
            },
        },
    }
    return get, post


def _score_responses(script: UserScript, config: ServerConfig, method: str) -> dict[str, Any]:
    failed = c.HEADER_RUN_FUNCTION_FAILED
    ids = (c.HEADER_REQUEST_ID, c.HEADER_CLIENT_REQUEST_ID, c.HEADER_LEGACY_REQUEST_ID)
    responses: dict[str, Any] = {}
    if script.mode is InputMode.RAW:
        responses["default"] = {
            "description": "Whatever run() returns: its status, headers and body.",
            "content": {"*/*": {"schema": {}}},
        }
    else:
        ok: dict[str, Any] = {
            "description": "run()'s result as JSON (`null` is answered as `{}`). A run() that returns its own "
            "response object (AMLResponse) sets its own status, headers and body instead.",
            "headers": {name: _ref("headers", name) for name in (failed, c.HEADER_RUN_FN_EXEC_MS, *ids)},
            "content": _json_content(_ref("schemas", "ServiceOutput")),
        }
        responses["200"] = ok
        responses["400"] = _ref("responses", "BadRequest")
    limit = config.max_request_body_bytes
    if limit is not None:
        responses["413"] = _error(f"The body is larger than {limit} bytes (MAX_REQUEST_BODY_MB).", failed)
    if method == "get":
        responses["414"] = _ref("responses", "RequestLineTooLong")
    if script.mode is InputMode.SCHEMA and method == "post":
        responses["415"] = _error("The body is not JSON (`Content-Type: application/json`).", failed)
    responses["431"] = _ref("responses", "HeaderTooLong")
    responses["500"] = _error(
        f"run() raised or timed out (`{failed}: True`; timeouts say `Scoring timeout after N ms`), its result "
        f"cannot be serialized (`{failed}: True`), a value refused by an @input_schema type (`{failed}: True`, "
        f"as upstream), or an error in the server (`{failed}: False`).",
        failed,
    )
    responses["503"] = _ref("responses", "NotReady")
    return responses


# -- the routes -------------------------------------------------------------------------------------------


def _options(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "responses": {
            "200": {
                "description": "An empty body; CORS headers when AML_CORS_ORIGINS allows the request's Origin.",
                "content": {"text/html": {"schema": {"type": "string", "maxLength": 0}}},
            },
            "431": _ref("responses", "HeaderTooLong"),
            "500": _ref("responses", "InternalError"),
            "503": _ref("responses", "NotReady"),
        },
    }


def _swagger_operation(swagger: SwaggerDocuments) -> dict[str, Any]:
    available = swagger.versions
    aliases = [alias for alias, version in VERSION_ALIASES.items() if version in available]
    parameter: dict[str, Any] = {
        "name": "version",
        "in": "query",
        "description": "The document's version; without it, `2`.",
        "required": "2" not in available,
        "schema": {"type": "string", "enum": aliases},
    }
    if not aliases:
        parameter["schema"] = {"type": "string"}
    objects = all(isinstance(json.loads(document), dict) for document in swagger.documents.values())
    return {
        "operationId": "GetSwaggerSpec",
        "summary": "Upstream's Swagger 2.0, OpenAPI 3.0 or 3.1 document, kept byte for byte for compatibility.",
        "parameters": [parameter],
        "responses": {
            "200": {
                "description": "The document (a user-supplied file in AML_APP_ROOT is served as it is).",
                "content": _json_content({"type": "object"} if objects else {}),
            },
            "400": _ref("responses", "BadRequest"),
            "404": _error("This version is unknown, or not available for this score script."),
            "414": _ref("responses", "RequestLineTooLong"),
            "431": _ref("responses", "HeaderTooLong"),
            "500": _ref("responses", "InternalError"),
            "503": _ref("responses", "NotReady"),
        },
    }


def _paths(script: UserScript, config: ServerConfig, swagger: SwaggerDocuments, service_input: Any) -> dict[str, Any]:
    get_request, post_request = _score_requests(script, service_input)
    internal = _ref("responses", "InternalError")
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "operationId": "ServiceHealthCheck",
                "summary": "Liveness, as upstream: `Healthy` once init() has completed.",
                "responses": {
                    "200": {
                        "description": "The service is up.",
                        "content": {"text/html": {"schema": {"type": "string", "const": "Healthy"}}},
                    },
                    "431": _ref("responses", "HeaderTooLong"),
                    "500": internal,
                    "503": _ref("responses", "NotReady"),
                },
            },
            "options": _options("Answered once init() has completed, with `Allow: OPTIONS, GET, HEAD`."),
        },
        "/score": {
            "get": {
                "operationId": "RunMLServiceGet",
                "summary": "Call run() with the query string.",
                **get_request,
                "responses": _score_responses(script, config, "get"),
            },
            "post": {
                "operationId": "RunMLService",
                "summary": "Call run() with the body.",
                **post_request,
                "responses": _score_responses(script, config, "post"),
            },
        },
        "/swagger.json": {
            "get": _swagger_operation(swagger),
            "options": _options("Answered once init() has completed, with `Allow: OPTIONS, GET, HEAD`."),
        },
        "/openapi.json": {
            "get": {
                "operationId": "GetOpenApiSpec",
                "summary": "This document.",
                "responses": {
                    "200": {"description": "This document.", "content": _json_content({"type": "object"})},
                    "500": internal,
                    "503": _error("init() has not completed (or failed); retry later."),
                },
            }
        },
    }
    if script.mode is not InputMode.RAW:
        paths["/score"]["options"] = _options("Answered once init() has completed (under `@rawhttp`, by run()).")
    for prefix in ("", "/v2"):
        paths[f"{prefix}/health/live"] = {
            "get": {
                "operationId": f"Live{prefix.strip('/').upper()}",
                "summary": "Liveness: the process answers (never waits for init()).",
                "responses": {
                    "200": {"description": "Alive.", "content": _json_content(_ref("schemas", "Liveness"))},
                    "500": internal,
                },
            }
        }
        paths[f"{prefix}/health/ready"] = {
            "get": {
                "operationId": f"Ready{prefix.strip('/').upper()}",
                "summary": "Readiness: 200 once init() has completed, 503 before, after a failure, or while draining.",
                "responses": {
                    "200": {"description": "Ready.", "content": _json_content(_ref("schemas", "Readiness"))},
                    "500": internal,
                    "503": {"description": "Not ready.", "content": _json_content(_ref("schemas", "Readiness"))},
                },
            }
        }
    paths.update(
        v2_openapi.openapi_paths(
            script, v2_model.model_name_of(config.entry_script_path, config.model_name), config.max_request_body_bytes
        )
    )
    if config.metrics_enabled:
        paths["/metrics"] = {
            "get": {
                "operationId": "Metrics",
                "summary": "Prometheus metrics, in the text exposition format.",
                "responses": {
                    "200": {"description": "The metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "500": internal,
                },
            }
        }
    return paths


def _info(config: ServerConfig) -> dict[str, Any]:
    return {
        "title": config.service_name,
        "version": config.service_version,
        "description": (
            "What this azmlinfsrv server answers. `/swagger.json` is upstream's document, kept as it is for "
            "compatibility; this one is exact. `x-request-id`, `x-ms-client-request-id` and `TraceId` are echoed "
            f"on `/`, `/score` and `/swagger.json` (at most {c.HEADER_LIMIT} characters each, else 431). A method "
            "a route does not list gets 405 with `Allow` and a JSON body. Requests "
            "the HTTP server refuses before the app sees them (malformed, or over its request line or header "
            'limits) are answered by it: JSON `{"message": ...}` from azmlinfsrv\'s gunicorn worker and from '
            "waitress; other hosts answer as they do (gunicorn's stock workers: an HTML page). The server does not "
            "authenticate: in Azure ML, the endpoint in front of it does."
        ),
    }


def build_document(script: UserScript, config: ServerConfig, swagger: SwaggerDocuments) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a loaded score script."""
    service_input, service_output, _ = service_schemas(script)
    if script.mode is InputMode.SCHEMA:
        service_input = _schema_input(script, service_input)
    else:
        # An undecorated run() gets any body as text; it answers whatever JSON its result is.
        service_input = {}
        service_output = {}
    document: dict[str, Any] = {"openapi": OPENAPI_VERSION, "info": _info(config)}
    stripped = config.service_path_prefix.strip("/")
    if stripped:
        # The routes do not move (docs/compatibility.md#routes): the prefix is where the Azure ML endpoint exposes them.
        document["servers"] = [
            {"url": f"/{stripped}", "description": "Through the Azure ML endpoint (SERVICE_PATH_PREFIX)."},
            {"url": "/", "description": "This server, directly."},
        ]
    document["paths"] = _paths(script, config, swagger, service_input)
    document["components"] = _components(service_input, service_output)
    return document


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode("utf-8")


def view(state: ServerState) -> Callable[[], Response]:
    """The ``GET /openapi.json`` handler: the document of the loaded script, once init() has completed."""

    def openapi() -> Response:
        if not state.wait_ready() or state.openapi is None:
            body = json.dumps({"message": MSG_NOT_READY}).encode("utf-8")
            return Response(body, status=503, mimetype=JSON)
        return Response(state.openapi, status=200, mimetype=JSON)

    return openapi
