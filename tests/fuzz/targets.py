"""Fuzz targets: one function per parser, each taking raw bytes and allowing only the parser's declared errors.

A target returns normally when the parser accepted the input or refused it with its declared error, and raises
:class:`FuzzFailure` (or lets any other exception escape) when an invariant broke. The same targets run under atheris
(coverage-guided) and under hypothesis (the fallback where atheris cannot be installed); see ``fuzz_main.py``.

Inputs model what a real HTTP server can deliver: header values never contain CR, LF or NUL (gunicorn and waitress
refuse those before the app runs) and WSGI strings are bytes decoded as latin-1.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import tempfile
import uuid
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from azmlinfsrv.servers.http11 import ChunkedDecoder
from azmlinfsrv.servers.http11 import HttpError
from azmlinfsrv.servers.http11 import Limits
from azmlinfsrv.servers.http11 import parse_head
from azureml_inference_server_http import constants as c
from azureml_inference_server_http.config import ServerConfig
from azureml_inference_server_http.config import format_config_error
from azureml_inference_server_http.exceptions import ConfigError
from azureml_inference_server_http.exceptions import ConfigFileError
from azureml_inference_server_http.server import app as app_module
from azureml_inference_server_http.server import arrays
from azureml_inference_server_http.server import create_app
from azureml_inference_server_http.server import jsonio
from azureml_inference_server_http.server.app import get_state
from azureml_inference_server_http.server.cors import CorsPolicy
from azureml_inference_server_http.server.inputs import InputError
from azureml_inference_server_http.server.inputs import query_dict
from azureml_inference_server_http.server.inputs import run_arguments
from azureml_inference_server_http.server.inputs import to_numpy
from flask import Flask
from flask import Request
from werkzeug.datastructures import Headers
from werkzeug.test import EnvironBuilder

try:  # imported as part of the tests package by pytest, or run as a file by fuzz_main.py
    from .fuzzdata import FuzzInput
except ImportError:  # pragma: no cover - depends on how the module was reached
    from fuzzdata import FuzzInput  # type: ignore[import-not-found,no-redef]

RESOURCES = Path(__file__).parent / "resources"
DECORATED = RESOURCES / "decorated_score.py"
UNDECORATED = RESOURCES / "undecorated_score.py"


class FuzzFailure(AssertionError):
    """An invariant of the target broke; the message says which and with what."""


class _FormatEveryRecord(logging.Handler):
    """Formats every record and discards it: a broken log call (bad %-args) fails the target instead of hiding.

    The last logged traceback is kept so that a failure report shows where a 500 came from.
    """

    last_traceback = ""

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.exc_info:
            _FormatEveryRecord.last_traceback = text[-1500:]


def quiet_logging() -> None:
    for name in ("azmlinfsrv", "azureml_inference_server_http", "inference_schema"):
        log = logging.getLogger(name)
        log.handlers[:] = [_FormatEveryRecord()]
        log.propagate = False
        log.setLevel(logging.DEBUG)


def _strict_json(text: str | bytes) -> Any:
    """Parse as strict JSON: NaN, Infinity and -Infinity are refused."""

    def refuse(name: str) -> Any:
        raise FuzzFailure(f"non-finite number {name} in a response body")

    return json.loads(text, parse_constant=refuse)


def _depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest


def _header_text(fi: FuzzInput, max_len: int) -> str:
    """A header value as a WSGI server hands it over: latin-1 text without CR, LF or NUL."""
    raw = fi.raw(max_len)
    return raw.decode("latin-1").replace("\r", "").replace("\n", "").replace("\x00", "")


# --- JSON input parser ----------------------------------------------------------------------------------


def _oracle_loads(data: bytes | str) -> tuple[bool, Any]:
    """The stdlib under the same policy: (accepted, value). None for 'cannot tell' (recursion)."""

    def refuse(name: str) -> Any:
        raise ValueError(name)

    def finite(text: str) -> float:
        value = float(text)
        if math.isinf(value):
            raise ValueError(text)
        return value

    try:
        return True, json.loads(data, parse_constant=refuse, parse_float=finite)
    except RecursionError:
        raise
    except ValueError:
        return False, None


def target_json_loads(data: bytes) -> None:
    """``jsonio.loads`` raises only JSONInputError; what it accepts is strict JSON within the depth limit and equals
    what the stdlib parses under the same policy."""
    fi = FuzzInput(data)
    as_text = fi.flag()
    payload: bytes | str = fi.text(4096) if as_text else fi.rest()
    try:
        value = jsonio.loads(payload)
    except jsonio.JSONInputError as exc:
        if not str(exc):
            raise FuzzFailure("JSONInputError without a message") from None
        accepted = False
        value = None
    else:
        accepted = True
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise FuzzFailure(f"loads accepted a non-finite number from {payload[:80]!r}") from None
        if _depth(value) > jsonio.MAX_DEPTH:
            raise FuzzFailure(f"loads accepted nesting deeper than {jsonio.MAX_DEPTH}")
    try:
        oracle_accepted, oracle_value = _oracle_loads(payload)
    except RecursionError:
        return
    if oracle_accepted and _depth(oracle_value) > jsonio.MAX_DEPTH:
        oracle_accepted, oracle_value = False, None
    if oracle_accepted and not accepted:
        raise FuzzFailure(f"the stdlib accepts {payload[:80]!r} but loads refused it")
    if accepted and not oracle_accepted:
        raise FuzzFailure(f"loads accepted {payload[:80]!r} which the stdlib refuses")
    if accepted and value != oracle_value:
        raise FuzzFailure(f"loads gave {value!r:.80} but the stdlib gives {oracle_value!r:.80} for {payload[:80]!r}")


# --- query string --------------------------------------------------------------------------------------


def _request(
    method: str = "GET",
    path: str = "/score",
    query: bytes = b"",
    headers: Headers | None = None,
    body: bytes = b"",
) -> Request:
    builder = EnvironBuilder(path=path, method=method, headers=headers, data=body)
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    # WSGI servers pass the raw query bytes decoded as latin-1 (PEP 3333).
    environ["QUERY_STRING"] = query.decode("latin-1")
    return Request(environ)


def target_query(data: bytes) -> None:
    """``query_dict`` raises only InputError(400) and its result is serializable by the output writer."""
    fi = FuzzInput(data)
    query = fi.rest()
    try:
        result = query_dict(_request(query=query))
    except InputError as exc:
        if exc.status != 400 or not exc.message:
            raise FuzzFailure(f"query_dict raised InputError({exc.status}, {exc.message!r})") from None
        return
    if not isinstance(result, dict):
        raise FuzzFailure(f"query_dict returned {type(result).__name__}")
    _strict_json(jsonio.dumps(result))


# --- run() arguments -----------------------------------------------------------------------------------

_CONTENT_TYPES = (
    "",
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/problem+json",
    "APPLICATION/JSON",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "application/x-python-pickle",
)


@cache
def _script(path: str) -> Any:
    quiet_logging()
    app = create_app(entry_script=path, environ={"AML_APP_ROOT": str(RESOURCES)})
    quiet_logging()
    return get_state(app).script


def target_run_arguments(data: bytes) -> None:
    """``run_arguments`` raises only InputError (400/413/415) and gives run() exactly its parameters."""
    fi = FuzzInput(data)
    decorated = fi.flag()
    script = _script(str(DECORATED if decorated else UNDECORATED))
    method = fi.pick(("GET", "POST", "POST", "POST"))
    headers = Headers()
    content_type = fi.pick(_CONTENT_TYPES) if fi.flag() else _header_text(fi, 60)
    if content_type:
        headers["Content-Type"] = content_type
    query = fi.raw(200)
    body = fi.rest()
    request = _request(method=method, query=query, headers=headers, body=body)
    try:
        kwargs, _ = run_arguments(script, request)
    except InputError as exc:
        if exc.status not in (400, 413, 415) or not exc.message:
            raise FuzzFailure(f"run_arguments raised InputError({exc.status}, {exc.message!r})") from None
        return
    expected = set(script.input_params) if decorated else {script.first_param}
    if set(kwargs) != expected:
        raise FuzzFailure(f"run() would get {sorted(kwargs)}, expected {sorted(expected)}")
    if not decorated and not isinstance(kwargs[script.first_param], str):
        raise FuzzFailure("an undecorated run() must get a str")


# --- numeric arrays built in pieces --------------------------------------------------------------------

_ARRAY_SAMPLES = ("float64 2-d", "int64 1-d", "float32 3-d", "bool 2-d", "complex 1-d")


@cache
def _array_param(name: str, enforce_shape: bool) -> Any:
    import numpy as np
    from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType

    samples = {
        "float64 2-d": np.zeros((2, 3)),
        "int64 1-d": np.zeros(3, dtype=np.int64),
        "float32 3-d": np.zeros((1, 2, 2), dtype=np.float32),
        "bool 2-d": np.zeros((2, 2), dtype=np.bool_),
        "complex 1-d": np.zeros(2, dtype=np.complex128),
    }
    return NumpyParameterType(samples[name], enforce_shape=enforce_shape)


def target_numeric_arrays(data: bytes) -> None:
    """An array built a piece at a time (arrays.py) is exactly the array the whole-document path builds from the
    same body, and the rest of the document is the same; a body that path would refuse is never built."""
    import numpy as np

    fi = FuzzInput(data)
    param = _array_param(fi.pick(_ARRAY_SAMPLES), fi.flag())
    piece_bytes = fi.int_in(0, 40)
    body = fi.rest()
    got = arrays.loads_document(body, arrays.array_specs({"data": param}), min_bytes=0, piece_bytes=piece_bytes)
    if got is None:
        return
    try:
        expected = jsonio.loads(body)
    except jsonio.JSONInputError as exc:
        raise FuzzFailure(f"built an array from a body the policy refuses: {exc}") from None
    if not isinstance(expected, dict) or list(expected) != list(got):
        raise FuzzFailure(f"document differs: {list(got)} against {expected!r:.200}")
    for key, value in expected.items():
        if key == "data":
            usual = to_numpy(param, value)
            array = got[key]
            if not isinstance(usual, np.ndarray):
                raise FuzzFailure(f"built an array where the usual path leaves {usual!r:.200} to inference-schema")
            if usual.dtype != array.dtype or usual.shape != array.shape or not np.array_equal(usual, array, True):
                raise FuzzFailure(f"arrays differ: {array!r:.200} against {usual!r:.200}")
        elif got[key] != value:
            raise FuzzFailure(f"value of {key!r} differs: {got[key]!r:.200} against {value!r:.200}")


# --- request ids ---------------------------------------------------------------------------------------

# Stands for "a UUID the server generated"; NUL never reaches the app in a header, so no client can send it.
GENERATED = "\x00generated"
_ID_HEADERS = (c.HEADER_REQUEST_ID, c.HEADER_LEGACY_REQUEST_ID, c.HEADER_CLIENT_REQUEST_ID, c.HEADER_TRACE_ID)


def _expected_ids(sent: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """docs/compatibility.md#request-ids written out as a table walk: (431 message or None, ids that are accepted)."""
    limit = c.HEADER_LIMIT
    request_id = sent.get(c.HEADER_REQUEST_ID)
    if request_id is not None and len(request_id) > limit:
        return app_module.MSG_REQUEST_ID_TOO_LONG, {}
    legacy_in = sent.get(c.HEADER_LEGACY_REQUEST_ID, "")
    client_in = sent.get(c.HEADER_CLIENT_REQUEST_ID, "")
    if legacy_in:
        client, legacy = client_in or legacy_in, legacy_in
    else:
        client, legacy = client_in, client_in or (request_id if request_id is not None else GENERATED)
    if len(legacy) > limit or len(client) > limit:
        return app_module.MSG_CLIENT_ID_TOO_LONG, {"request_id": request_id if request_id is not None else GENERATED}
    trace = sent.get(c.HEADER_TRACE_ID)
    ids = {"request_id": request_id if request_id is not None else GENERATED, "legacy": legacy, "client": client}
    if trace is not None:
        if len(trace) > limit:
            return app_module.MSG_TRACE_ID_TOO_LONG, ids
        ids["trace"] = trace
    return None, ids


