"""The life of one loaded score script in a process: loading, init(), ready, failed, draining.

init() runs in a background thread when the host asks for it, so that the process can answer the liveness and
readiness probes while a model loads. Requests to upstream's routes (``/``, ``/score``) wait until the script
is ready, exactly as they waited in upstream's accept queue, so clients that poll ``GET /`` see no change.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

from .. import constants as c
from ..config import ServerConfig
from ..exceptions import UserScriptException
from . import model_dir
from . import openapi
from . import print_hook
from . import user_script
from .cors import CorsPolicy
from .main_thread import deferred_signals
from .scoring import ScoringRunner
from .swagger import SwaggerDocuments
from .telemetry import NoTelemetry
from .telemetry import Telemetry
from .telemetry import load_telemetry
from .tracing import NO_TRACING
from .tracing import Tracer
from .tracing import load_tracer
from .user_script import UserScript

logger = logging.getLogger("azmlinfsrv")
trace_logger = logging.getLogger("azmlinfsrv.trace")

FLUSH_TIMEOUT_SECONDS = 10.0

PHASE_STARTING = "starting"
PHASE_INITIALIZING = "initializing"
PHASE_READY = "ready"
PHASE_FAILED = "failed"
PHASE_DRAINING = "draining"


class ServerState:
    """Everything the request handlers need, shared by all threads of a process."""

    def __init__(
        self,
        config: ServerConfig,
        telemetry: Telemetry | None = None,
        on_stuck: Callable[[int], None] | None = None,
        on_ready: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.on_ready = on_ready
        self.telemetry: Telemetry = telemetry if telemetry is not None else NoTelemetry()
        self.telemetry_on = not isinstance(self.telemetry, NoTelemetry)
        # Tracing: the plugin's tracer once prepare() found one; the request path checks tracing_on only.
        self.tracer: Tracer = NO_TRACING
        self.tracing_on = False
        self.cors: CorsPolicy | None = None
        self.runner = ScoringRunner(config.worker_threads, config.scoring_timeout_ms, on_stuck=on_stuck)
        self.script: UserScript | None = None
        self.swagger = SwaggerDocuments({})
        self.openapi: bytes | None = None  # GET /openapi.json, built with the swagger documents
        self.model_ids: list[str] = []
        self.phase = PHASE_STARTING
        self.init_started: float | None = None
        self.init_seconds: float | None = None
        self.last_error: str | None = None
        self.ready = threading.Event()
        self.settled = threading.Event()  # ready or failed: waiting requests can stop waiting
        self.lock = threading.Lock()

    # -- boot --------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The fast part of boot: print hook, telemetry, CORS, model ids (docs/compatibility.md#boot-sequence order)."""
        print_hook.install()
        # docs/compatibility.md#import-paths: the app root and the source directory are importable by the script.
        for path in (self.config.app_root, self.config.source_directory_path):
            if path and path not in sys.path:
                sys.path.append(path)
        if self.telemetry_on or self.config.telemetry_enabled:
            # compat: upstream 1.5.1 logs this line whether or not telemetry is on; we log it only when telemetry is
            # asked for, so that a log never claims a client that does not exist (docs/migrating.md).
            logger.info("Starting up app insights client")
        if not self.telemetry_on:
            self.telemetry = load_telemetry(self.config)
            self.telemetry_on = not isinstance(self.telemetry, NoTelemetry)
        if not self.tracing_on:
            tracer = load_tracer(self.config)
            if tracer is not None:
                self.tracer = tracer
                self.tracing_on = True
        self.model_ids = model_dir.model_ids(self.config.model_dir)
        self.cors = CorsPolicy.parse(self.config.cors_origins)

    def load_and_init(self) -> None:
        """Import the script, run init(), build swagger. Raises on failure (after logging it)."""
        config = self.config
        self.phase = PHASE_INITIALIZING
        self.init_started = time.monotonic()
        try:
            script = user_script.load(config.entry_script_path, config.app_root)
            self._init(script)
            if any(name in os.environ for name in (c.ENV_DBG_MODEL_INFO, c.ENV_DBG_RESOURCE_INFO)):
                logger.warning(
                    "The debuggability features have been removed. If you have a use case for them please reach "
                    "out to us."
                )
            swagger, document = self._build_documents(script)
        except BaseException as exc:
            self._fail(exc)
            raise
        with self.lock:
            self.script = script
            self.swagger = swagger
            self.openapi = document
            self.init_seconds = time.monotonic() - self.init_started
            self.phase = PHASE_READY
            self.last_error = None
        if self.on_ready is not None:
            self.on_ready(self.init_seconds)
        logger.info("Scoring timeout is set to %s", config.scoring_timeout_ms)
        logger.info("Worker with pid %s ready for serving traffic", os.getpid())
        _freeze_heap()
        self.ready.set()
        self.settled.set()

    def _init(self, script: UserScript) -> None:
        """init(), in a span of its own when tracing is on (a trace of its own: no request caused it)."""
        if not self.tracing_on:
            user_script.run_init(script)
            return
        attributes = {"code.function.name": "init", "code.filepath": script.path} if script.path else {}
        with self.tracer.span("init", attributes):
            user_script.run_init(script)

    def _build_documents(self, script: UserScript) -> tuple[SwaggerDocuments, bytes]:
        """The swagger documents (upstream's) and the OpenAPI 3.1 document (ours) of a loaded script."""
        config = self.config
        swagger = SwaggerDocuments.build(
            script, config.app_root, config.service_name, config.service_version, config.service_path_prefix
        )
        return swagger, openapi.encode(openapi.build_document(script, config, swagger))

    def _fail(self, exc: BaseException) -> None:
        self.phase = PHASE_FAILED
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.init_started is not None:
            self.init_seconds = time.monotonic() - self.init_started
        if isinstance(exc, UserScriptException):
            logger.error("User's init function failed")
            # compat: upstream writes no colon after "Exception" on this path.
            logger.exception("Encountered Exception")
            self.telemetry.exception(exc, "Unknown", "")
            model_dir.log_listing(self.config.model_dir)
            if self.telemetry_on:
                # A bounded flush instead of upstream's blind 30 s sleep.
                trace_logger.info("Waiting for logs to be sent to Application Insights before exit.")
                self.telemetry.flush(FLUSH_TIMEOUT_SECONDS)
        elif not isinstance(exc, user_script.MissingMainModule):
            logger.exception("Encountered Exception: %s", exc)
        self.settled.set()

    def start_background_init(self, on_failure: Callable[[BaseException], None]) -> threading.Thread:
        """Run :meth:`load_and_init` in a thread; ``on_failure`` decides what a failed boot does to the process."""

        def boot() -> None:
            try:
                with deferred_signals.while_loading():
                    self.load_and_init()
            except BaseException as exc:
                on_failure(exc)

        thread = threading.Thread(target=boot, name="azmlinfsrv-init", daemon=True)
        thread.start()
        return thread

    # -- reload ------------------------------------------------------------------------------------------

    def watched_paths(self) -> list[str]:
        """What a reload watcher should watch: the entry script's folder and the source directory."""
        paths: list[str] = []
        script = self.config.entry_script_path
        if script:
            paths.append(os.path.dirname(os.path.abspath(script)))
        if self.config.source_directory_path:
            paths.append(os.path.abspath(self.config.source_directory_path))
        return [p for p in dict.fromkeys(paths) if os.path.isdir(p)]

    def reload(self) -> bool:
        """Re-import the script and re-run init(); on failure keep serving the last good version.

        Modules imported from the watched folders are forgotten first, so edits to helpers are picked up too.
        Requests in flight finish with the version they started with.
        """
        config = self.config
        roots = tuple(os.path.join(path, "") for path in self.watched_paths())
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None) or ""
            if roots and file.startswith(roots):
                del sys.modules[name]
        started = time.monotonic()
        logger.info("Reloading the score script")
        gc.unfreeze()  # the version being replaced must be collectable once nothing uses it
        try:
            script = user_script.load(config.entry_script_path, config.app_root)
            self._init(script)
            swagger, document = self._build_documents(script)
        except BaseException as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.exception("Reload failed; still serving the previous version of the score script")
            return False
        else:
            with self.lock:
                self.script = script
                self.swagger = swagger
                self.openapi = document
                self.last_error = None
            logger.info("Reloaded the score script in %.3f s", time.monotonic() - started)
            return True
        finally:
            gc.collect()  # what the replaced (or the failed) version left in reference cycles
            _freeze_heap()

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start_draining(self) -> None:
        """Readiness turns 503 so load balancers stop sending; in-flight requests finish."""
        self.phase = PHASE_DRAINING

    def wait_ready(self, timeout: float | None = None) -> bool:
        self.settled.wait(timeout)
        return self.ready.is_set()

    def readiness(self) -> dict[str, object]:
        body: dict[str, object] = {
            "ready": self.phase == PHASE_READY,
            "phase": self.phase,
        }
        if self.phase == PHASE_INITIALIZING and self.init_started is not None:
            body["init_seconds"] = round(time.monotonic() - self.init_started, 3)
        elif self.init_seconds is not None:
            body["init_seconds"] = round(self.init_seconds, 3)
        if self.last_error:
            body["last_error"] = self.last_error
        return body


def _freeze_heap() -> None:
    """Take everything alive once the script is loaded (modules, the app, the model) out of the cyclic collector.

    A full collection walks every tracked object; with a loaded model that is tens of thousands or millions of
    objects that live as long as the process, and each pass stalls every request for as long (about 10 ms for a
    bare Flask app, far more for a model of many Python objects). Frozen, they are still freed by reference
    counting; only a reference cycle among them would stay, and that is what a long-lived model is anyway.
    """
    gc.freeze()
