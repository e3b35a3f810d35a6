"""Serving with gunicorn (Linux and macOS): a master process and ``WORKER_COUNT`` worker processes.

gunicorn's master supervises the workers (crashes, recycling, signals); each worker runs our event-loop worker
(:mod:`.loop_worker`) rather than upstream's sync worker: keep-alive, probes answered while run() is busy, slow
clients held in the loop instead of in a thread, and a heartbeat that a long run() does not stop.
run() concurrency inside a worker stays 1 unless ``--threads`` says otherwise (see the core's ScoringRunner).
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import shlex
import shutil
import signal
import sys
from typing import Any

from azureml_inference_server_http.log_config import PACKAGED_CONFIG
from gunicorn import sock as gunicorn_sock
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from ..launch import LaunchSettings
from ..launch import inherits_sockets
from ..launch import port_in_use_message
from ..worker_codes import BOOT_FAILURE_EXIT_CODE
from ..worker_codes import UPSTREAM_BOOT_FAILURE_EXIT_CODE
from . import CLEANUP_ENV
from . import SETTINGS_ENV
from .loop_worker import LoadBoard

logger = logging.getLogger("azmlinfsrv")


class AzmlinfsrvArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's master, halting only on our own boot-failure code (see worker_codes)."""

    WORKER_BOOT_ERROR = BOOT_FAILURE_EXIT_CODE

    def start(self) -> None:
        # gunicorn retries a taken address five times, a second apart, and says so in its own words; the launcher
        # has checked the ports already, so one that is taken now was taken in between: fail at once, clearly.
        if not getattr(self, "LISTENERS", None) and not _inherits_listeners(self.cfg):
            self.LISTENERS = _bind_once(self.cfg, self.log, getattr(self.app, "settings", None))
        super().start()


def _inherits_listeners(cfg: Any) -> bool:
    """gunicorn takes its sockets from systemd, from the master it re-executes, or binds one per worker."""
    return inherits_sockets(os.environ) or bool(cfg.reuse_port)


def _bind_once(cfg: Any, log: Any, settings: LaunchSettings | None) -> list[Any]:
    """The listening sockets, as gunicorn makes them, in a single attempt; exit 1 when one cannot be bound."""
    listeners: list[Any] = []
    for address in cfg.address:
        try:
            listeners.append(gunicorn_sock._sock_type(address)(address, cfg, log))
        except OSError as exc:
            for listener in listeners:
                listener.close()
            shown = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
            if exc.errno == errno.EADDRINUSE and isinstance(address, tuple):
                port = address[1]
                flag = "--health_port" if settings is not None and port == settings.health_port else "--port"
                logger.error("%s", port_in_use_message(address[0], port, flag))
            else:
                logger.error("Cannot listen on %s: %s", shown, exc)
            sys.exit(1)
    return listeners


def _recycle_self(stuck: int) -> None:
    """A run() call is stuck in code that cannot be interrupted: let gunicorn replace this worker gracefully."""
    logger.warning("Recycling worker %s: %d stuck run() call(s) hold its capacity.", os.getpid(), stuck)
    os.kill(os.getpid(), signal.SIGTERM)


def _logging_config(access_log: bool) -> dict[str, Any]:
    """The packaged logging config; the access log is off unless asked for (the app logs each request)."""
    with open(PACKAGED_CONFIG, encoding="utf-8") as handle:
        config: dict[str, Any] = json.load(handle)
    if not access_log:
        config["loggers"]["gunicorn.access"]["level"] = "WARNING"
    return config


_load_board: LoadBoard | None = None


def _pre_fork(server: Any, worker: Any) -> None:
    """In the master: give the worker about to be forked a slot on the shared load board (several workers only)."""
    global _load_board
    workers = int(server.cfg.workers)
    if workers < 2:
        return
    if _load_board is None:
        _load_board = LoadBoard(2 * workers + 4)  # room for old and new workers side by side during a reload
    slot = _load_board.claim(worker.age)
    if slot is not None:
        worker.load_board = _load_board
        worker.load_slot = slot


def _child_exit(server: Any, worker: Any) -> None:
    """A dead worker's slot on the load board is freed, and its live gauges (in-flight requests) must stop counting
    (prometheus-client multiprocess)."""
    if _load_board is not None:
        _load_board.release(worker.age)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def load_app(settings: LaunchSettings) -> Any:
    # Importing Flask and the app is most of a worker's boot; the collector only slows it down (see entry.py).
    # The score script and init() load in a thread of their own, with the collector on; with WORKER_PRELOAD they
    # load here, so the collector stays on.
    if not settings.preload:
        gc.disable()
    try:
        from .. import worker

        return worker.build_app(
            background_init=not settings.preload,
            in_launcher=settings.preload,  # WORKER_PRELOAD: gunicorn loads the app in the master
            on_stuck=_recycle_self,
            debug_listen_port=settings.debug_port,
        )
    finally:
        gc.enable()


class AzmlinfsrvGunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: LaunchSettings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        binds = []
        if s.health_port is not None and s.health_port != s.port:
            binds.append(f"{s.host}:{s.health_port}")
        binds.append(f"{s.host}:{s.port}")
        options: dict[str, Any] = {
            "bind": binds,
            "workers": s.workers,
            "worker_class": "azmlinfsrv.servers.loop_worker.EventLoopWorker",
            "threads": s.threads,
            "timeout": s.worker_timeout,
            "graceful_timeout": s.graceful_timeout,
            "keepalive": 5,
            "preload_app": s.preload,
            "accesslog": "-" if s.access_log else None,
            "logconfig_dict": _logging_config(s.access_log),
            "proc_name": "azmlinfsrv",
            "max_requests": s.max_requests,
            "max_requests_jitter": s.max_requests // 10 if s.max_requests else 0,
            "child_exit": _child_exit,
            "pre_fork": _pre_fork,
        }
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn 24+ opens a control socket in the home directory; several servers would fight over it.
            options["control_socket_disable"] = True
        for key, value in options.items():
            if value is not None:
                self.cfg.set(key, value)
        # compat: like upstream, GUNICORN_CMD_ARGS may add options; ours win where both set one.
        extra = os.environ.get("GUNICORN_CMD_ARGS")
        if extra:
            parsed = self.cfg.parser().parse_args(shlex.split(extra))
            for key, value in vars(parsed).items():
                if value is not None and key in self.cfg.settings and key not in options:
                    self.cfg.set(key.lower(), value)

    def load(self) -> Any:
        return load_app(self.settings)

    def run(self) -> None:
        AzmlinfsrvArbiter(self).run()


def serve(settings: LaunchSettings) -> int:
    """Run until stopped; the exit code for the launcher."""
    try:
        AzmlinfsrvGunicorn(settings).run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if code == BOOT_FAILURE_EXIT_CODE:
            return UPSTREAM_BOOT_FAILURE_EXIT_CODE
        return code
    return 0


def master_main() -> int:
    from azureml_inference_server_http.log_config import apply_packaged_config

    apply_packaged_config()
    settings = LaunchSettings(**json.loads(os.environ.pop(SETTINGS_ENV)))
    cleanup_dir = os.environ.pop(CLEANUP_ENV, None)
    master_pid = os.getpid()
    try:
        return serve(settings)
    finally:
        # Forked workers unwind through here too when they exit: only the master removes the shared directory.
        if cleanup_dir and os.getpid() == master_pid:
            shutil.rmtree(cleanup_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(master_main())
