"""JSON in and out: one strict parser for request data and one serializer for run() results.

Input policy (documented in docs/score-script.md):
* nesting deeper than :data:`MAX_DEPTH` levels, ``NaN``/``Infinity`` literals, numbers that overflow a float
  (``1e999``) and integers longer than Python's 4300-digit limit are rejected with :class:`JSONInputError`;
* UTF-8 is parsed by orjson (fast); UTF-16/32 bodies (which stdlib ``json.loads(bytes)`` detects) still work;
* duplicate keys: the last one wins, as in every mainstream JSON library.

Output policy: bodies are produced with ``json.dumps`` defaults (byte-compatible with upstream for everything
upstream could serialize). Non-finite floats become ``null`` so that every body is strict JSON. numpy arrays and
scalars, pandas objects, datetimes, decimals, UUIDs, sets, bytes (UTF-8 text) and dataclasses are converted.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid
from typing import Any

import orjson

# orjson refuses documents nested deeper than this; the stdlib fallback is held to the same limit.
MAX_DEPTH = 1024


class JSONInputError(ValueError):
    """Request data is not acceptable JSON. The message says why and is safe to return to the client.

    ``malformed`` is True when the data is not JSON at all, False when it is JSON the policy rejects.
    """

    def __init__(self, message: str, malformed: bool = False) -> None:
        super().__init__(message)
        self.malformed = malformed


class _Rejected(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _Rejected(f"non-finite number {name} is not allowed")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Rejected(f"number {text[:40]} is out of range")
    return value


def stdlib_error(data: bytes | str) -> str:
    """Describe why ``data`` is not JSON, in the stdlib's words (upstream's 400 messages quote them)."""
    try:
        json.loads(data)
    except ValueError as exc:
        return str(exc)
    except RecursionError:
        return f"nesting is deeper than {MAX_DEPTH} levels"
    return "invalid JSON"


# orjson turns integers beyond 64 bits into floats, silently losing digits. Such an integer is a token of at
# least 19 digits (below -2**63). This table maps digits to "0", the characters that make a number a float
# (".", "e", "E") to "x" and everything else to " ", so an integer token of 19+ digits shows up as " " followed
# by 19 "0"s, found at C speed (about 3 ms per MB). Only those documents take the exact (slower) stdlib path;
# the fraction and exponent digits of floats never match.
_DIGIT_MASK = bytes(48 if 48 <= i <= 57 else 120 if i in (46, 69, 101) else 32 for i in range(256))
_LONG_INTEGER = b" " + b"0" * 19


def may_hold_long_integer(raw: bytes) -> bool:
    masked = raw.translate(_DIGIT_MASK)
    return masked.find(_LONG_INTEGER) != -1 or masked.startswith(_LONG_INTEGER[1:])


def loads(data: bytes | str) -> Any:
    """Parse request JSON under the input policy; raises :class:`JSONInputError` with a clear message."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        if not may_hold_long_integer(raw):
            return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "recursion" in str(exc):
            raise JSONInputError(f"nesting is deeper than {MAX_DEPTH} levels") from None
    # orjson said no. Either the data is really malformed (say so in the stdlib's words, which upstream
    # returns), or it is something orjson does not take that the policy must decide: UTF-16/32, huge ints,
    # NaN/Infinity or overflowing floats.
    try:
        return json.loads(data, parse_constant=_reject_constant, parse_float=_parse_float)
    except _Rejected as exc:
        raise JSONInputError(str(exc)) from None
    except RecursionError:
        raise JSONInputError(f"nesting is deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError as exc:
        raise JSONInputError(f"invalid UTF-8: {exc}", malformed=True) from None
    except json.JSONDecodeError as exc:
        raise JSONInputError(str(exc), malformed=True) from None
    except ValueError as exc:  # int() refusing more than 4300 digits
        raise JSONInputError(str(exc)) from None


# --- output --------------------------------------------------------------------------------------------


class UnserializableOutput(TypeError):
    """run() returned something that has no JSON form. The message names the type."""


def _convert(obj: Any) -> Any:
    """``default=`` hook for json.dumps: native forms for the types models return."""
    module = type(obj).__module__
    if (module == "numpy" or module.startswith("numpy.")) and hasattr(obj, "tolist"):
        return obj.tolist()
    if module == "pandas" or module.startswith("pandas."):
        to_dict = getattr(obj, "to_dict", None)
        if type(obj).__name__ == "DataFrame" and to_dict is not None:
            return to_dict(orient="records")
        if type(obj).__name__ == "Series" and hasattr(obj, "tolist"):
            return obj.tolist()
        if hasattr(obj, "isoformat"):  # Timestamp
            return obj.isoformat()
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, datetime.timedelta):
        return obj.total_seconds()
    if isinstance(obj, decimal.Decimal):
        return float(obj) if obj.is_finite() else None
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        try:
            return bytes(obj).decode("utf-8")
        except UnicodeDecodeError:
            raise UnserializableOutput("run() returned bytes that are not UTF-8 text") from None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise UnserializableOutput(f"run() returned an object of type {type(obj).__module__}.{type(obj).__qualname__}")


def _finite(obj: Any) -> Any:
    """Replace NaN and infinities by None, recursively (only called when a non-finite float was found)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(value) for value in obj]
    return obj


def dumps(obj: Any) -> str:
    """Serialize a run() result as strict JSON with ``json.dumps`` formatting."""
    try:
        return json.dumps(obj, default=_convert, allow_nan=False)
    except ValueError:
        # A NaN or infinity somewhere: convert containers first so the replacement reaches numpy data too.
        plain = json.loads(json.dumps(obj, default=_convert))
        return json.dumps(_finite(plain), allow_nan=False)
    except RecursionError:
        raise UnserializableOutput("run() returned a structure nested too deeply to serialize") from None
