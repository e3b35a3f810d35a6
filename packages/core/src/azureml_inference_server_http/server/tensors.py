"""Open Inference Protocol tensors to Python values and back (docs/v2.md#how-tensors-map-to-run).

Plain Python does the work wherever it can: a score script that never imports numpy gets lists and never pays for
numpy, and core does not require it. JSON data are checked with :mod:`array` (C speed), binary data (the binary
tensor extension) are decoded with :mod:`array` and :mod:`struct`; numpy is used only for a parameter declared as a
numpy array, or when run() returns numpy values (numpy is then loaded already).
"""

from __future__ import annotations

import array
import math
import struct
import sys
from collections.abc import Mapping
from typing import Any

# Every datatype of the protocol and the numpy dtype each maps to.
NUMPY_DTYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
# The datatypes array.array stores natively, by their typecodes (each of the datatype's size, checked below).
_TYPECODES = {
    "INT8": "b",
    "UINT8": "B",
    "INT16": "h",
    "UINT16": "H",
    "INT32": "i",
    "UINT32": "I",
    "INT64": "q",
    "UINT64": "Q",
    "FP32": "f",
    "FP64": "d",
}
_SIZES = {"BOOL": 1, "INT8": 1, "UINT8": 1, "INT16": 2, "UINT16": 2, "INT32": 4, "UINT32": 4, "INT64": 8}
_SIZES.update({"UINT64": 8, "FP16": 2, "FP32": 4, "FP64": 8})
assert all(array.array(code).itemsize == _SIZES[name] for name, code in _TYPECODES.items())
_SWAP = sys.byteorder == "big"  # the binary extension is little-endian
_INTEGERS = frozenset(name for name in _TYPECODES if "INT" in name)
_FLOATS = frozenset(("FP16", "FP32", "FP64"))
_LENGTH = struct.Struct("<I")


class TensorError(Exception):
    """A tensor the request (400) or run()'s result (500) cannot carry; the message goes to the client."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _element_count(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _flatten(data: list[Any]) -> list[Any]:
    """Nested lists in row-major order; the protocol allows data flat or nested."""
    if not data or data[0].__class__ is not list:
        return data
    flat: list[Any] = []
    for item in data:
        if item.__class__ is list:
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def nest(flat: list[Any], shape: list[int]) -> Any:
    """Row-major ``flat`` as nested lists of ``shape`` (a scalar for shape ``[]``)."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    inner = shape[1:]
    step = _element_count(inner)
    if step == 0:
        return [nest([], inner) for _ in range(shape[0])]
    return [nest(flat[i : i + step], inner) for i in range(0, len(flat), step)]


class Tensor:
    """One input tensor of a request: its data flat (JSON values, or decoded binary), or the raw binary bytes."""

    __slots__ = ("_flat", "datatype", "name", "raw", "shape")

    def __init__(self, name: str, datatype: str, shape: list[int], flat: Any = None, raw: bytes | None = None):
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self._flat = flat
        self.raw = raw

    def flat(self) -> list[Any]:
        """The elements in row-major order, as Python values."""
        if self._flat is None:
            assert self.raw is not None
            self._flat = _decode_binary(self.datatype, self.raw, _element_count(self.shape), self.name)
        if self._flat.__class__ is array.array:
            self._flat = self._flat.tolist()
        return self._flat  # type: ignore[no-any-return]

    def nested(self) -> Any:
        """The data as nested lists of the tensor's shape."""
        return nest(self.flat(), self.shape)

    def numpy(self, dtype: Any = None) -> Any:
        """A numpy array of the tensor's shape, of ``dtype`` (default: the tensor's own)."""
        import numpy as np

        own = np.dtype(NUMPY_DTYPES[self.datatype])
        target = own if dtype is None else np.dtype(dtype)
        values: Any
        if self.raw is not None and self.datatype != "BYTES":
            values = np.frombuffer(self.raw, dtype=own.newbyteorder("<")).reshape(self.shape)
        elif self.datatype == "BYTES":
            values = np.empty(len(self.flat()), dtype=object)
            values[:] = self.flat()
            values = values.reshape(self.shape)
        else:
            values = np.asarray(self.flat(), dtype=own).reshape(self.shape)
        return values if values.dtype == target else values.astype(target)