def target_request_ids(data: bytes) -> None:
    """``_read_ids`` follows the request-id table exactly and never raises."""
    fi = FuzzInput(data)
    sent: dict[str, str] = {}
    headers = Headers()
    for name in _ID_HEADERS:
        if fi.flag():
            # Lengths around the limit matter most: 0, 1, 99-101 and beyond.
            length = fi.pick(("0", "1", "36", "99", "100", "101", "150", "any"))
            value = _header_text(fi, 130) if length == "any" else ("a" * int(length))
            spelled = fi.pick((name, name.upper(), name.lower()))
            headers[spelled] = value
            sent[name] = value
    ids = app_module._Ids()
    problem = app_module._read_ids(headers, ids)
    expected_problem, expected = _expected_ids(sent)
    if problem != expected_problem:
        raise FuzzFailure(f"_read_ids gave {problem!r}, the table gives {expected_problem!r} for {sent!r}")
    if problem == app_module.MSG_REQUEST_ID_TOO_LONG:
        return
    generated = expected.get("request_id") == GENERATED
    if generated:
        uuid.UUID(ids.request_id)
    elif ids.request_id != expected["request_id"]:
        raise FuzzFailure(f"request id {ids.request_id!r}, expected {expected['request_id']!r}")
    if problem is None or problem == app_module.MSG_TRACE_ID_TOO_LONG:
        legacy = ids.request_id if expected["legacy"] == GENERATED else expected["legacy"]
        if (ids.legacy, ids.client) != (legacy, expected["client"]):
            raise FuzzFailure(f"ids {ids.legacy!r}/{ids.client!r}, expected {legacy!r}/{expected['client']!r}")
    if problem is None and ids.trace_id != expected.get("trace"):
        raise FuzzFailure(f"TraceId {ids.trace_id!r}, expected {expected.get('trace')!r}")


