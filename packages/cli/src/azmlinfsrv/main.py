"""The ``azmlinfsrv`` command: upstream's flags, our additions, and the ``validate`` subcommand."""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

import typer
from azureml_inference_server_http import __version__
from azureml_inference_server_http import constants as c
from azureml_inference_server_http import paths
from azureml_inference_server_http.config import ServerConfig
from azureml_inference_server_http.exceptions import ConfigError
from azureml_inference_server_http.exceptions import ConfigFileError
from azureml_inference_server_http.log_config import PACKAGED_CONFIG
from azureml_inference_server_http.log_config import apply_packaged_config

from . import banner
from . import environment
from .entry import GUNICORN_MASTER
from .launch import SERVERS
from .launch import LaunchError
from .launch import address_in_use
from .launch import inherits_sockets
from .launch import port_in_use_message
from .launch import resolve
from .reload import RELOAD_ENV
from .servers import WAITRESS_SUPERVISOR
from .servers import hand_over

logger = logging.getLogger("azmlinfsrv")

HELP = c.TITLE_TEMPLATE.format(version=__version__)

app = typer.Typer(
    add_completion=False,
    help=HELP,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _port(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= 65535:
        raise typer.BadParameter(
            f"Specified port '{value}' is invalid. Please specify a port within the [1, 65535] range."
        )
    return value


def _positive(value: int | None) -> int | None:
    if value is not None and value <= 0:
        raise typer.BadParameter(f"Specified value '{value}' is invalid. Please specify a value greater than zero.")
    return value


def _print_version(value: bool) -> None:
    if value:
        print(f"azmlinfsrv {__version__}")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    entry_script: str | None = typer.Option(
        None, "--entry_script", help="The relative or absolute path to the scoring script."
    ),
    model_dir: str | None = typer.Option(
        None,
        "--model_dir",
        help="The relative or absolute path to the model directory. The model directory will be accessible "
        "through the 'AZUREML_MODEL_DIR' environment variable.",
    ),
    port: int | None = typer.Option(
        None, "--port", callback=_port, help="The serving port of the server. Default is 5001."
    ),
    health_port: int | None = typer.Option(
        None,
        "--health_port",
        callback=_port,
        help="The health port of the server (with SEPERATE_HEALTH_ENDPOINT=true). Default is 5000.",
    ),
    worker_count: int | None = typer.Option(
        None,
        "--worker_count",
        callback=_positive,
        help="The number of worker processes which will process concurrent requests. Default is 1.",
    ),
    appinsights_instrumentation_key: str | None = typer.Option(
        None,
        "--appinsights_instrumentation_key",
        help="The instrumentation key to the application insights where the logs will be published.",
    ),
    appinsights_connection_string: str | None = typer.Option(
        None,
        "--appinsights_connection_string",
        help="The Application Insights connection string to send telemetry to (env "
        "APPLICATIONINSIGHTS_CONNECTION_STRING); turns telemetry on.",
    ),
    access_control_allow_origins: str | None = typer.Option(
        None,
        "--access_control_allow_origins",
        help='Enable CORS for the specified origins. Separate multiple origins with ",". '
        'Example: "https://example.com, https://example.org"',
    ),
    config_file: str | None = typer.Option(
        None, "--config_file", help="The relative or absolute path to the configuration file."
    ),
    rest: bool = typer.Option(False, "--rest", hidden=True),
    threads: int | None = typer.Option(
        None,
        "--threads",
        callback=_positive,
        help="run() calls served concurrently in each worker (env WORKER_THREADS). Default is 1: many models "
        "are not thread-safe.",
    ),
    server: str | None = typer.Option(
        None,
        "--server",
        help=f"The HTTP server: {' or '.join(SERVERS)} (env AZMLINFSRV_SERVER). Default: waitress on Windows, "
        "gunicorn elsewhere.",
    ),
    host: str | None = typer.Option(
        None, "--host", help="The address to listen on (env AZMLINFSRV_HOST). Default is 0.0.0.0."
    ),
    max_request_body_mb: int | None = typer.Option(
        None,
        "--max_request_body_mb",
        help="Largest accepted request body in MB (env MAX_REQUEST_BODY_MB); 0 disables the limit. Default is 100.",
    ),
    model_name: str | None = typer.Option(
        None,
        "--model_name",
        help="The model's name on the Open Inference Protocol routes /v2/models/<name>/... (env "
        "AZMLINFSRV_MODEL_NAME). Default: the entry script's file name without .py.",
    ),
    reload: bool = typer.Option(
        False, "--reload", help="Re-import the entry script and re-run init() when its files change."
    ),
    debug_port: int | None = typer.Option(
        None,
        "--debug_port",
        callback=_port,
        help="Listen for a debugger (debugpy, e.g. VS Code attach) on 127.0.0.1 at this port.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Start the server. Run `azmlinfsrv validate --help` for the one-shot check of a score script."""
    if ctx.invoked_subcommand is not None:
        return
    env = os.environ
    options = environment.CliOptions(
        entry_script=entry_script,
        model_dir=model_dir,
        port=port,
        health_port=health_port,
        worker_count=worker_count,
        appinsights_instrumentation_key=appinsights_instrumentation_key,
        access_control_allow_origins=access_control_allow_origins,
        config_file=config_file,
        rest=rest,
        appinsights_connection_string=appinsights_connection_string,
    )
    logger.info("Loaded logging config from %s", PACKAGED_CONFIG)
    try:
        environment.merge(options, env)
    except environment.MissingEntryScript:
        logger.error("Error!")
        logger.error(
            "Either provide an entry_script using --entry_script or provide a path to the configuration file "
            "using --config_file"
        )
        raise typer.Exit(1) from None
    if threads is not None:
        env[c.ENV_WORKER_THREADS] = str(threads)
    if host is not None:
        env[c.ENV_HOST] = host
    if max_request_body_mb is not None:
        env[c.ENV_MAX_REQUEST_BODY_MB] = str(max_request_body_mb)
    if model_name is not None:
        env[c.ENV_MODEL_NAME] = model_name
    if reload:
        env[RELOAD_ENV] = "true"
    script_error = _check_paths(env)
    for line in environment.validate(env):
        print(line)
    app_root = env[c.ENV_APP_ROOT]
    if app_root not in sys.path:
        sys.path.append(app_root)
    _check_debugger(env, debug_port)
    try:
        settings = resolve(env, server=server, debug_port=debug_port)
    except LaunchError as exc:
        logger.error("%s", exc)
        raise typer.Exit(1) from None
    if script_error is None:
        _check_ports(env, settings)
    print(banner.render(env, _extra_banner(settings)), flush=True)
    if script_error is not None:
        _report_unreadable_script(*script_error)
        raise typer.Exit(3)
    multiproc_dir = _metrics_dir(env)
    if settings.server == "gunicorn":
        hand_over(GUNICORN_MASTER, vars(settings), multiproc_dir)  # does not return
    if settings.server == "waitress" and sys.platform != "win32":
        # Does not return; Windows supervises from this process below.
        hand_over(WAITRESS_SUPERVISOR, vars(settings), multiproc_dir)
    launcher_pid = os.getpid()
    try:
        module_name, _, attr = SERVERS[settings.server].partition(":")
        serve_with = getattr(importlib.import_module(module_name), attr)
        code = serve_with(settings)
    finally:
        if multiproc_dir and os.getpid() == launcher_pid:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
    raise typer.Exit(code)


def _check_paths(env: os._Environ[str]) -> tuple[str, OSError] | None:
    """Before the banner, one line for an entry script that cannot be read or a model directory that is missing.

    Returns the entry script's path and error when it cannot be read: the server would only fail later, in its
    worker, after announcing that it listens. A missing model directory is a warning only: upstream serves then,
    and so do we (a script need not load anything from it).
    """
    try:
        config = ServerConfig.from_env(env)
    except (ConfigError, ConfigFileError):
        return None  # reported by the worker in upstream's words
    script = config.entry_script_path
    script_error = paths.entry_script_error(script) if script else None
    if script and script_error is not None:
        logger.error("%s", paths.describe_entry_script_error(script, script_error))
    if config.model_dir:
        problem = paths.model_dir_problem(config.model_dir)
        if problem is not None:
            logger.warning("%s. The server starts anyway; init() will not find model files there.", problem)
    return (script, script_error) if script and script_error is not None else None


def _report_unreadable_script(script: str, error: OSError) -> None:
    """compat: upstream 1.5.1 logs these two messages (with a chained traceback) when its worker cannot read the
    entry script, and exits 3; we log them without the traceback, the first line having named the path."""
    if isinstance(error, FileNotFoundError):
        logger.error("No such file or directory.")
    if not error.filename:
        error.filename = script
    logger.error(
        "Failed to import user script because it raised an unhandled exception (%s: %s)", type(error).__name__, error
    )


def _check_ports(env: Mapping[str, str], settings: Any) -> None:
    """Exit 1 with one line when a port to listen on is taken, instead of the server's retries in its own words."""
    if "--reuse-port" in env.get("GUNICORN_CMD_ARGS", "") or inherits_sockets(env):
        return  # several servers share the port on purpose, or it is bound already for this one
    ports = [(settings.port, "--port")]
    if settings.health_port is not None and settings.health_port != settings.port:
        ports.append((settings.health_port, "--health_port"))
    for port, flag in ports:
        if address_in_use(settings.host, port):
            logger.error("%s", port_in_use_message(settings.host, port, flag))
            raise typer.Exit(1)


def _extra_banner(settings: Any) -> dict[str, str]:
    return {
        "Worker Threads": str(settings.threads),
        "HTTP Server": settings.server,
        "Listening Address": settings.host,
    }


def _metrics_dir(env: os._Environ[str]) -> str | None:
    """Worker processes share metric values through files in one directory (see core's metrics module)."""
    if env.get(c.ENV_METRICS_ENABLED, "true").lower() in ("0", "false", "no", "off", "f", "n"):
        return None
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    path = tempfile.mkdtemp(prefix="azmlinfsrv-metrics-")
    env["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _check_debugger(env: os._Environ[str], debug_port: int | None) -> None:
    if env.get(c.ENV_DEBUG_PORT) is None and debug_port is None:
        return
    try:
        importlib.import_module("debugpy")
    except ImportError:
        # Upstream exits the worker with 255 here, which gunicorn restarts forever; we stop once, clearly.
        print("!! Starting the inference server in DEBUGGING mode because AZUREML_DEBUG_PORT is set.")
        print("** Cannot connect to a debugger because debugpy is not installed.")
        logger.error("Debugging was requested but debugpy is not installed. Install it with: pip install debugpy")
        raise typer.Exit(1) from None


def _register_validate() -> None:
    from .validate import validate_command

    app.command("validate")(validate_command)


_register_validate()


# compat: upstream 1.5.1's own long options, which its argparse parser let users abbreviate.
UPSTREAM_FLAGS = frozenset(
    {
        "--entry_script",
        "--model_dir",
        "--port",
        "--health_port",
        "--worker_count",
        "--appinsights_instrumentation_key",
        "--access_control_allow_origins",
        "--config_file",
        "--rest",
        "--help",
    }
)


def _expand_prefixes(args: list[str], command: Any) -> list[str]:
    """compat: upstream (argparse) accepts unambiguous prefixes of long options, e.g. ``--entry``."""
    names = [name for param in command.params for name in getattr(param, "opts", []) if name.startswith("--")]
    out = []
    for arg in args:
        if arg == "--":
            break
        flag, sep, value = arg.partition("=")
        if flag.startswith("--") and flag not in names:
            matches = [name for name in names if name.startswith(flag)]
            if len(matches) > 1:
                # A prefix that was unambiguous upstream (e.g. "--appinsights") stays so despite our added flags.
                matches = [name for name in matches if name in UPSTREAM_FLAGS]
            if len(matches) == 1:
                arg = matches[0] + sep + value
        out.append(arg)
    return out + args[len(out) :]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    apply_packaged_config()
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    if not (args and args[0] == "validate"):
        args = _expand_prefixes(args, command)
    try:
        result = command.main(args=args, prog_name="azmlinfsrv", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        # Usage errors (click's, or typer's vendored copy of click): the message, then exit 1 as upstream does.
        show = getattr(exc, "show", None)
        if show is None or not hasattr(exc, "exit_code"):
            raise
        show()
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
