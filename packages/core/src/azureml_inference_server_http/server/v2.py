"""The Open Inference Protocol (V2) REST routes beside ``/score``: server and model metadata, readiness, infer.

``/v2/health/live`` and ``/v2/health/ready`` are the app's own probes (app.py). Infer requests take the score route's
path through the server: request ids and response headers, the per-request log line, the body limit, a scoring slot,
``SCORING_TIMEOUT_MS``, metrics, request telemetry and model data collection. How tensors reach run() and how its
result becomes tensors is in v2_model.py, tensors.py and docs/v2.md; their place in /openapi.json in v2_openapi.py.
"""

from __future__ import annotations

import contextlib
import logging
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
from .inputs import BODY_READ_KEY
from .inputs import InputError
from .inputs import read_body
from .scoring import SLOT_LEASE_KEY
from .scoring import AnsweredTimeout
from .tensors import InferRequest
from .tensors import Output
from .tensors import TensorError
from .tensors import parse_request
from .tensors import to_outputs
from .user_script import InputMode
from .user_script import UserScript
from .v2_model import BINARY
from .v2_model import JSON
from .v2_model import MODEL_VERSION
from .v2_model import PLATFORM
from .v2_model import ModelInfo
from .v2_model import model_name_of

if TYPE_CHECKING:
    from .app import ScoringApp

logger = logging.getLogger("azmlinfsrv")

HEADER_INFERENCE_LENGTH = "Inference-Header-Content-Length"
# The metrics' route label for every infer path, whatever the model's name.
INFER_ROUTE = "/v2/models/{name}/infer"
MSG_RAW = (
    "run() is decorated with @rawhttp: it answers HTTP requests itself, so it cannot serve Open Inference Protocol "
    "requests. Call /score instead."
)
MSG_NOT_READY = "The model is not ready: init() has not completed."


def _error_body(text: str) -> bytes:
    return orjson.dumps({"error": text})


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
            self.handlers.collect_model_data(ids, model_input, output)


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