# --- CORS ----------------------------------------------------------------------------------------------

_ORIGIN_PARTS = (
    "https://example.com",
    "http://example.com",
    "https://EXAMPLE.com",
    "https://example.com:8443",
    "https://example.com/",
    "https://example.com.evil.net",
    "https://evil-example.com",
    "https://a.example.com",
    "https://\u212aevin.example",
    "https://kevin.example",
    "www.microsoft.com",
    "null",
    "*",
    "",
    " ",
)


def _ascii_lower(text: str) -> str:
    return "".join(chr(ord(ch) + 32) if "A" <= ch <= "Z" else ch for ch in text)


def target_cors(data: bytes) -> None:
    """``CorsPolicy`` matches exactly (ASCII case and a trailing slash aside), echoes only the request's origin and
    never sends credentials headers."""
    fi = FuzzInput(data)
    parts = []
    for _ in range(fi.int_in(0, 4)):
        parts.append(fi.pick(_ORIGIN_PARTS) if fi.flag() else fi.text(40))
    value = ",".join(parts)
    # The Origin header arrives as WSGI text: its bytes decoded as latin-1.
    origin = fi.pick(_ORIGIN_PARTS).encode("utf-8", "replace").decode("latin-1") if fi.flag() else _header_text(fi, 60)
    policy = CorsPolicy.parse(value)
    if policy is None:
        if value:
            raise FuzzFailure(f"a non-empty value {value!r} gave no policy")
        return
    entries = [p.strip() for p in value.split(",") if p.strip()]
    allowed = policy.allows(origin)
    exact = any(_ascii_lower(origin).rstrip("/") == _ascii_lower(e).rstrip("/") for e in entries)
    if allowed and not exact and "*" not in entries:
        raise FuzzFailure(f"origin {origin!a} allowed by {entries!a} without an exact match")
    if exact and not allowed:
        raise FuzzFailure(f"origin {origin!a} refused although {entries!a} lists it")
    requested = _header_text(fi, 40) if fi.flag() else None
    preflight = fi.flag()
    headers = list(policy.headers(origin, requested, preflight))
    names = [name.lower() for name, _ in headers]
    if not origin or not allowed:
        if headers:
            raise FuzzFailure(f"CORS headers {headers!r} for a refused origin {origin!r}")
        return
    as_dict = dict(headers)
    if as_dict.get("Access-Control-Allow-Origin") != origin:
        raise FuzzFailure(
            f"Access-Control-Allow-Origin is {as_dict.get('Access-Control-Allow-Origin')!r}, not the origin"
        )
    if "access-control-allow-credentials" in names:
        raise FuzzFailure("credentials header sent")
    if as_dict.get("Vary") != "Origin":
        raise FuzzFailure("Vary: Origin missing")
    if ("access-control-allow-methods" in names) != preflight:
        raise FuzzFailure("Allow-Methods on a non-preflight response, or missing on a preflight")
    if ("access-control-allow-headers" in names) != bool(preflight and requested):
        raise FuzzFailure("Allow-Headers sent without a preflight asking for headers, or missing")


