"""What a serving process does before it takes traffic: settings, logging, debugger, then the app.

Used by every server front-end. Failures end the process with :data:`BOOT_FAILURE_EXIT_CODE`, which the
launcher turns into upstream's exit code 3 for the whole server (docs/compatibility.md#startup-failures).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from azureml_inference_server_http import constants as c
from azureml_inference_server_http.config import ServerConfig
from azureml_inference_server_http.config import format_config_error
from azureml_inference_server_http.exceptions import ConfigError
from azureml_inference_server_http.exceptions import ConfigFileError
from azureml_inference_server_http.log_config import apply_config_file
from azureml_inference_server_http.server import create_app
from azureml_inference_server_http.server import get_state
from azureml_inference_server_http.server.print_hook import real_print

from .reload import RELOAD_ENV
from .reload import start_watcher
from .worker_codes import BOOT_FAILURE_EXIT_CODE
from .worker_codes import UPSTREAM_BOOT_FAILURE_EXIT_CODE

logger = logging.getLogger("azmlinfsrv")


def _exit_boot_failure(code: int = BOOT_FAILURE_EXIT_CODE) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def load_settings(environ: dict[str, str] | None = None, exit_code: int = BOOT_FAILURE_EXIT_CODE) -> ServerConfig:
    """Settings and the user's logging override; exits the process on invalid settings."""
    try:
        config = ServerConfig.from_env(environ)
        _apply_user_logging(config)
    except ConfigError as exc:
        logger.critical(format_config_error(exc))
        _exit_boot_failure(exit_code)
    except ConfigFileError as exc:
        logger.critical("Invalid config file!: %s", exc)
        _exit_boot_failure(exit_code)
    if config.unknown_config_keys:
        # Upstream's version of this warning is inverted; ours names real unknown keys.
        # See docs/compatibility.md#extra-keys-warning.
        logger.warning(
            "Found extra keys in the config file that are not supported by the server.\nExtra keys = %s",
            list(config.unknown_config_keys),
        )
    return config


def _apply_user_logging(config: ServerConfig) -> None:
    candidates = [os.path.join(config.app_root, "logging.json")]
    if config.entry_script_path:
        candidates.append(os.path.join(os.path.dirname(os.path.realpath(config.entry_script_path)), "logging.json"))
    for path in candidates:
        if os.path.isfile(path):
            try:
                apply_config_file(path)
            except Exception as exc:
                raise ConfigFileError(f"{path}: {exc}") from exc
            logger.info("Loaded logging config from %s", path)
            return
    # No user file: the launcher configured logging before this process started serving.


def attach_debugger(config: ServerConfig, listen_port: int | None) -> None:
    """Upstream's outbound debugpy connection (AZUREML_DEBUG_PORT), or our listening one (--debug_port)."""
    if config.debug_port is None and listen_port is None:
        return
    real_print("!! Starting the inference server in DEBUGGING mode because AZUREML_DEBUG_PORT is set.")
    real_print("!! This environment variable should not be set in a production environment.")
    import debugpy  # the launcher checked that it is installed

    if listen_port is not None:
        debugpy.listen(("127.0.0.1", listen_port))
        real_print(f"** Waiting for a debugger to attach at 127.0.0.1:{listen_port}...")
    else:
        real_print(f"** Connecting to debugger at port {config.debug_port}...")
        debugpy.connect(config.debug_port)
    debugpy.wait_for_client()


def build_app(
    background_init: bool = True,
    on_stuck: Callable[[int], None] | None = None,
    debug_listen_port: int | None = None,
    in_launcher: bool = False,
) -> Any:
    """The WSGI app of one serving process. Boot failures end the process."""
    # In a gunicorn worker the master translates our code into upstream's 3; in the launcher itself (preload,
    # waitress) nobody would, so those exit with 3 directly.
    exit_code = UPSTREAM_BOOT_FAILURE_EXIT_CODE if in_launcher else BOOT_FAILURE_EXIT_CODE
    config = load_settings(exit_code=exit_code)
    try:
        attach_debugger(config, debug_listen_port)
    except Exception:
        logger.exception("Encountered Exception: could not attach the debugger")
        _exit_boot_failure(exit_code)

    def init_failed(exc: BaseException) -> None:
        _exit_boot_failure(exit_code)  # logged, and telemetry flushed, by the core already

    try:
        app = create_app(config=config, background_init=background_init, on_init_failure=init_failed, on_stuck=on_stuck)
    except BaseException:
        # Synchronous boot (WORKER_PRELOAD, in the launcher itself): create_app logged the failure already, and no
        # server runs yet to translate the code.
        _exit_boot_failure(exit_code)
    if os.environ.get(RELOAD_ENV) == "true":
        start_watcher(get_state(app))
    return app


def server_settings_from_env() -> dict[str, str]:
    """Our own settings, shown after upstream's lines in the banner."""
    return {
        "Worker Threads": os.environ.get(c.ENV_WORKER_THREADS, str(c.DEFAULT_WORKER_THREADS)),
        "Max Request Body (MB)": os.environ.get(c.ENV_MAX_REQUEST_BODY_MB, str(c.DEFAULT_MAX_REQUEST_BODY_MB)),
    }