def _decode_binary(datatype: str, raw: bytes, count: int, name: str) -> Any:
    if datatype == "BYTES":
        items: list[Any] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise TensorError(f"input '{name}': binary BYTES data end inside an element's length")
            (length,) = _LENGTH.unpack_from(raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise TensorError(f"input '{name}': binary BYTES element longer than the data left")
            item = raw[offset : offset + length]
            offset += length
            try:
                items.append(item.decode("utf-8"))
            except UnicodeDecodeError:
                items.append(item)
        if len(items) != count:
            raise TensorError(f"input '{name}': binary data hold {len(items)} elements, shape needs {count}")
        return items
    if datatype == "BOOL":
        return [byte != 0 for byte in raw]
    if datatype == "FP16":
        return list(struct.unpack(f"<{count}e", raw))
    values = array.array(_TYPECODES[datatype])
    values.frombytes(raw)
    if _SWAP:
        values.byteswap()
    return values


def _check_json(datatype: str, flat: list[Any], name: str) -> None:
    """Raise a 400 unless every element is a JSON value of the datatype."""
    if datatype == "BYTES":
        if not all(item.__class__ is str for item in flat):
            raise TensorError(f"input '{name}': BYTES data must be strings in JSON (or binary data)")
        return
    if datatype == "BOOL":
        if not all(item.__class__ is bool for item in flat):
            raise TensorError(f"input '{name}': BOOL data must be true or false")
        return
    code = "d" if datatype == "FP16" else _TYPECODES[datatype]
    try:
        array.array(code, flat)  # C speed: refuses strings, lists, and for integers fractions and out-of-range values
    except (TypeError, OverflowError) as exc:
        raise TensorError(f"input '{name}': data do not fit {datatype}: {exc}") from None
    if datatype in _INTEGERS and any(item.__class__ is bool for item in flat):
        raise TensorError(f"input '{name}': {datatype} data must be integers, not booleans")


class Output:
    """One output tensor: its name, datatype, shape and flat data (a list, or a flat numpy array)."""

    __slots__ = ("data", "datatype", "name", "shape")

    def __init__(self, name: str, datatype: str, shape: list[int], data: Any) -> None:
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self.data = data

    def json_data(self) -> list[Any]:
        data = self.data
        values: list[Any] = data.tolist() if hasattr(data, "tolist") else data
        if self.datatype == "BYTES":
            try:
                return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in values]
            except UnicodeDecodeError:
                raise TensorError(
                    f"output '{self.name}' holds bytes that are not UTF-8 text: ask for it as binary data", 500
                ) from None
        if self.datatype in _FLOATS and not all(math.isfinite(item) for item in values):
            # JSON has no NaN or infinity: such values are sent as null (as /score does).
            return [item if math.isfinite(item) else None for item in values]
        return values

    def binary_data(self) -> bytes:
        data = self.data
        if self.datatype == "BYTES":
            values = data.tolist() if hasattr(data, "tolist") else data
            parts = []
            for item in values:
                encoded = item if isinstance(item, bytes) else str(item).encode("utf-8")
                parts.append(_LENGTH.pack(len(encoded)))
                parts.append(encoded)
            return b"".join(parts)
        if hasattr(data, "dtype"):
            import numpy as np

            dtype = np.dtype(NUMPY_DTYPES[self.datatype]).newbyteorder("<")
            return np.ascontiguousarray(data, dtype=dtype).tobytes()
        if self.datatype == "BOOL":
            return bytes(1 if item else 0 for item in data)
        if self.datatype == "FP16":
            return struct.pack(f"<{len(data)}e", *data)
        values = array.array(_TYPECODES[self.datatype], data)
        if _SWAP:
            values.byteswap()
        return values.tobytes()


# -- a request -------------------------------------------------------------------------------------------------


class InferRequest:
    """A parsed infer request: its inputs, the outputs it asks for, its id and parameters."""

    __slots__ = ("binary_outputs", "id", "inputs", "outputs", "parameters")

    def __init__(self) -> None:
        self.inputs: list[Tensor] = []
        self.outputs: list[tuple[str, bool | None]] | None = None  # (name, binary_data) in the requested order
        self.id: str | None = None
        self.parameters: dict[str, Any] = {}
        self.binary_outputs = False


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TensorError(f"{where}: parameters must be a JSON object")
    return value