# --- configuration -------------------------------------------------------------------------------------

_CONFIG_NAMES = (
    c.ENV_SCORING_TIMEOUT_MS,
    c.ENV_APP_INSIGHTS_ENABLED,
    c.ENV_APP_INSIGHTS_KEY,
    c.ENV_MDC_STORAGE_ENABLED,
    c.ENV_MODEL_DC_STORAGE_ENABLED,
    c.ENV_APP_INSIGHTS_LOG_RESPONSE_ENABLED,
    c.ENV_CORS_ORIGINS,
    c.ENV_DEBUG_PORT,
    c.ENV_WORKER_THREADS,
    c.ENV_MAX_REQUEST_BODY_MB,
    c.ENV_METRICS_ENABLED,
    c.ENV_SERVICE_NAME,
    c.ENV_SERVICE_PATH_PREFIX,
    c.ENV_SOURCE_DIRECTORY,
    c.ENV_ENTRY_SCRIPT,
    c.ENV_LOG_LEVEL,
    c.ENV_MODEL_DIR,
    "UNKNOWN_KEY",
)
_CONFIG_VALUES = (
    "0",
    "1",
    "-1",
    "2.0",
    "1.5",
    "1e3",
    "1e400",
    "nan",
    "inf",
    "-inf",
    " 7 ",
    "1_000",
    "9" * 5000,
    "true",
    "FALSE",
    "yes",
    "",
    "\x00",
    "\udcff",
)
_JSON_VALUES = ("0", "1.5", "1e308", "-1e309", "NaN", "Infinity", "true", "null", '"x"', "[1]", "{}", '"9"')


