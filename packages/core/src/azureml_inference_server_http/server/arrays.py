"""Large numeric arrays in schema requests, parsed into numpy arrays a piece at a time.

A ``NumpyParameterType`` input normally goes JSON text -> Python lists -> ndarray (see ``inputs.to_numpy``). For
a 1 MB array of floats the lists are about 4 MB of Python objects, and orjson's document tree another 2.5 MB, all
alive at once: most of a worker's peak memory under such requests. Here the array's text is cut between its rows
into pieces of about :data:`PIECE_BYTES`; each piece is parsed by the same parser and converted by the same
``np.array(..., dtype)`` call, and the pieces are joined. At most one piece's lists exist at a time, and the result
is the array the whole-document path would have made.

The rest of the document is parsed as usual, with a placeholder where the array was. Anything this module does not
recognise (a key spelled with escapes, an array holding strings or objects, a ragged array, invalid JSON anywhere,
an array that is not the top-level value of its key) makes :func:`loads_document` return None and the caller parses
the whole body the usual way, which then decides, with its usual messages. This path only ever gives the answer the
usual path gives, at the same speed and in less memory. ``tests/fuzz`` checks that against random documents.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from . import jsonio

# Arrays shorter than this (in bytes of JSON) take the usual path: their lists are small.
MIN_ARRAY_BYTES = 64 * 1024
PIECE_BYTES = 64 * 1024
_TRAILING = b" \t\r\n,"
# What stands in for an array while the rest of the document is parsed. Random per process, so that no request can
# spell it; a body that contains it anyway takes the usual path.
_PLACEHOLDER = "azmlinfsrv-array-" + os.urandom(16).hex()
_PLACEHOLDER_BYTES = _PLACEHOLDER.encode("ascii")


@dataclass(frozen=True)
class ArraySpec:
    """How one ``NumpyParameterType`` parameter's array is built, from its sample."""

    dtype: Any  # numpy.dtype
    ndim: int
    shape: tuple[int, ...] | None  # the sample's shape when inference-schema enforces it (first dimension free)
    key: re.Pattern[bytes]  # where the parameter's value starts: '"name" :' followed by '['

    def accepts(self, array: Any) -> bool:
        return self.shape is None or fits_sample_shape(array, self.shape)


def fits_sample_shape(array: Any, expected: tuple[int, ...]) -> bool:
    """inference-schema's enforced shape: the sample's number of dimensions and sizes, any number of rows."""
    return bool(array.ndim == len(expected) and all(array.shape[d] == expected[d] for d in range(1, len(expected))))


def array_specs(numpy_params: Mapping[str, Any]) -> dict[str, ArraySpec]:
    """Specs for the parameters whose arrays can be built in pieces; the others keep the usual path.

    Only plain numeric dtypes with ``enforce_column_type`` on: there the array is ``np.array(lists, dtype)`` whatever
    the rows, so building it in pieces gives the same array. Without a dtype numpy infers one from the values, which
    can differ between pieces.
    """
    if not numpy_params:
        return {}  # and numpy is not imported for scripts that do not use it
    import numpy as np

    specs: dict[str, ArraySpec] = {}
    for name, param_type in numpy_params.items():
        sample = getattr(param_type, "sample_input", None)
        if not isinstance(sample, np.ndarray) or sample.ndim == 0:
            continue
        dtype = sample.dtype
        if dtype.names is not None or dtype.kind not in "biufc":
            continue
        if not getattr(param_type, "enforce_column_type", True):
            continue
        key = re.compile(re.escape(orjson.dumps(name)) + rb"[ \t\r\n]*:[ \t\r\n]*(?=\[)")
        shape = tuple(sample.shape) if getattr(param_type, "enforce_shape", True) else None
        specs[name] = ArraySpec(dtype=dtype, ndim=sample.ndim, shape=shape, key=key)
    return specs