def parse_request(document: Any, binary: bytes) -> InferRequest:
    """Check an infer request's JSON (and binary data) against the protocol; raises :class:`TensorError`."""
    if not isinstance(document, dict):
        raise TensorError("the request must be a JSON object")
    parsed = InferRequest()
    request_id = document.get("id")
    if request_id is not None:
        if not isinstance(request_id, str):
            raise TensorError("id must be a string")
        parsed.id = request_id
    parsed.parameters = _parameters(document.get("parameters"), "the request")
    binary_output = parsed.parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise TensorError("parameter binary_data_output must be true or false")
    parsed.binary_outputs = binary_output
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise TensorError("inputs must be a non-empty list of tensors")
    offset = 0
    seen: set[str] = set()
    for item in inputs:
        tensor, offset = _parse_input(item, binary, offset)
        if tensor.name in seen:
            raise TensorError(f"input '{tensor.name}' is given twice")
        seen.add(tensor.name)
        parsed.inputs.append(tensor)
    if offset != len(binary):
        raise TensorError(f"{len(binary) - offset} bytes of binary data after the inputs that claim binary data")
    outputs = document.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise TensorError("outputs must be a list")
        parsed.outputs = []
        for output in outputs:
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise TensorError("each requested output must be an object with a name")
            output_binary = _parameters(output.get("parameters"), f"output '{output['name']}'").get("binary_data")
            if output_binary is not None and not isinstance(output_binary, bool):
                raise TensorError(f"output '{output['name']}': binary_data must be true or false")
            parsed.outputs.append((output["name"], output_binary))
    return parsed