@cache
def _config_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="azmlinfsrv-fuzz-config-"))


def _config_file(fi: FuzzInput) -> bytes:
    kind = fi.int_in(0, 3)
    if kind == 0:
        return fi.raw(400)
    if kind == 1:
        depth = fi.int_in(0, 3000)
        return b"[" * depth + b"]" * depth
    pairs = []
    for _ in range(fi.int_in(0, 5)):
        name = fi.pick(_CONFIG_NAMES)
        value = fi.pick(_JSON_VALUES) if fi.flag() else json.dumps(fi.pick(_CONFIG_VALUES))
        pairs.append(f"{json.dumps(name)}: {value}")
    text = "{" + ", ".join(pairs) + "}"
    return text.encode("utf-8", "surrogatepass") if kind == 2 else text.encode("utf-8", "replace")


def target_config(data: bytes) -> None:
    """``ServerConfig.from_env`` raises only ConfigError/ConfigFileError, for any environment and config.json."""
    fi = FuzzInput(data)
    env: dict[str, str] = {}
    for _ in range(fi.int_in(0, 6)):
        name = fi.pick(_CONFIG_NAMES)
        if fi.flag():
            name = name.lower()
        env[name] = fi.pick(_CONFIG_VALUES) if fi.flag() else fi.text(30)
    if fi.flag():
        path = _config_dir() / "config.json"
        path.write_bytes(_config_file(fi))
        env[c.ENV_CONFIG_FILE] = str(path)
    try:
        config = ServerConfig.from_env(env)
    except ConfigError as exc:
        if not exc.errors:
            raise FuzzFailure("ConfigError without errors") from None
        format_config_error(exc)
        return
    except ConfigFileError as exc:
        if not str(exc):
            raise FuzzFailure("ConfigFileError without a message") from None
        return
    # Every derived value must be computable for a config that was accepted.
    _ = (config.telemetry_enabled, config.max_request_body_bytes, config.source_directory_path)
    _ = config.entry_script_path
    repr(config)
    CorsPolicy.parse(config.cors_origins)


# --- whole requests through the WSGI app ---------------------------------------------------------------

_PATHS = ("/", "/score", "/score", "/score", "/swagger.json", "/health/live", "/health/ready", "/metrics", "/x")
_METHODS = ("GET", "POST", "POST", "OPTIONS", "HEAD", "PUT", "DELETE", "PATCH")
_EXTRA_HEADERS = (
    "Content-Type",
    "Origin",
    "Access-Control-Request-Method",
    "Access-Control-Request-Headers",
    "Accept",
    "Accept-Encoding",
    c.HEADER_REQUEST_ID,
    c.HEADER_CLIENT_REQUEST_ID,
    c.HEADER_LEGACY_REQUEST_ID,
    c.HEADER_TRACE_ID,
    "Authorization",
)