def loads_document(
    data: bytes,
    specs: Mapping[str, ArraySpec],
    min_bytes: int = MIN_ARRAY_BYTES,
    piece_bytes: int = PIECE_BYTES,
) -> dict[str, Any] | None:
    """The request document with its large arrays already numpy arrays, or None to parse it the usual way.

    Arrays of at least ``min_bytes`` bytes of JSON are built from pieces of about ``piece_bytes`` (tests and the
    fuzz target make both small).
    """
    if len(data) < min_bytes or not specs or _PLACEHOLDER_BYTES in data:
        return None
    found: list[tuple[int, int, str, Any]] = []
    for name, spec in specs.items():
        for match in spec.key.finditer(data):
            start = match.end()
            end = _array_end(data, start)
            if end - start < min_bytes:
                continue
            array = _parse_array(data, start, end, spec, piece_bytes)
            if array is None:
                return None
            found.append((start, end, name, array))
            break
    if not found:
        return None
    found.sort(key=lambda item: item[0])
    parts: list[bytes] = []
    position = 0
    for index, (start, end, _, _) in enumerate(found):
        parts += (data[position:start], b'"', _PLACEHOLDER_BYTES, b"%d" % index, b'"')
        position = end
    parts.append(data[position:])
    try:
        document = jsonio.loads(b"".join(parts))
    except jsonio.JSONInputError:
        return None
    if not isinstance(document, dict):
        return None
    for index, (_, _, name, array) in enumerate(found):
        # The placeholder must be the key's value in the document: not nested deeper, not overridden by a later
        # duplicate of the key (the last one wins), not inside a string.
        value = document.get(name)
        if type(value) is not str or value != f"{_PLACEHOLDER}{index}":
            return None
        document[name] = array
    return document


def _array_end(data: bytes, start: int) -> int:
    """Where the array that starts at ``start`` ends, if it holds no string and no object.

    In an object, a value is followed by the next key's quote or by the closing brace; an array holding neither
    strings nor objects contains neither character. The separators before that character are not the array's.
    A wrong guess (the array does hold a string) leaves text that is not one whole array, and a piece of it
    then fails to parse.
    """
    end = len(data)
    for stop in (b'"', b"}"):
        found = data.find(stop, start, end)
        if found >= 0:
            end = found
    while end > start and data[end - 1] in _TRAILING:
        end -= 1
    return end


def _parse_array(data: bytes, start: int, end: int, spec: ArraySpec, piece_bytes: int) -> Any:
    """``np.array(json.loads(data[start:end]), spec.dtype)``, built from pieces; None if it cannot be."""
    import numpy as np

    if data[end - 1] != ord("]"):
        return None
    # A top-level comma of an n-dimensional array follows n-1 closing brackets, and no comma inside a row of
    # numbers does. Cutting at that pattern only (a row separated by whitespace is simply not cut there) keeps every
    # piece a list of whole rows. Each piece is checked on its own: if "[piece]" is a non-empty JSON array for every
    # piece, the whole text is one JSON array and its elements are the pieces' elements in order. A wrong cut makes
    # some piece invalid JSON, and then the usual path decides.
    cut = b"]" * (spec.ndim - 1) + b","
    last = end - 1  # the array's closing bracket
    position = start + 1
    pieces = []
    while True:
        found = data.find(cut, min(position + piece_bytes, last), last)
        stop = last if found < 0 else found + len(cut) - 1  # at the comma
        text = b"".join((b"[", data[position:stop], b"]"))
        if jsonio.may_hold_long_integer(text):
            return None  # the usual path parses such integers exactly
        try:
            rows = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if not rows:
            return None  # "[]", or nothing after the last comma
        try:
            pieces.append(np.array(rows, dtype=spec.dtype))
        except (ValueError, TypeError, OverflowError):
            return None
        del rows
        if found < 0:
            break
        position = stop + 1  # a comma is followed by an element: "[1],]" ends with an empty piece
    try:
        array = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    except ValueError:  # rows of different shapes in different pieces: a ragged array
        return None
    return array if spec.accepts(array) else None
