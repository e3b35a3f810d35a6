"""The Open Inference Protocol (V2) REST routes beside ``/score``: server and model metadata, readiness, infer.

``/v2/health/live`` and ``/v2/health/ready`` are the app's own probes (app.py). Infer requests take the score route's
path through the server: request ids and response headers, the per-request log line, the body limit, a scoring slot,
``SCORING_TIMEOUT_MS``, metrics, request telemetry and model data collection. How tensors reach run() and how its
result becomes tensors is in tensors.py and docs/v2.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

import orjson
from flask import Flask
from flask import Request
from flask import Response
from flask import request
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import Rule
from werkzeug.wrappers import Response as WerkzeugResponse

from .. import constants as c
from ..exceptions import UserScriptTimeout
from . import jsonio
from .arrays import fits_sample_shape
from .inputs import BODY_READ_KEY
from .inputs import InputError
from .inputs import read_body
from .scoring import SLOT_LEASE_KEY
from .scoring import AnsweredTimeout
from .telemetry import ModelDataRecord
from .tensors import DEFAULT_OUTPUT
from .tensors import NUMPY_DTYPES
from .tensors import InferRequest
from .tensors import Output
from .tensors import Tensor
from .tensors import TensorError
from .tensors import datatype_of_numpy
from .tensors import parse_request
from .tensors import to_outputs
from .user_script import InputMode
from .user_script import UserScript
from .user_script import schema_parameter_types

if TYPE_CHECKING:
    from .app import ScoringApp

logger = logging.getLogger("azmlinfsrv")

MODEL_VERSION = "1"
PLATFORM = "azmlinfsrv"
HEADER_INFERENCE_LENGTH = "Inference-Header-Content-Length"
# The metrics' route label for every infer path, whatever the model's name.
INFER_ROUTE = "/v2/models/{name}/infer"
JSON = "application/json"
BINARY = "application/octet-stream"
MSG_RAW = (
    "run() is decorated with @rawhttp: it answers HTTP requests itself, so it cannot serve Open Inference Protocol "
    "requests. Call /score instead."
)
MSG_NOT_READY = "The model is not ready: init() has not completed."
# Request parameters that belong to the protocol and its extensions, never passed on to run().
RESERVED_PARAMETERS = frozenset(
    (
        "binary_data_output",
        "binary_data",
        "binary_data_size",
        "classification",
        "headers",
        "priority",
        "sequence_end",
        "sequence_id",
        "sequence_start",
        "shared_memory_byte_size",
        "shared_memory_offset",
        "shared_memory_region",
        "timeout",
    )
)
# inference-schema's JSON schema (type, format) of an element, as the protocol's datatype.
_SCHEMA_DATATYPES = {
    ("number", "double"): "FP64",
    ("number", "float"): "FP32",
    ("number", None): "FP64",
    ("integer", None): "INT64",
    ("boolean", None): "BOOL",
    ("string", None): "BYTES",
}
for _bits in (8, 16, 32, 64):
    _SCHEMA_DATATYPES[("integer", f"int{_bits}")] = f"INT{_bits}"
    _SCHEMA_DATATYPES[("integer", f"uint{_bits}")] = f"UINT{_bits}"


def _error_body(text: str) -> bytes:
    return orjson.dumps({"error": text})


def model_name_of(entry_script: str | None, configured: str | None) -> str:
    """The served model's name: the configured one, else the entry script's file stem (``main`` without one)."""
    if configured:
        return configured
    if not entry_script:
        return "main"
    return os.path.splitext(os.path.basename(entry_script))[0]


def tensor_spec(schema: Any) -> dict[str, Any] | None:
    """``{"datatype", "shape"}`` of a value inference-schema describes as ``schema``, or None if it is no tensor."""
    if not isinstance(schema, dict):
        return None
    shape: list[int] = []
    node: Any = schema
    while isinstance(node, dict) and node.get("type") == "array":
        shape.append(-1)
        node = node.get("items")
    if not isinstance(node, dict):
        return None
    kind: Any = node.get("type")
    element_format: Any = node.get("format")
    datatype = _SCHEMA_DATATYPES.get((kind, element_format))
    if datatype is None and kind == "string":
        datatype = "BYTES"  # strings of any format (dates...) travel as text
    if datatype is None:
        return None
    return {"datatype": datatype, "shape": shape or [1]}


def _numpy_spec(param_type: Any) -> dict[str, Any] | None:
    sample = getattr(param_type, "sample_input", None)
    dtype = getattr(sample, "dtype", None)
    shape = getattr(sample, "shape", None)
    if dtype is None or not isinstance(shape, tuple):
        return None
    datatype = datatype_of_numpy(dtype)
    if datatype is None:
        return None
    if getattr(param_type, "enforce_shape", True):
        dims = [-1, *(int(size) for size in shape[1:])] if shape else [1]
    else:
        dims = [-1] * max(1, len(shape))
    return {"datatype": datatype, "shape": dims}


class ModelInfo:
    """What the routes need to know about the loaded script: its metadata, run()'s parameters and output types."""

    def __init__(self, script: UserScript) -> None:
        self.script = script
        self.param_types: dict[str, Any] = {}
        self.inputs: list[dict[str, Any]] = []
        self.outputs: list[dict[str, Any]] = []
        self.hints: dict[str, str] = {}
        if script.mode is not InputMode.SCHEMA:
            return
        from inference_schema.schema_util import get_input_schema
        from inference_schema.schema_util import get_output_schema

        self.param_types = schema_parameter_types(script.run)
        properties = (get_input_schema(script.run) or {}).get("properties") or {}
        for name in script.input_params:
            param_type = self.param_types.get(name)
            spec = _numpy_spec(param_type) if type(param_type).__name__ == "NumpyParameterType" else None
            if spec is None:
                spec = tensor_spec(properties.get(name))
            if spec is not None:
                self.inputs.append({"name": name, **spec})
        output_schema = get_output_schema(script.run) or {}
        named = output_schema.get("properties") if output_schema.get("type") == "object" else None
        candidates = named.items() if isinstance(named, dict) else [(DEFAULT_OUTPUT, output_schema)]
        for name, schema in candidates:
            spec = tensor_spec(schema)
            if spec is not None:
                self.outputs.append({"name": name, **spec})
                self.hints[name] = spec["datatype"]

    # -- run()'s arguments ---------------------------------------------------------------------------------

    def arguments(self, parsed: InferRequest) -> dict[str, Any]:
        """run()'s keyword arguments for a request (docs/v2.md#inputs); raises :class:`TensorError`."""
        script = self.script
        parameters = {key: value for key, value in parsed.parameters.items() if key not in RESERVED_PARAMETERS}
        if script.mode is InputMode.JSON_STRING:
            document: dict[str, Any] = {tensor.name: tensor.nested() for tensor in parsed.inputs}
            for key, value in parameters.items():
                if key in document:
                    raise TensorError(f"'{key}' is given both as an input and as a parameter")
                document[key] = value
            try:
                text = orjson.dumps(document).decode("utf-8")
            except TypeError:
                raise TensorError("BYTES data that are not UTF-8 text cannot reach a run() that takes JSON") from None
            return {script.first_param: text}
        kwargs: dict[str, Any] = {}
        for tensor in parsed.inputs:
            if tensor.name not in script.input_params:
                raise TensorError(
                    f"run() has no parameter '{tensor.name}' (its parameters: {', '.join(script.input_params)})"
                )
            kwargs[tensor.name] = self._argument(tensor, self.param_types.get(tensor.name))
        for key, value in parameters.items():
            if key in script.input_params:
                if key in kwargs:
                    raise TensorError(f"'{key}' is given both as an input and as a parameter")
                kwargs[key] = value
        for name in script.input_params:
            if name not in kwargs:
                if name not in script.defaults:
                    raise TensorError(f"A value is not provided for the {name!r} parameter.")
                # Passed explicitly: inference-schema's wrapper looks decorated parameters up by position.
                kwargs[name] = script.defaults[name]
        return kwargs

    @staticmethod
    def _argument(tensor: Tensor, param_type: Any) -> Any:
        kind = type(param_type).__name__
        if kind == "NumpyParameterType":
            sample = param_type.sample_input
            dtype = sample.dtype
            if dtype.names is not None or dtype.kind in "mMV":
                return tensor.nested()  # structured and date types: inference-schema converts them, as on /score
            try:
                value = tensor.numpy(dtype if getattr(param_type, "enforce_column_type", True) else None)
            except (ValueError, TypeError, OverflowError) as exc:
                raise TensorError(f"input '{tensor.name}' cannot be converted to {dtype}: {exc}") from None
            if getattr(param_type, "enforce_shape", True) and not fits_sample_shape(value, sample.shape):
                expected = [-1, *sample.shape[1:]]
                raise TensorError(f"input '{tensor.name}' has shape {tensor.shape}; run() takes shape {expected}")
            return value
        if kind == "StandardPythonParameterType":
            sample = param_type.sample_input
            if isinstance(sample, dict):
                raise TensorError(f"parameter '{tensor.name}' takes an object: send it in the request's parameters")
            if not isinstance(sample, (list, tuple)):
                flat = tensor.flat()
                if len(flat) != 1:
                    raise TensorError(f"parameter '{tensor.name}' takes one value; the tensor has {len(flat)}")
                return flat[0]
        return tensor.nested()