@cache
def _app(path: str, cors: str) -> Flask:
    quiet_logging()
    app = create_app(
        entry_script=path,
        environ={
            "AML_APP_ROOT": str(RESOURCES),
            c.ENV_CORS_ORIGINS: cors,
            c.ENV_SERVER_VERSION: "azmlinfsrv/fuzz",
            c.ENV_MAX_REQUEST_BODY_MB: "1",
        },
    )
    quiet_logging()
    return app


def _check_response(status: int, headers: Headers, body: bytes, method: str, decorated: bool) -> None:
    for name, value in headers.items():
        if any(ch in value for ch in "\r\n\x00") or any(ch in name for ch in "\r\n\x00: "):
            raise FuzzFailure(f"response header {name!r}: {value!r} carries a control character")
    if status >= 500:
        user_error = headers.get(c.HEADER_RUN_FUNCTION_FAILED) == "True"
        # A decorated run() gets inference-schema's conversion errors as user errors (docs/compatibility.md#score).
        if not (decorated and user_error):
            raise FuzzFailure(f"server error {status}: {body[:200]!r}\n{_FormatEveryRecord.last_traceback}")
    content_type = headers.get("Content-Type", "")
    if method != "HEAD" and content_type.startswith("application/json") and body:
        parsed = _strict_json(body)
        if status >= 400 and not (isinstance(parsed, dict) and isinstance(parsed.get("message"), str)):
            raise FuzzFailure(f"error body without a message: {body[:200]!r}")


