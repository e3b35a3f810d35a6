"""The served model as the Open Inference Protocol (V2) describes it: its name, its tensors, run()'s arguments.

The model's metadata comes from the script's inference-schema decorators; a request's input tensors become run()'s
keyword arguments as docs/v2.md#inputs says. The routes are in v2.py, the tensor encodings in tensors.py.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from .arrays import fits_sample_shape
from .tensors import DEFAULT_OUTPUT
from .tensors import InferRequest
from .tensors import Tensor
from .tensors import TensorError
from .tensors import datatype_of_numpy
from .user_script import InputMode
from .user_script import UserScript
from .user_script import schema_parameter_types

MODEL_VERSION = "1"
JSON = "application/json"
BINARY = "application/octet-stream"
PLATFORM = "azmlinfsrv"
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