def _parse_input(item: Any, binary: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise TensorError("each input must be a JSON object")
    name = item.get("name")
    if not isinstance(name, str):
        raise TensorError("each input needs a name")
    datatype = item.get("datatype")
    if datatype not in NUMPY_DTYPES:
        raise TensorError(f"input '{name}': datatype {datatype!r} is not one of {', '.join(NUMPY_DTYPES)}")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(size.__class__ is int and size >= 0 for size in shape):
        raise TensorError(f"input '{name}': shape must be a list of non-negative integers")
    count = _element_count(shape)
    size = _parameters(item.get("parameters"), f"input '{name}'").get("binary_data_size")
    if size is not None:
        if "data" in item:
            raise TensorError(f"input '{name}': data and binary_data_size both given")
        if size.__class__ is not int or size < 0 or offset + size > len(binary):
            raise TensorError(f"input '{name}': binary_data_size {size!r} does not fit the binary data sent")
        raw = binary[offset : offset + size]
        itemsize = _SIZES.get(datatype)
        if itemsize is not None and size != count * itemsize:
            raise TensorError(
                f"input '{name}': {size} bytes of binary data, shape {shape} of {datatype} needs {count * itemsize}"
            )
        return Tensor(name, datatype, shape, raw=raw), offset + size
    data = item.get("data")
    if not isinstance(data, list):
        raise TensorError(f"input '{name}': data must be a list (or binary_data_size given)")
    flat = _flatten(data)
    if len(flat) != count:
        raise TensorError(f"input '{name}': {len(flat)} elements, shape {shape} needs {count}")
    _check_json(datatype, flat, name)
    return Tensor(name, datatype, shape, flat=flat), offset


# -- run()'s result --------------------------------------------------------------------------------------------


def _numpy_datatype(dtype: Any) -> str | None:
    kind = dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "iu" and dtype.itemsize in (1, 2, 4, 8):
        return f"{'U' if kind == 'u' else ''}INT{dtype.itemsize * 8}"
    if kind == "f" and dtype.itemsize in (2, 4, 8):
        return f"FP{dtype.itemsize * 8}"
    if kind in "USO":
        return "BYTES"
    return None


def datatype_of_numpy(dtype: Any) -> str | None:
    """The protocol's datatype for a numpy dtype, or None (structured, complex, dates...)."""
    return None if dtype.names is not None else _numpy_datatype(dtype)


def _shape_of(value: list[Any] | tuple[Any, ...]) -> list[int]:
    shape = []
    node: Any = value
    while isinstance(node, (list, tuple)):
        shape.append(len(node))
        if not node:
            break
        node = node[0]
    return shape


def _flatten_checked(value: Any, shape: list[int], depth: int, out: list[Any], name: str) -> None:
    if len(value) != shape[depth]:
        raise TensorError(f"output '{name}': run() returned ragged lists, which are no tensor", 500)
    if depth == len(shape) - 1:
        for item in value:
            if isinstance(item, (list, tuple)):
                raise TensorError(f"output '{name}': run() returned ragged lists, which are no tensor", 500)
        out.extend(value)
        return
    for item in value:
        if not isinstance(item, (list, tuple)):
            raise TensorError(f"output '{name}': run() returned ragged lists, which are no tensor", 500)
        _flatten_checked(item, shape, depth + 1, out, name)


def _python_datatype(flat: list[Any]) -> str | None:
    kinds = {item.__class__ for item in flat}
    if kinds <= {bool}:
        return "BOOL" if kinds else "FP64"
    if kinds <= {int, bool}:
        return "INT64"
    if kinds <= {int, float, bool}:
        return "FP64"
    if kinds <= {str, bytes}:
        return "BYTES"
    return None


def _is_numpy(value: Any) -> bool:
    module: str = value.__class__.__module__
    return module == "numpy" or module.startswith("numpy.")


def to_output(name: str, value: Any, hint: str | None = None) -> Output:
    """One of run()'s values as an output tensor; ``hint`` is the datatype its @output_schema declares."""
    if _is_numpy(value) and hasattr(value, "dtype"):
        import numpy as np

        values = np.asarray(value)
        datatype = datatype_of_numpy(values.dtype)
        if datatype is None:
            raise TensorError(f"output '{name}': numpy dtype {values.dtype} has no tensor datatype", 500)
        return Output(name, datatype, list(values.shape) or [1], values.reshape(-1))
    module = value.__class__.__module__
    if module == "pandas" or module.startswith("pandas."):
        to_numpy = getattr(value, "to_numpy", None)
        if to_numpy is not None and value.__class__.__name__ == "Series":
            return to_output(name, to_numpy(), hint)
    if isinstance(value, (list, tuple)):
        shape = _shape_of(value)
        flat: list[Any] = []
        if shape and shape[0]:
            _flatten_checked(value, shape, 0, flat, name)
        datatype = _python_datatype(flat)
        if datatype is None:
            if "numpy" in sys.modules and any(_is_numpy(item) for item in flat):
                import numpy as np

                return to_output(name, np.asarray(value), hint)
            kinds = sorted({item.__class__.__name__ for item in flat})
            raise TensorError(f"output '{name}': run() returned values of types {', '.join(kinds)}", 500)
    elif isinstance(value, (bool, int, float, str, bytes)):
        shape = [1]
        flat = [value]
        datatype = _python_datatype(flat) or "BYTES"
    elif _is_numpy(value) and hasattr(value, "dtype"):  # pragma: no cover - numpy scalars are handled above
        raise AssertionError
    else:
        raise TensorError(f"output '{name}': run() returned a {value.__class__.__name__}, which is no tensor", 500)
    if datatype == "INT64":
        try:
            array.array("q", flat)
        except OverflowError:
            datatype = "FP64"  # integers beyond 64 bits: as JSON numbers, like /score
    if hint is not None and hint != datatype and _hint_fits(hint, datatype, flat):
        datatype = hint
    return Output(name, datatype, shape, flat)


def _hint_fits(hint: str, datatype: str, flat: list[Any]) -> bool:
    """Whether values inferred as ``datatype`` can be sent as the declared ``hint`` without changing them."""
    if hint in _FLOATS:
        return datatype in ("FP64", "INT64", "BOOL")
    if hint in _INTEGERS:
        if datatype != "INT64":
            return False
        try:
            array.array(_TYPECODES[hint], flat)
        except OverflowError:
            return False
        return True
    return False


def to_outputs(result: Any, hints: Mapping[str, str]) -> list[Output]:
    """run()'s result as output tensors (docs/v2.md#outputs); ``hints`` maps output names to declared datatypes."""
    if result is None:
        return []
    if isinstance(result, dict):
        return [to_output(str(key), value, hints.get(str(key))) for key, value in result.items()]
    module = result.__class__.__module__
    if (module == "pandas" or module.startswith("pandas.")) and result.__class__.__name__ == "DataFrame":
        return [to_output(str(column), result[column].to_numpy(), hints.get(str(column))) for column in result.columns]
    return [to_output(DEFAULT_OUTPUT, result, hints.get(DEFAULT_OUTPUT))]


DEFAULT_OUTPUT = "output0"
