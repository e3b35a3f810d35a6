"""The Flask app: routes, request ids, response headers, errors and the per-request log line.

Routes (docs/compatibility.md#routes): ``/`` (liveness, upstream's), ``/score``, ``/swagger.json``, and our additions
``/health/live``, ``/health/ready`` (also under ``/v2/``), ``/metrics`` and the Open Inference Protocol's model routes
(v2.py). Request ids, TraceId, the server version header and CORS apply to upstream's three routes, as upstream's
blueprint hooks did, and to the model routes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any

from flask import Flask
from flask import Request
from flask import Response
from flask import request
from flask.ctx import RequestContext
from flask.sessions import NullSession
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import MapAdapter
from werkzeug.routing import Rule
from werkzeug.wrappers import Response as WerkzeugResponse

from .. import constants as c
from ..config import ServerConfig
from ..exceptions import UserScriptTimeout
from . import jsonio
from .inputs import BODY_READ_KEY
from .inputs import InputError
from .inputs import check_query_utf8
from .inputs import run_arguments
from .metrics import Metrics
from .openapi import view as openapi_view
from .scoring import SLOT_LEASE_KEY
from .scoring import AnsweredTimeout
from .state import PHASE_READY
from .state import ServerState
from .telemetry import ModelDataRecord
from .telemetry import RequestRecord
from .tracing import TracingMiddleware
from .tracing import current_trace_id
from .tracing import traced
from .user_script import UserScript

logger = logging.getLogger("azmlinfsrv")

MSG_USER_ERROR = "An unexpected error occurred in scoring script. Check the logs for more info."
MSG_INTERNAL_ERROR = "An unexpected internal error occurred. Check the logs for more info."
MSG_NOT_READY = "The score script is not ready: init() has not completed."
MSG_REQUEST_ID_TOO_LONG = f"x-request-id must not exceed {c.HEADER_LIMIT} characters"
MSG_CLIENT_ID_TOO_LONG = f"x-ms-request-id and x-ms-client-request-id must not exceed {c.HEADER_LIMIT} characters"
MSG_TRACE_ID_TOO_LONG = f"TraceId must not exceed {c.HEADER_LIMIT} characters"
MSG_LEGACY_ID_DEPRECATED = (
    "x-ms-request-id header has been deprecated and will be removed from future versions of the server. "
    "Please use x-ms-client-request-id."
)
JSON = "application/json"
HTML = "text/html; charset=utf-8"
STATE_KEY = "azmlinfsrv.state"


def _message(text: str) -> bytes:
    # compat: error bodies use json.dumps defaults, e.g. {"message": "..."} with a space after the colon.
    return json.dumps({"message": text}).encode("utf-8")


def _new_request_id() -> str:
    """A random (version 4) UUID, as upstream's ids are.

    Request ids correlate log lines; they are not secrets, so they come from the process's seeded PRNG
    rather than from os.urandom, which is a system call per request.
    """
    h = "%032x" % (random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# The version (4) and variant (RFC 4122) bits of a random UUID.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


class _Ids:
    """The request ids of one request (docs/compatibility.md#request-ids)."""

    __slots__ = ("client", "legacy", "request_id", "trace_id")

    def __init__(self) -> None:
        self.request_id = ""
        self.legacy = ""
        self.client = ""
        self.trace_id: str | None = None


def _read_ids(headers: Any, ids: _Ids) -> str | None:
    """Fill ``ids`` from the request; returns the 431 message when a header is too long."""
    request_id = headers.get(c.HEADER_REQUEST_ID)
    if request_id is None:
        request_id = _new_request_id()
    if len(request_id) > c.HEADER_LIMIT:
        return MSG_REQUEST_ID_TOO_LONG
    ids.request_id = request_id
    legacy = headers.get(c.HEADER_LEGACY_REQUEST_ID, "")
    client = headers.get(c.HEADER_CLIENT_REQUEST_ID, "")
    if legacy:
        # compat: logged on every request that carries the legacy header.
        logger.warning(MSG_LEGACY_ID_DEPRECATED)
        ids.client = client or legacy
        ids.legacy = legacy
    else:
        ids.client = client
        ids.legacy = client or request_id
    if len(ids.legacy) > c.HEADER_LIMIT or len(ids.client) > c.HEADER_LIMIT:
        ids.legacy = ids.client = ""
        return MSG_CLIENT_ID_TOO_LONG
    trace_id = headers.get(c.HEADER_TRACE_ID)
    if trace_id is not None:
        # Upstream echoes TraceId at any length (docs/guarantees.md#w11); we hold it to the id limit.
        if len(trace_id) > c.HEADER_LIMIT:
            return MSG_TRACE_ID_TOO_LONG
        ids.trace_id = trace_id
    return None


class _LimitedInput:
    """A request body stream that raises 413 once more than ``limit`` bytes were read."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._read = 0

    def _count(self, data: bytes) -> bytes:
        self._read += len(data)
        if self._read > self._limit:
            raise RequestEntityTooLarge(f"Request body exceeds the limit of {self._limit} bytes (MAX_REQUEST_BODY_MB).")
        return data

    def _size(self, size: int | None) -> int:
        # Never ask for more than one byte past the limit: that byte is enough to know the body is too large.
        allowed = self._limit - self._read + 1
        return allowed if size is None or size < 0 else min(size, allowed)

    def read(self, size: int | None = -1) -> bytes:
        return self._count(self._stream.read(self._size(size)))

    def readline(self, size: int | None = -1) -> bytes:
        return self._count(self._stream.readline(self._size(size)))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


class ScoringApp:
    """The handlers, bound to one :class:`ServerState`."""

    def __init__(self, flask_app: Flask, state: ServerState, metrics: Metrics) -> None:
        self.app = flask_app
        self.state = state
        self.metrics = metrics
        self.response_class = _PlainResponse
        self._run_in_span: tuple[UserScript, Callable[..., Any]] | None = None

    def _traced_run(self, script: UserScript) -> Callable[..., Any]:
        """run() in a span of its own; made once per loaded script (a reload loads a new one)."""
        cached = self._run_in_span
        if cached is not None and cached[0] is script:
            return cached[1]
        attributes = {"code.function.name": "run"}
        if script.path:
            attributes["code.filepath"] = script.path
        run = traced(self.state.tracer, "run", script.run, attributes)
        self._run_in_span = (script, run)
        return run

    # -- shared pieces -----------------------------------------------------------------------------------

    def _json(self, status: int, text: str, failed: bool = False, body: Callable[[str], bytes] = _message) -> Response:
        response = self.response_class(body(text), status=status, mimetype=JSON)
        response.headers[c.HEADER_RUN_FUNCTION_FAILED] = "True" if failed else "False"
        return response

    def _finish(self, response: WerkzeugResponse, ids: _Ids, req: Request) -> WerkzeugResponse:
        """Headers every response of upstream's routes carries (docs/compatibility.md#response-headers)."""
        headers = response.headers
        if ids.request_id:
            headers[c.HEADER_REQUEST_ID] = ids.request_id
        if ids.legacy:
            headers[c.HEADER_LEGACY_REQUEST_ID] = ids.legacy
        if ids.client:
            headers[c.HEADER_CLIENT_REQUEST_ID] = ids.client
        if ids.trace_id is not None:
            headers.add(c.HEADER_TRACE_ID, ids.trace_id)
        version = self.state.config.server_version
        if version:
            headers.add(c.HEADER_SERVER_VERSION, version)
        cors = self.state.cors
        if cors is not None:
            origin = req.headers.get("Origin")
            if origin:
                preflight = req.method == "OPTIONS" and "Access-Control-Request-Method" in req.headers
                for name, value in cors.headers(origin, req.headers.get("Access-Control-Request-Headers"), preflight):
                    headers[name] = value
        return response

    def _log_line(self, req: Request, response: WerkzeugResponse, started: float) -> float:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        query = req.query_string
        path = req.path + "?" + query.decode("latin-1") if query else req.path
        length = response.headers.get("Content-Length", "N/A") if not response.is_streamed else "N/A"
        if self.state.tracing_on:
            # The trace id ties the line to the request's spans (docs/tracing.md#logs-and-telemetry).
            logger.info(
                "%s %s %d %.3fms %s trace_id=%s",
                req.method,
                path,
                response.status_code,
                elapsed_ms,
                length,
                current_trace_id(),
            )
            return elapsed_ms
        logger.info(
            "%s %s %d %.3fms %s",
            req.method,
            path,
            response.status_code,
            elapsed_ms,
            length,
        )
        return elapsed_ms

    def _report(
        self,
        req: Request,
        response: WerkzeugResponse,
        ids: _Ids,
        wall_start: float,
        ms: float,
    ) -> None:
        response_value: str | None = None
        if self.state.config.app_insights_log_response_enabled and not response.is_streamed:
            try:
                response_value = response.get_data().decode("utf-8")
            except UnicodeDecodeError:
                response_value = json.dumps(
                    "Scoring request response payload is a non serializable object or raw binary"
                )
        self.state.telemetry.request(
            RequestRecord(
                name=req.path,
                url=req.url,
                method=req.method,
                status_code=response.status_code,
                start_time=wall_start,
                duration_ms=ms,
                request_id=ids.request_id,
                client_request_id=ids.client,
                response_value=response_value,
            )
        )

    def _raw_mode(self) -> bool:
        script = self.state.script
        return script is not None and script.mode.value == "raw"

    def _too_large(self, req: Request) -> Response | None:
        limit = self.state.config.max_request_body_bytes
        length = req.content_length
        if limit is not None and length is not None and length > limit:
            response = self._json(
                413,
                f"Request body of {length} bytes exceeds the limit of {limit} bytes (MAX_REQUEST_BODY_MB).",
            )
            # The body is not read: the connection cannot be reused. (PEP 3333 lets no app set "Connection", so
            # gunicorn would keep the connection and read the whole body; _drop_unread_body stops that.)
            response.headers["Connection"] = "close"
            return response
        return None

    # -- routes ------------------------------------------------------------------------------------------

    def liveness(self) -> WerkzeugResponse:
        """``GET /``: upstream's health probe. Like upstream, it answers once init() has completed."""
        ids = _Ids()
        req: Request = request._get_current_object()  # type: ignore[attr-defined]  # once, not per use
        problem = _read_ids(req.headers, ids)
        if problem is not None:
            return self._finish(self._json(431, problem), ids, req)
        if not self.state.wait_ready():
            return self._finish(self._json(503, MSG_NOT_READY), ids, req)
        if req.method == "OPTIONS":
            return self._finish(_options_response(self.response_class), ids, req)
        response = self.response_class(b"Healthy", status=200, content_type=HTML)
        return self._finish(response, ids, req)

    def swagger(self) -> WerkzeugResponse:
        started = time.perf_counter()
        wall_start = time.time()
        ids = _Ids()
        req: Request = request._get_current_object()  # type: ignore[attr-defined]  # once, not per use
        problem = _read_ids(req.headers, ids)
        if problem is not None:
            response: WerkzeugResponse = self._json(431, problem)
        elif not self.state.wait_ready():
            response = self._json(503, MSG_NOT_READY)
        elif req.method == "OPTIONS":
            response = _options_response(self.response_class)
        else:
            try:
                check_query_utf8(req.query_string)
                status, body = self.state.swagger.lookup(req.args.get("version"))
            except InputError as exc:
                status, body = exc.status, exc.message
            if isinstance(body, bytes):
                response = self.response_class(body, status=status, mimetype=JSON)
                response.headers[c.HEADER_RUN_FUNCTION_FAILED] = "False"
            else:
                response = self._json(status, body)
        self._finish(response, ids, req)
        if problem is None:
            ms = self._log_line(req, response, started)
        else:
            ms = (time.perf_counter() - started) * 1000.0
        if self.state.telemetry_on:
            self._report(req, response, ids, wall_start, ms)
        return response

    def score(self) -> WerkzeugResponse:
        started = time.perf_counter()
        wall_start = time.time()
        ids = _Ids()
        req: Request = request._get_current_object()  # type: ignore[attr-defined]  # once, not per use
        problem = _read_ids(req.headers, ids)
        run_ms: float | None = None
        self.metrics.started()
        if problem is not None:
            response: WerkzeugResponse = self._json(431, problem)
        else:
            response, run_ms = self._score(req, ids)
            if req.content_length and BODY_READ_KEY not in req.environ and not self._raw_mode():
                _drop_unread_body(req)
        self._finish(response, ids, req)
        ms = self._log_line(req, response, started) if problem is None else (time.perf_counter() - started) * 1e3
        self.metrics.observe_score(req.method, response.status_code, ms, run_ms)
        if self.state.telemetry_on:
            self._report(req, response, ids, wall_start, ms)
        return response

    def _score(self, req: Request, ids: _Ids) -> tuple[WerkzeugResponse, float | None]:
        too_large = self._too_large(req)
        if too_large is not None:
            return too_large, None
        state = self.state
        limit = state.config.max_request_body_bytes
        if limit is not None and req.content_length is None:
            # A chunked body: cut it once it passes the limit, while it is read (docs/guarantees.md#r6).
            req.environ["wsgi.input"] = _LimitedInput(req.environ["wsgi.input"], limit)
        if not state.wait_ready():
            return self._json(503, MSG_NOT_READY), None
        script = state.script
        assert script is not None
        raw = script.mode.value == "raw"
        if not raw:
            if req.method == "OPTIONS":
                response = self.response_class(b"", status=200, content_type=HTML)
                response.headers[c.HEADER_RUN_FUNCTION_FAILED] = "False"
                return response, None
            if req.method == "HEAD":
                return self._json(405, "Method not allowed"), None
        runner = state.runner
        lease = req.environ.get(SLOT_LEASE_KEY)
        if lease is None or not lease.claim():
            runner.acquire()
        slot_released = False
        collect = state.telemetry_on and state.config.mdc_storage_enabled
        try:
            try:
                kwargs, model_input = run_arguments(script, req, keep_input=collect)
            except InputError as exc:
                return self._json(exc.status, exc.message), None
            except HTTPException as exc:  # 413 from a chunked body past the limit, 400 from werkzeug
                return self._json(exc.code or 400, exc.description or exc.name), None
            run_started = time.perf_counter()
            connection = req.environ.get("gunicorn.socket")
            run = script.run if not state.tracing_on else self._traced_run(script)
            try:
                if connection is not None:
                    # The watchdog can answer on the connection itself: run() stays in this thread.
                    answer = self._timeout_answer(req, ids, connection)
                    output = runner.call_inline(run, kwargs, answer)
                else:
                    output = runner.call(run, kwargs)
            except AnsweredTimeout as exc:
                # The watchdog already sent the timeout response, logged it and freed the slot; what this
                # thread returns now goes to a closed connection.
                slot_released = True
                return self._json(500, f"Scoring timeout after {exc.timeout_ms} ms", failed=True), None
            except UserScriptTimeout as exc:
                return self._run_failed(exc, ids, f"Scoring timeout after {exc.timeout_ms} ms", timeout=True), None
            except TimeoutError as exc:
                # compat: upstream reports any TimeoutError escaping run() as a scoring timeout.
                message = f"Scoring timeout after {state.config.scoring_timeout_ms} ms"
                return self._run_failed(exc, ids, message, timeout=True), None
            except RequestEntityTooLarge as exc:  # run() read a chunked body past the limit
                return self._json(413, exc.description or "Request body too large"), None
            except BaseException as exc:
                # SystemExit/KeyboardInterrupt in run() give upstream's HTML 500; a JSON 500 is what clients parse.
                return self._run_failed(exc, ids, MSG_USER_ERROR), None
            run_ms = (time.perf_counter() - run_started) * 1000.0
        finally:
            if not slot_released:
                runner.release()
        if collect:
            self.collect_model_data(ids, model_input, output)
        return self._convert(output, run_ms, ids), run_ms

    def _timeout_answer(
        self, req: Request, ids: _Ids, connection: socket.socket, body: Callable[[str], bytes] = _message
    ) -> Callable[[], None]:
        """What the watchdog does at the deadline of an inline run(): the timeout response, sent on the socket."""

        def answer() -> None:
            timeout_ms = self.state.config.scoring_timeout_ms
            response = self._run_failed(
                UserScriptTimeout(timeout_ms), ids, f"Scoring timeout after {timeout_ms} ms", True, body
            )
            self._finish(response, ids, req)
            data = response.get_data()
            lines = [f"HTTP/1.1 {response.status}"]
            lines += [
                f"{name}: {value}" for name, value in response.headers.items() if name.lower() != "content-length"
            ]
            lines += [f"Date: {formatdate(usegmt=True)}", f"Content-Length: {len(data)}", "Connection: close"]
            try:
                connection.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + data)
            finally:
                # The stuck request's own response, when it comes, must not reach the client.
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

        return answer

    def _run_failed(
        self,
        exc: BaseException,
        ids: _Ids,
        message: str,
        timeout: bool = False,
        body: Callable[[str], bytes] = _message,
    ) -> Response:
        logger.debug("Run function timeout caught" if timeout else "Run function exception caught")
        if timeout and isinstance(exc, UserScriptTimeout):
            logger.error("Encountered Exception: %s: %s", type(exc).__name__, exc)
        else:
            logger.error("Encountered Exception: ", exc_info=(type(exc), exc, exc.__traceback__))
        self.metrics.observe_failure(timeout)
        if self.state.telemetry_on:
            self.state.telemetry.exception(exc, ids.request_id, ids.client)
        return self._json(500, message, failed=True, body=body)

    def _convert(self, output: Any, run_ms: float, ids: _Ids) -> WerkzeugResponse:
        """run()'s result as a response (docs/compatibility.md#run-results)."""
        exec_ms = f"{run_ms:.3f}"
        if isinstance(output, WerkzeugResponse):
            logger.debug("run() output is HTTP Response")
            if output.status_code >= 500:
                output.headers[c.HEADER_RUN_FUNCTION_FAILED] = "True"
            output.headers[c.HEADER_RUN_FN_EXEC_MS] = exec_ms
            return output
        if output is None:
            body = "{}"  # compat: upstream answers {} rather than null
        else:
            try:
                body = jsonio.dumps(output)
            except jsonio.UnserializableOutput as exc:
                logger.error("Encountered Exception: %s", exc)
                if self.state.telemetry_on:
                    self.state.telemetry.exception(exc, ids.request_id, ids.client)
                return self._json(500, f"{exc}, which cannot be serialized to JSON.", failed=True)
        response = self.response_class(body, status=200, mimetype=JSON)
        headers = response.headers
        headers[c.HEADER_RUN_FUNCTION_FAILED] = "False"
        headers[c.HEADER_RUN_FN_EXEC_MS] = exec_ms
        return response

    def collect_model_data(self, ids: _Ids, model_input: Any, output: Any) -> None:
        """Hand one request's input and output to model data collection; a failure is logged, never raised."""
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

    # -- our probes --------------------------------------------------------------------------------------

    def live(self) -> Response:
        """Liveness: the process answers. Never waits for init() or for a scoring slot."""
        return self.response_class(b'{"live": true}', status=200, mimetype=JSON)

    def ready(self) -> Response:
        body = self.state.readiness()
        status = 200 if self.state.phase == PHASE_READY else 503
        return self.response_class(json.dumps(body), status=status, mimetype=JSON)

    def metrics_route(self) -> Response:
        payload, content_type = self.metrics.render()
        return self.response_class(payload, status=200, content_type=content_type)