class V2Routes:
    """The V2 handlers, sharing the score route's machinery through :class:`ScoringApp`."""

    def __init__(self, handlers: ScoringApp) -> None:
        # app.py's pieces, looked up once: app.py imports this module, so they cannot be imported at its top.
        from . import app

        self._new_ids = app._Ids
        self._read_ids = app._read_ids
        self._drop_unread_body = app._drop_unread_body
        self._limited_input = app._LimitedInput
        self._msg_user_error = app.MSG_USER_ERROR
        self.handlers = handlers
        self.state = handlers.state
        config = self.state.config
        self.model_name = model_name_of(config.entry_script_path, config.model_name)
        self._info: tuple[UserScript, ModelInfo] | None = None

    # -- shared pieces -------------------------------------------------------------------------------------

    def _error(self, status: int, text: str, failed: bool = False) -> Response:
        response = self.handlers.response_class(_error_body(text), status=status, mimetype=JSON)
        response.headers[c.HEADER_RUN_FUNCTION_FAILED] = "True" if failed else "False"
        return response

    def _json(self, status: int, document: Any) -> Response:
        response = self.handlers.response_class(orjson.dumps(document), status=status, mimetype=JSON)
        response.headers[c.HEADER_RUN_FUNCTION_FAILED] = "False"
        return response

    def _unknown(self, name: str, version: str | None) -> Response | None:
        if name != self.model_name:
            return self._error(404, f"Unknown model '{name}': this server serves '{self.model_name}'.")
        if version is not None and version != MODEL_VERSION:
            return self._error(404, f"Unknown version '{version}' of model '{name}': its version is {MODEL_VERSION}.")
        return None

    def model_info(self) -> ModelInfo:
        script = self.state.script
        assert script is not None
        info = self._info
        if info is None or info[0] is not script:  # built once per load of the script (boot, --reload)
            info = (script, ModelInfo(script))
            self._info = info
        return info[1]

    def _answer(self, build: Callable[[Request], Response]) -> WerkzeugResponse:
        """Ids, response headers, the log line and request telemetry around a metadata route."""
        handlers = self.handlers
        started = time.perf_counter()
        wall_start = time.time()
        ids = self._new_ids()
        req: Request = request._get_current_object()  # type: ignore[attr-defined]  # once, not per use
        problem = self._read_ids(req.headers, ids)
        response = self._error(431, problem) if problem is not None else build(req)
        handlers._finish(response, ids, req)
        ms = handlers._log_line(req, response, started)
        if self.state.telemetry_on:
            handlers._report(req, response, ids, wall_start, ms)
        return response

    # -- metadata and readiness ----------------------------------------------------------------------------

    def server_metadata(self) -> WerkzeugResponse:
        def build(req: Request) -> Response:
            from .. import __version__

            return self._json(200, {"name": PLATFORM, "version": __version__, "extensions": ["binary_tensor_data"]})

        return self._answer(build)

    def model_metadata(self, model_name: str, model_version: str | None = None) -> WerkzeugResponse:
        def build(req: Request) -> Response:
            unknown = self._unknown(model_name, model_version)
            if unknown is not None:
                return unknown
            if not self.state.wait_ready():
                return self._error(503, MSG_NOT_READY)
            info = self.model_info()
            document = {
                "name": self.model_name,
                "versions": [MODEL_VERSION],
                "platform": PLATFORM,
                "inputs": info.inputs,
                "outputs": info.outputs,
            }
            return self._json(200, document)

        return self._answer(build)

    def model_ready(self, model_name: str, model_version: str | None = None) -> WerkzeugResponse:
        def build(req: Request) -> Response:
            unknown = self._unknown(model_name, model_version)
            if unknown is not None:
                return unknown
            from .state import PHASE_READY  # here: state.py imports this module (through openapi.py)

            # A probe: it never waits for init().
            ready = self.state.phase == PHASE_READY
            return self._json(200 if ready else 503, {"name": self.model_name, "ready": ready})

        return self._answer(build)

    # -- infer ---------------------------------------------------------------------------------------------

    def infer(self, model_name: str, model_version: str | None = None) -> WerkzeugResponse:
        handlers = self.handlers
        started = time.perf_counter()
        wall_start = time.time()
        ids = self._new_ids()
        req: Request = request._get_current_object()  # type: ignore[attr-defined]  # once, not per use
        problem = self._read_ids(req.headers, ids)
        run_ms: float | None = None
        handlers.metrics.started()
        if problem is not None:
            response: WerkzeugResponse = self._error(431, problem)
        else:
            response, run_ms = self._infer(req, ids, model_name, model_version)
            if req.content_length and BODY_READ_KEY not in req.environ:
                self._drop_unread_body(req)
        handlers._finish(response, ids, req)
        ms = handlers._log_line(req, response, started)
        handlers.metrics.observe_score(req.method, response.status_code, ms, run_ms, INFER_ROUTE)
        if self.state.telemetry_on:
            handlers._report(req, response, ids, wall_start, ms)
        return response

    def _infer(
        self, req: Request, ids: Any, model_name: str, model_version: str | None
    ) -> tuple[WerkzeugResponse, float | None]:
        unknown = self._unknown(model_name, model_version)
        if unknown is not None:
            return unknown, None
        state = self.state
        limit = state.config.max_request_body_bytes
        length = req.content_length
        if limit is not None and length is not None and length > limit:
            response = self._error(
                413, f"Request body of {length} bytes exceeds the limit of {limit} bytes (MAX_REQUEST_BODY_MB)."
            )
            response.headers["Connection"] = "close"  # the body is not read (see ScoringApp._too_large)
            return response, None
        if limit is not None and length is None:
            req.environ["wsgi.input"] = self._limited_input(req.environ["wsgi.input"], limit)
        if not state.wait_ready():
            return self._error(503, MSG_NOT_READY), None
        info = self.model_info()
        script = info.script
        if script.mode is InputMode.RAW:
            return self._error(501, MSG_RAW), None
        try:
            parsed = self._parse(req)
            kwargs = info.arguments(parsed)
        except TensorError as exc:
            return self._error(exc.status, exc.message), None
        except InputError as exc:
            return self._error(exc.status, exc.message), None
        except HTTPException as exc:  # 413 from a chunked body past the limit, 400 from werkzeug
            return self._error(exc.code or 400, exc.description or exc.name), None
        if script.wants_request_headers:
            kwargs["request_headers"] = dict(req.headers)
        outcome = self._run(req, ids, script, kwargs)
        if isinstance(outcome, WerkzeugResponse):
            return outcome, None
        output, run_ms = outcome
        if state.telemetry_on and state.config.mdc_storage_enabled:
            self._collect(ids, parsed, output)
        return self._result(parsed, output, run_ms, model_name, model_version, info, ids), run_ms

    @staticmethod
    def _parse(req: Request) -> InferRequest:
        body = read_body(req)
        header_length = req.headers.get(HEADER_INFERENCE_LENGTH)
        if header_length is None:
            header, binary = body, b""
        else:
            try:
                split = int(header_length)
            except ValueError:
                raise TensorError(f"{HEADER_INFERENCE_LENGTH} must be an integer") from None
            if not 0 <= split <= len(body):
                raise TensorError(f"{HEADER_INFERENCE_LENGTH} {split} is outside the body of {len(body)} bytes")
            header, binary = body[:split], body[split:]
        if not header:
            raise TensorError("The request body is empty: expected an inference request (JSON).")
        try:
            document = jsonio.loads(header)
        except jsonio.JSONInputError as exc:
            raise TensorError(f"The inference request could not be decoded as JSON: {exc}") from None
        return parse_request(document, binary)

    def _run(self, req: Request, ids: Any, script: UserScript, kwargs: dict[str, Any]) -> Any:
        """run() under a scoring slot and the deadline, as on /score: ``(result, run_ms)`` or the error response."""
        handlers = self.handlers
        state = self.state
        runner = state.runner
        lease = req.environ.get(SLOT_LEASE_KEY)
        if lease is None or not lease.claim():
            runner.acquire()
        slot_released = False
        try:
            run_started = time.perf_counter()
            connection = req.environ.get("gunicorn.socket")
            try:
                if connection is not None:
                    answer = handlers._timeout_answer(req, ids, connection, _error_body)
                    output = runner.call_inline(script.run, kwargs, answer)
                else:
                    output = runner.call(script.run, kwargs)
            except AnsweredTimeout as exc:
                slot_released = True
                return self._error(500, f"Scoring timeout after {exc.timeout_ms} ms", failed=True)
            except UserScriptTimeout as exc:
                message = f"Scoring timeout after {exc.timeout_ms} ms"
                return handlers._run_failed(exc, ids, message, timeout=True, body=_error_body)
            except TimeoutError as exc:
                message = f"Scoring timeout after {state.config.scoring_timeout_ms} ms"
                return handlers._run_failed(exc, ids, message, timeout=True, body=_error_body)
            except RequestEntityTooLarge as exc:
                return self._error(413, exc.description or "Request body too large")
            except BaseException as exc:
                return handlers._run_failed(exc, ids, self._msg_user_error, body=_error_body)
            return output, (time.perf_counter() - run_started) * 1000.0
        finally:
            if not slot_released:
                runner.release()

    def _result(
        self,
        parsed: InferRequest,
        output: Any,
        run_ms: float,
        model_name: str,
        model_version: str | None,
        info: ModelInfo,
        ids: Any,
    ) -> WerkzeugResponse:
        if isinstance(output, WerkzeugResponse):
            return self._error(500, "run() returned an HTTP response, which an inference response cannot carry.", True)
        try:
            outputs = to_outputs(output, info.hints)
            if parsed.outputs is not None:
                by_name = {item.name: item for item in outputs}
                missing = [name for name, _ in parsed.outputs if name not in by_name]
                if missing:
                    produced = ", ".join(by_name) or "none"
                    raise TensorError(f"run() returned no output {', '.join(missing)} (its outputs: {produced})")
                chosen = [(by_name[name], binary) for name, binary in parsed.outputs]
            else:
                chosen = [(item, None) for item in outputs]
            body = self._encode(parsed, chosen, model_name, model_version)
        except TensorError as exc:
            if exc.status >= 500:
                logger.error("Encountered Exception: %s", exc.message)
                if self.state.telemetry_on:
                    self.state.telemetry.exception(exc, ids.request_id, ids.client)
            return self._error(exc.status, exc.message, failed=exc.status >= 500)
        header, binary = body
        if binary:
            response = self.handlers.response_class(header + binary, status=200, mimetype=BINARY)
            response.headers[HEADER_INFERENCE_LENGTH] = str(len(header))
        else:
            response = self.handlers.response_class(header, status=200, mimetype=JSON)
        headers = response.headers
        headers[c.HEADER_RUN_FUNCTION_FAILED] = "False"
        headers[c.HEADER_RUN_FN_EXEC_MS] = f"{run_ms:.3f}"
        return response

    def _encode(
        self,
        parsed: InferRequest,
        chosen: list[tuple[Output, bool | None]],
        model_name: str,
        model_version: str | None,
    ) -> tuple[bytes, bytes]:
        document: dict[str, Any] = {"model_name": model_name, "model_version": model_version or MODEL_VERSION}
        if parsed.id is not None:
            document["id"] = parsed.id  # the protocol echoes the request's id
        described = []
        blobs = []
        for item, binary in chosen:
            tensor: dict[str, Any] = {"name": item.name, "datatype": item.datatype, "shape": item.shape}
            if parsed.binary_outputs if binary is None else binary:
                blob = item.binary_data()
                tensor["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                tensor["data"] = item.json_data()
            described.append(tensor)
        document["outputs"] = described
        return orjson.dumps(document), b"".join(blobs)

    def _collect(self, ids: Any, parsed: InferRequest, output: Any) -> None:
        with contextlib.suppress(TensorError):
            model_input = {tensor.name: tensor.nested() for tensor in parsed.inputs}
            try:
                self.state.telemetry.model_data(
                    ModelDataRecord(
                        request_id=ids.request_id,
                        client_request_id=ids.client,
                        input=model_input,
                        prediction=output,
                        extra={"Models": self.state.model_ids},
                    )
                )
            except Exception:
                logging.getLogger("azmlinfsrv.trace").exception("Error logging to Application Insights:")


# -- /openapi.json ---------------------------------------------------------------------------------------------


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


# A direct route: (view, rule, view arguments), or None for Flask's routing.
DirectMatch = tuple[Callable[..., WerkzeugResponse], Rule, dict[str, Any]]


def register(app: Flask, handlers: ScoringApp) -> Callable[[dict[str, Any]], DirectMatch | None]:
    """Add the V2 routes to ``app``; returns the matcher that sends infer requests past Flask's routing."""
    routes = V2Routes(handlers)
    app.extensions["azmlinfsrv.v2"] = routes
    app.add_url_rule("/v2", "v2_server", routes.server_metadata, methods=["GET"])
    for prefix, suffix in (
        ("/v2/models/<model_name>", ""),
        ("/v2/models/<model_name>/versions/<model_version>", "_version"),
    ):
        app.add_url_rule(prefix, f"v2_model{suffix}", routes.model_metadata, methods=["GET"])
        app.add_url_rule(f"{prefix}/ready", f"v2_ready{suffix}", routes.model_ready, methods=["GET"])
        app.add_url_rule(f"{prefix}/infer", f"v2_infer{suffix}", routes.infer, methods=["POST"])
    infer_rule = next(app.url_map.iter_rules("v2_infer"))
    versioned_rule = next(app.url_map.iter_rules("v2_infer_version"))
    view = routes.infer

    def match(environ: dict[str, Any]) -> DirectMatch | None:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not path.startswith("/v2/models/") or not path.endswith("/infer"):
            return None
        parts = path[11:-6].split("/")
        if len(parts) == 1 and parts[0]:
            return view, infer_rule, {"model_name": parts[0]}
        if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
            return view, versioned_rule, {"model_name": parts[0], "model_version": parts[2]}
        return None

    return match
