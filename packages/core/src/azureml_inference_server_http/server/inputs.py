"""Turning a request into run()'s arguments, for each input mode (docs/compatibility.md#input-modes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import Request
from flask import request as request_proxy
from werkzeug.exceptions import HTTPException

from . import jsonio
from .arrays import ArraySpec
from .arrays import fits_sample_shape
from .arrays import loads_document
from .user_script import InputMode
from .user_script import UserScript

BODY_READ_KEY = "azmlinfsrv.body_read"


class InputError(Exception):
    """The request cannot be given to run(); ``status`` and ``message`` go to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_query_utf8(raw_query: bytes | str) -> None:
    """Raise a 400 for a query string that is not UTF-8, raw or percent-encoded (Werkzeug would fail or guess)."""
    if isinstance(raw_query, str):
        raw_query = raw_query.encode("latin-1", "replace")
    if raw_query.isascii() and b"%" not in raw_query:
        return
    try:
        unquote_to_bytes(raw_query).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(400, f"Query string cannot be decoded as UTF-8: {exc}") from None


def _query_value(text: str) -> Any:
    """A query value is JSON when it parses as JSON, else the raw string (``x`` -> "x", ``1`` -> 1)."""
    if not text:
        return text
    try:
        return jsonio.loads(text)
    except jsonio.JSONInputError as exc:
        if exc.malformed:
            return text
        raise InputError(400, f"Query parameter could not be decoded as JSON: {exc}") from None


def query_dict(request: Request) -> dict[str, Any]:
    """The query string as a dict: first-appearance key order, repeated keys become lists."""
    check_query_utf8(request.query_string)
    out: dict[str, Any] = {}
    for key, values in request.args.lists():
        parsed = [_query_value(value) for value in values]
        out[key] = parsed[0] if len(parsed) == 1 else parsed
    return out


def read_body(request: Request) -> bytes:
    """The request body; a body the server cannot read (a malformed chunked encoding) is the client's 400."""
    try:
        data = request.get_data(cache=False)
    except HTTPException:
        raise  # 413 from the body limit, and Werkzeug's own errors, keep their status
    except Exception as exc:
        raise InputError(400, f"Request body could not be read: {exc}") from None
    request.environ[BODY_READ_KEY] = True
    return data


def _json_string(request: Request) -> str:
    if request.method == "GET":
        return jsonio.dumps(query_dict(request))
    # The raw body, whatever the content type: form and multipart bodies are never parsed (docs/guarantees.md#r12).
    # compat: upstream decodes as UTF-8 whatever charset is declared.
    data = read_body(request)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(400, f"Input cannot be decoded as UTF-8: {exc}") from None


def _schema_body(request: Request, array_specs: Mapping[str, ArraySpec] | None) -> dict[str, Any]:
    if request.method == "GET":
        return query_dict(request)
    if not request.is_json:
        raise InputError(415, "Expects Content-Type to be application/json")
    data = read_body(request)
    if not data:
        raise InputError(400, "POST body is empty. Expecting a JSON dictionary.")
    if array_specs:
        document = loads_document(data, array_specs)
        if document is not None:
            return document
    try:
        body = jsonio.loads(data)
    except jsonio.JSONInputError as exc:
        raise InputError(400, f"POST body could not be decoded as JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InputError(400, "POST body should be a JSON dictionary.")
    return body


def to_numpy(param_type: Any, value: Any) -> Any:
    """Convert a JSON list for a NumpyParameterType the fast way, with exactly inference-schema's result.

    inference-schema converts row by row in Python (slow for large arrays) unless it is handed an ndarray, which it
    passes through unchecked. For plain dtypes its row step changes nothing, so one ``np.array`` call gives the same
    array; its shape check is repeated here. Anything unusual (structured, datetime or timedelta dtypes, a shape
    mismatch, a conversion error) is left to inference-schema so that its behaviour and messages stay the same.
    """
    import numpy as np

    sample = getattr(param_type, "sample_input", None)
    if not isinstance(value, list) or not isinstance(sample, np.ndarray):
        return value
    dtype = sample.dtype
    if dtype.names is not None or dtype.kind in "mMOSUV":
        return value
    try:
        array = np.array(value, dtype=dtype if getattr(param_type, "enforce_column_type", True) else None)
    except (ValueError, TypeError, OverflowError):
        return value
    if getattr(param_type, "enforce_shape", True) and not fits_sample_shape(array, sample.shape):
        return value
    return array


def run_arguments(script: UserScript, request: Request, keep_input: bool = False) -> tuple[dict[str, Any], Any]:
    """run()'s keyword arguments and the model input as model data collection records it.

    ``keep_input`` (model data collection is on): the input is recorded as the JSON values the client sent, so
    large arrays are not built straight from the text (see arrays.py); the lists are needed anyway.
    """
    kwargs: dict[str, Any]
    if script.mode is InputMode.RAW:
        kwargs = {script.first_param: request_proxy}
        model_input: Any = None
    elif script.mode is InputMode.SCHEMA:
        body = _schema_body(request, None if keep_input else script.array_specs)
        kwargs = {}
        for name in script.input_params:
            if name in body:
                value = body[name]
                numpy_type = script.numpy_params.get(name)
                kwargs[name] = to_numpy(numpy_type, value) if numpy_type is not None else value
            elif name in script.defaults:
                # Passed explicitly: inference-schema's wrapper looks decorated parameters up by position.
                kwargs[name] = script.defaults[name]
            else:
                raise InputError(400, f"A value is not provided for the {name!r} parameter.")
        model_input = {name: body[name] for name in script.input_params if name in body}
    else:
        model_input = _json_string(request)
        kwargs = {script.first_param: model_input}
    if script.wants_request_headers:
        kwargs["request_headers"] = dict(request.headers)
    return kwargs, model_input