# A host may put a function here that closes the connection after the response (the gunicorn front-end does).
CLOSE_CONNECTION_KEY = "azmlinfsrv.close_connection"
# Bodies up to this size that a response did not need are read and discarded, so the connection can be reused.
_DISCARD_LIMIT = 256 * 1024


def _drop_unread_body(req: Request) -> None:
    """A response was made without reading the body (413, 415, 405...): do not let it stall the server.

    A small body is read and discarded. For a larger one, under gunicorn, the read side of the connection is shut:
    gunicorn then closes the connection after the response instead of reading the body, or lingering in its event
    loop waiting for it (which stalls every connection of the worker for seconds), and the host is asked to close
    the connection after the response.
    """
    length = req.content_length or 0
    if length <= _DISCARD_LIMIT:
        with contextlib.suppress(Exception):
            req.get_data(cache=False)
            return
    close = req.environ.get(CLOSE_CONNECTION_KEY)
    if close is not None:
        close()
    connection = req.environ.get("gunicorn.socket")
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RD)


def _options_response(response_class: type[Response]) -> Response:
    """``OPTIONS`` on ``/`` and ``/swagger.json``: what Flask answers, plus the id and version headers.

    compat: upstream's automatic OPTIONS passed through its blueprint hooks, so it carried the request ids.
    """
    response = response_class(b"", status=200, content_type=HTML)
    response.headers["Allow"] = "OPTIONS, GET, HEAD"
    return response