def _wsgi_target(data: bytes, script: Path) -> None:
    fi = FuzzInput(data)
    app = _app(str(script), "https://example.com,http://localhost:3000")
    method = fi.pick(_METHODS)
    path = fi.pick(_PATHS) if fi.flag() else "/" + fi.raw(20).decode("latin-1")
    headers = Headers()
    for _ in range(fi.int_in(0, 4)):
        name = fi.pick(_EXTRA_HEADERS)
        if name == "Content-Type" and fi.flag():
            headers[name] = fi.pick(_CONTENT_TYPES)
        else:
            headers[name] = _header_text(fi, 120)
    query = fi.raw(120)
    body = fi.rest()
    builder = EnvironBuilder(path="/", method=method, headers=headers, data=body)
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = query.decode("latin-1")
    captured: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"] = int(status.split(" ", 1)[0])
        captured["headers"] = Headers(response_headers)
        return lambda chunk: None

    _FormatEveryRecord.last_traceback = ""
    result = app.wsgi_app(environ, start_response)
    try:
        out = io.BytesIO()
        for chunk in result:
            out.write(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    _check_response(captured["status"], captured["headers"], out.getvalue(), method, script == DECORATED)


def target_wsgi_undecorated(data: bytes) -> None:
    """Any request to the app with an undecorated run() (which never fails): no 5xx, strict-JSON bodies, safe
    headers."""
    _wsgi_target(data, UNDECORATED)


def target_wsgi_decorated(data: bytes) -> None:
    """The same for an ``@input_schema`` run(); a 500 is allowed only as a declared user-script error."""
    _wsgi_target(data, DECORATED)


_HTTP_STATUSES = {400, 414, 431, 501, 505}


def target_http_head(data: bytes) -> None:
    """The worker's request-head parser raises only HttpError with a 4xx/5xx it declares; what it accepts is
    unambiguous: one framing, CGI names without CR/LF, and a body length that is a plain integer."""
    head_bytes = data.split(b"\r\n\r\n", 1)[0]
    try:
        head = parse_head(head_bytes, Limits())
    except HttpError as exc:
        if exc.status not in _HTTP_STATUSES or not exc.message:
            raise FuzzFailure(f"undeclared error {exc.status} {exc.message!r}") from exc
        return
    if head.chunked and "CONTENT_LENGTH" in head.environ:
        raise FuzzFailure("accepted both chunked framing and a Content-Length")
    if head.content_length < 0 or (head.chunked and head.version != "HTTP/1.1"):
        raise FuzzFailure(f"bad framing: {head.content_length} {head.version}")
    for key, value in head.environ.items():
        if any(ch in str(value) for ch in "\r\n\x00"):
            raise FuzzFailure(f"{key} carries a line break or NUL: {value!r}")


def target_http_chunked(data: bytes) -> None:
    """The chunked-body decoder raises only HttpError(400/431), and gives the same body however the bytes arrive."""
    if not data:
        return
    split = data[0] % 8 + 1
    raw = data[1:]
    results = []
    for step in (len(raw) or 1, split):
        decoder = ChunkedDecoder(1 << 16)
        buf = bytearray()
        pos = 0
        try:
            for start in range(0, len(raw), step):
                buf += raw[start : start + step]
                pos = decoder.feed(buf, pos)
        except HttpError as exc:
            if exc.status not in (400, 431):
                raise FuzzFailure(f"undeclared error {exc.status}") from exc
            results.append(("error", exc.status))
            continue
        results.append(("ok", decoder.done, decoder.over_limit, bytes(decoder.body) if decoder.done else None))
    if results[0] != results[1]:
        raise FuzzFailure(f"whole and split arrival differ: {results}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "json_loads": target_json_loads,
    "query": target_query,
    "run_arguments": target_run_arguments,
    "numeric_arrays": target_numeric_arrays,
    "request_ids": target_request_ids,
    "cors": target_cors,
    "config": target_config,
    "wsgi_undecorated": target_wsgi_undecorated,
    "wsgi_decorated": target_wsgi_decorated,
    "http_head": target_http_head,
    "http_chunked": target_http_chunked,
}


def _seed(*parts: bytes) -> bytes:
    return b"".join(parts)


# Starting points: valid inputs that reach deep branches at once. The fuzzers mutate from here.
SEEDS: dict[str, list[bytes]] = {
    "json_loads": [
        b"\x00" + b'{"a": [1, 2.5, -3e2, true, null, "x"]}',
        b"\x00" + b'{"a":1,"a":2}',
        b"\x00" + b"[" * 1100 + b"]" * 1100,
        b"\x00" + b"1" * 30,
        b"\x00" + b"NaN",
        b"\x00" + b"1e999",
        b"\x00" + '"\u00e9"'.encode("utf-16"),
        b"\x00" + b'"\xff"',
        b"\x01" + b"\x40[1,2]",
    ],
    "query": [b"a=1&b=x&a=2", b"data=[[1,2,3]]&label=%22x%22", b"a=%ff", b"a=" + b"[" * 2000, b"a=NaN&b=1e999"],
    "run_arguments": [
        b"\x01\x01\x00\x01\x00\x00" + b'{"data": [[1.0, 2.0, 3.0]], "label": "x"}',
        b"\x00\x01\x00\x01\x00\x00" + b"hello",
        b"\x01\x00\x00\x00\x00\x00",
        b"\x01\x01\x00\x01\x00\x00[1,2]",
    ],
    "numeric_arrays": [
        b"\x00\x01\x03" + b'{"x": "]", "data": [[1.5, -2e3, 0], [4, 5, 6], [7, 8, 9]], "y": [1]}',
        b"\x01\x00\x00" + b'{"data": [1, 2, 3,\n 4, 5]}',
        b"\x02\x01\x05" + b'{"data": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}',
        b"\x00\x01\x01" + b'{"data": [[1, 2, 3], [4, 5, 6],], "data": [[1, 2, 3]]}',
    ],
    "request_ids": [b"\x01\x05\x00" * 4, b"\x01\x04\x00\x01\x05\x00\x00\x00\x01\x07\x20" + b"x" * 32],
    "cors": [b"\x02\x01\x00\x01\x01\x01\x00\x00", b"\x01\x01\x0c\x01\x05\x01\x01\x01\x01ab"],
    "config": [b"\x02\x00\x00\x00\x00\x01\x02\x02\x00\x01\x00", b"\x00\x01\x01\x01\x10"],
    "wsgi_undecorated": [
        _seed(b"\x01\x01\x01\x01\x00\x01\x00\x00", b'{"a": 1}'),
        _seed(b"\x00\x01\x01\x00", b"a=1"),
    ],
    "wsgi_decorated": [
        _seed(b"\x01\x01\x01\x01\x00\x01\x00\x00", b'{"data": [[1.0, 2.0, 3.0]], "label": "x"}'),
    ],
}


def run_one(name: str, data: bytes) -> None:
    """Run one input through a target (used to replay crash files)."""
    TARGETS[name](data)


if __name__ == "__main__":  # pragma: no cover - a replay helper: python targets.py NAME FILE
    import sys

    quiet_logging()
    run_one(sys.argv[1], Path(sys.argv[2]).read_bytes())
    print("no failure", file=sys.stderr)
    os._exit(0)