def _http_error(error: HTTPException) -> Response:
    """Routing and protocol errors as JSON (docs/compatibility.md#routing-errors)."""
    response = Response(
        _message(error.description or error.name),
        status=error.code or 500,
        mimetype=JSON,
    )
    response.headers[c.HEADER_RUN_FUNCTION_FAILED] = "False"
    if error.code == 405:
        # Upstream omits Allow on 405; RFC 9110 §15.5.6 requires it and no client is hurt by it.
        allowed = getattr(error, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


def _internal_error(error: Exception) -> Response:
    original = getattr(error, "original_exception", None) or error
    logger.error(
        "Encountered Exception: ",
        exc_info=(type(original), original, original.__traceback__),
    )
    response = Response(_message(MSG_INTERNAL_ERROR), status=500, mimetype=JSON)
    response.headers[c.HEADER_RUN_FUNCTION_FAILED] = "False"
    return response


class _DirectScoreRoute:
    """WSGI middleware: GET and POST on ``/score`` (and what ``direct`` matches: V2 infer) go straight to their view.

    Flask's routing table, request signals, before/after-request hooks and response finalisation cost about as
    much CPU as the rest of a small model's request, and the score route uses none of them. The request context is
    still pushed, so ``flask.request``, ``flask.current_app`` and ``url_for`` work in run() as upstream; errors
    raised by the view go to the app's error handlers as they would through Flask. Every other request takes
    Flask's path.
    """

    def __init__(
        self,
        app: Flask,
        view: Callable[[], WerkzeugResponse],
        flask_path: Any,
        rule: Rule,
        direct: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.app = app
        self.view = view
        self.flask_path = flask_path
        self.rule = rule
        self.direct = direct

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        view: Callable[..., WerkzeugResponse]
        if environ.get("PATH_INFO") != "/score" or environ.get("REQUEST_METHOD") not in ("GET", "POST"):
            matched = self.direct(environ) if self.direct is not None else None
            if matched is None:
                return self.flask_path(environ, start_response)
            view, rule, view_args = matched
        else:
            view, rule, view_args = self.view, self.rule, {}
        app = self.app
        req = app.request_class(environ)
        req.json_module = app.json
        # The route is known: the context's URL adapter answers it without walking the routing table.
        req.url_rule = rule
        req.view_args = view_args
        ctx = RequestContext(app, environ, request=req)
        error: BaseException | None = None
        try:
            try:
                ctx.push()
                try:
                    response: Any = view(**view_args)
                except Exception as exc:
                    response = app.make_response(app.handle_user_exception(exc))
            except Exception as exc:
                error = exc
                response = app.handle_exception(exc)
            return response(environ, start_response)
        finally:
            ctx.pop(error)


class _PlainResponse(Response):
    """A response the server builds itself: one bytes body with its Content-Length, and never a redirect.

    Werkzeug's WSGI conversion copies the headers and fixes up what such a response never has (Location headers,
    a 304's entity headers, a missing Content-Length, a streamed or str body); for a small model that costs about
    a tenth of the request. This hands the response over as it is whenever that conversion would change nothing.
    Responses a score script returns are its own class and take Werkzeug's path.
    """

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        body = self.response
        if (
            environ.get("REQUEST_METHOD") == "HEAD"
            or self.status_code < 200
            or self.status_code in (204, 304, 412)
            or body.__class__ is not list
            or len(body) != 1
            or body[0].__class__ is not bytes
            or self._on_close
            or "Content-Length" not in self.headers
        ):
            return super().__call__(environ, start_response)
        start_response(self.status, self.headers.to_wsgi_list())
        return body


class _MatchedAdapter:
    """The URL adapter of a request whose route is already known (see :class:`_ServerFlask`).

    ``match()`` answers with that route. Binding Werkzeug's adapter to the request and matching it costs about a
    tenth of a small model's request, and each match leaves a reference cycle for the garbage collector; the real
    adapter is bound only if something else is asked of it (``url_for`` in run()).
    """

    __slots__ = ("_app", "_bound", "_request")

    def __init__(self, app: Flask, req: Request) -> None:
        self._app = app
        self._request = req
        self._bound: MapAdapter | None = None

    def match(self, *args: Any, **kwargs: Any) -> Any:
        if not args and kwargs == {"return_rule": True}:  # how Flask's RequestContext.match_request() asks
            return self._request.url_rule, self._request.view_args
        return self._adapter().match(*args, **kwargs)

    def _adapter(self) -> MapAdapter:
        if self._bound is None:
            self._bound = Flask.create_url_adapter(self._app, self._request)
        assert self._bound is not None
        return self._bound

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter(), name)


class _ServerFlask(Flask):
    """Flask, with one shortcut: a request that arrives with its route already set gets a :class:`_MatchedAdapter`.

    Only :class:`_DirectScoreRoute` builds such requests (and Flask itself, when it copies a request context for
    another thread, for a request it matched already: the shortcut gives the same answer there).
    """

    def create_url_adapter(self, request: Request | None) -> Any:
        if request is not None and request.url_rule is not None and self.config.get("TRUSTED_HOSTS") is None:
            return _MatchedAdapter(self, request)
        return super().create_url_adapter(request)


class _NoSessions(SecureCookieSessionInterface):
    """The server keeps no sessions: every request shares one read-only null session instead of a new one."""

    _null = NullSession()

    def open_session(self, app: Flask, request: Request) -> None:
        return None

    def make_null_session(self, app: Flask) -> NullSession:
        return self._null


def build_flask_app(state: ServerState, metrics: Metrics) -> Flask:
    """The Flask app for a state. Hosts normally call :func:`create_app` instead."""
    app = _ServerFlask("azureml_inference_server_http")
    # The body limit is enforced by the score route itself (Content-Length before reading, chunked bodies while
    # reading): Werkzeug's MAX_CONTENT_LENGTH silently truncates chunked bodies at the limit instead of failing.
    app.config["MAX_FORM_MEMORY_SIZE"] = state.config.max_request_body_bytes
    handlers = ScoringApp(app, state, metrics)
    app.add_url_rule("/", "liveness", handlers.liveness, methods=["GET", "OPTIONS"], provide_automatic_options=False)
    app.add_url_rule(
        "/score",
        "score",
        handlers.score,
        methods=["GET", "POST", "OPTIONS"],
        provide_automatic_options=False,
    )
    app.add_url_rule(
        "/swagger.json", "swagger", handlers.swagger, methods=["GET", "OPTIONS"], provide_automatic_options=False
    )
    app.add_url_rule("/openapi.json", "openapi", openapi_view(state), methods=["GET"])
    for prefix in ("", "/v2"):
        app.add_url_rule(f"{prefix}/health/live", f"live{prefix}", handlers.live, methods=["GET"])
        app.add_url_rule(f"{prefix}/health/ready", f"ready{prefix}", handlers.ready, methods=["GET"])
    if metrics.enabled:
        app.add_url_rule("/metrics", "metrics", handlers.metrics_route, methods=["GET"])
    from . import v2  # here: v2 uses this module's pieces

    direct_v2 = v2.register(app, handlers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    app.session_interface = _NoSessions()
    score_rule = next(app.url_map.iter_rules("score"))
    app.wsgi_app = _DirectScoreRoute(  # type: ignore[method-assign]
        app, handlers.score, app.wsgi_app, score_rule, direct_v2
    )
    if state.tracing_on:
        # Only with a tracer: without one the request path has no extra layer at all.
        app.wsgi_app = TracingMiddleware(app.wsgi_app, state.tracer, _route_finder(app))  # type: ignore[method-assign]
    app.extensions[STATE_KEY] = state
    return app


def _route_finder(app: Flask) -> Callable[[Mapping[str, Any]], str | None]:
    """The route template of a request's path (``/v2/models/<name>/infer``), or None when no route matches."""

    def route_of(environ: Mapping[str, Any]) -> str | None:
        try:
            rule, _ = app.url_map.bind_to_environ(dict(environ)).match(return_rule=True)
        except Exception:
            return None
        return str(rule.rule)

    return route_of


def create_app(
    entry_script: str | None = None,
    model_dir: str | None = None,
    *,
    config: ServerConfig | None = None,
    environ: Mapping[str, str] | None = None,
    background_init: bool = False,
    on_init_failure: Callable[[BaseException], None] | None = None,
    on_stuck: Callable[[int], None] | None = None,
) -> Flask:
    """Load a score script and return a WSGI app serving it.

    Settings come from ``config``, else from ``environ`` (default ``os.environ``) and config.json;
    ``entry_script`` and ``model_dir`` override them. With ``background_init=False`` (the default) the script is
    loaded and init() has run when this returns, and failures raise. With ``background_init=True`` the app answers
    probes at once and ``on_init_failure`` is called with the exception if init() fails.
    """
    if config is None:
        config = ServerConfig.from_env(environ)
    overrides: dict[str, Any] = {}
    if entry_script is not None:
        overrides["entry_script"] = os.path.abspath(entry_script)
    if model_dir is not None:
        overrides["model_dir"] = model_dir
    if overrides:
        config = dataclasses.replace(config, **overrides)
    metrics = Metrics.create(config.metrics_enabled)
    state = ServerState(config, on_stuck=on_stuck, on_ready=metrics.set_init_seconds)
    state.prepare()
    app = build_flask_app(state, metrics)
    if background_init:

        def failed(exc: BaseException) -> None:
            if on_init_failure is not None:
                on_init_failure(exc)

        state.start_background_init(failed)
    else:
        state.load_and_init()
    return app


def get_state(app: Flask) -> ServerState:
    """The :class:`ServerState` behind an app made by :func:`create_app`."""
    state = app.extensions[STATE_KEY]
    assert isinstance(state, ServerState)
    return state
