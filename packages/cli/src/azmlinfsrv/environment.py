"""Merging command-line flags into the environment, the way upstream does it (docs/compatibility.md#cli-environment).

The flags become environment variables before any worker starts, so score scripts, workers and the banner all
read one source. Every step here is observable by users (their scripts read these variables).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import MutableMapping
from dataclasses import dataclass

from azureml_inference_server_http import __version__
from azureml_inference_server_http import constants as c
from azureml_inference_server_http import ingestion

logger = logging.getLogger("azmlinfsrv")

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


@dataclass(frozen=True)
class CliOptions:
    """Upstream's flags as given (None when absent)."""

    entry_script: str | None = None
    model_dir: str | None = None
    port: int | None = None
    health_port: int | None = None
    worker_count: int | None = None
    appinsights_instrumentation_key: str | None = None
    access_control_allow_origins: str | None = None
    config_file: str | None = None
    rest: bool = False
    appinsights_connection_string: str | None = None  # ours, not upstream's


class MissingEntryScript(Exception):
    """Neither --entry_script nor --config_file was given."""


def merge(options: CliOptions, env: MutableMapping[str, str], cwd: str | None = None) -> None:
    """Write the flags into ``env`` in upstream's order and with upstream's precedence."""
    if options.entry_script is None and options.config_file is None:
        raise MissingEntryScript()
    cwd = cwd or os.getcwd()
    env.setdefault(c.ENV_APP_ROOT, cwd)
    if options.entry_script is not None:
        env[c.ENV_ENTRY_SCRIPT] = os.path.realpath(os.path.join(cwd, options.entry_script))
    # compat: always overwritten, although nothing reads it.
    env[c.ENV_TRANSPORT_PROTOCOL] = "rest" if options.rest else "grpc"
    if options.model_dir is not None:
        env[c.ENV_MODEL_DIR] = options.model_dir  # compat: verbatim, not made absolute
    if options.worker_count is not None:
        env[c.ENV_WORKER_COUNT] = str(options.worker_count)
    else:
        env.setdefault(c.ENV_WORKER_COUNT, str(c.DEFAULT_WORKER_COUNT))
    version_switch = env.get(c.ENV_SERVER_VERSION_LOG_RESPONSE_ENABLED)
    if version_switch is None or version_switch.lower() == "true":
        env[c.ENV_SERVER_VERSION] = c.SERVER_VERSION_TEMPLATE.format(version=__version__)
    # compat: an environment SERVER_PORT is ignored; only --port changes the port.
    env[c.ENV_SERVER_PORT] = str(options.port if options.port is not None else c.DEFAULT_SERVER_PORT)
    if env.get(c.ENV_SEPARATE_HEALTH_ENDPOINT) == "true":
        health = options.health_port if options.health_port is not None else c.DEFAULT_HEALTH_PORT
        env[c.ENV_HEALTH_PORT] = str(health)
    elif options.port is not None:
        env[c.ENV_HEALTH_PORT] = str(options.port)
    else:
        env.setdefault(c.ENV_HEALTH_PORT, str(c.DEFAULT_SERVER_PORT))
    if options.appinsights_instrumentation_key is not None:
        env[c.ENV_APP_INSIGHTS_ENABLED] = "true"
        env[c.ENV_APP_INSIGHTS_KEY] = options.appinsights_instrumentation_key
    if options.appinsights_connection_string is not None:
        # Like --appinsights_instrumentation_key: a flag that names where to send is a request to send.
        env[c.ENV_APP_INSIGHTS_ENABLED] = "true"
        env[c.ENV_APP_INSIGHTS_CONNECTION_STRING] = options.appinsights_connection_string
    if options.access_control_allow_origins is not None:
        env[c.ENV_CORS_ORIGINS] = options.access_control_allow_origins
    if options.config_file is not None:
        env[c.ENV_CONFIG_FILE] = os.path.realpath(os.path.join(cwd, options.config_file))


def validate(env: MutableMapping[str, str]) -> list[str]:
    """The model-dir hint and the Application Insights checks; the lines to print (docs/compatibility.md#cli-checks).

    After this, ``AML_APP_INSIGHTS_ENABLED`` is always "true" or "false", as user scripts expect. A connection string
    with ``AML_APP_INSIGHTS_ENABLED`` unset turns telemetry on, and any other decision about a connection string or
    key that would otherwise be silent is explained by one log record (docs/telemetry.md).
    """
    lines: list[str] = []
    if c.ENV_MODEL_DIR not in env:
        lines.append("The environment variable 'AZUREML_MODEL_DIR' has not been set.")
        lines.append("Use the --model_dir command line argument to set it.")
    enabled = env.get(c.ENV_APP_INSIGHTS_ENABLED)
    key = env.get(c.ENV_APP_INSIGHTS_KEY)
    connection_string = env.get(c.ENV_APP_INSIGHTS_CONNECTION_STRING) or ""
    if not connection_string.strip():
        connection_string = ""
    if enabled is not None and key is not None:
        if enabled == "true":  # compat: exactly lowercase "true"
            if _UUID.match(key):
                lines.append("Valid Application Insights instrumentation key provided.")
                if connection_string:
                    # compat: upstream prints nothing more here; only a connection string we cannot use is reported.
                    lines += _check_connection_string(env, key, connection_string, report_valid=False)
            else:
                env[c.ENV_APP_INSIGHTS_ENABLED] = "false"
                lines.append("Invalid Application Insights instrumentation key provided.")
                lines.append("Application Insights has been disabled.")
                if ingestion.looks_like_connection_string(key):
                    lines.append(
                        "That value is a connection string, not an instrumentation key: pass it with "
                        "--appinsights_connection_string or APPLICATIONINSIGHTS_CONNECTION_STRING instead."
                    )
        else:
            env[c.ENV_APP_INSIGHTS_ENABLED] = "false"
            if connection_string:
                _warn_switched_off(enabled)
    elif connection_string:
        if enabled is None:
            env[c.ENV_APP_INSIGHTS_ENABLED] = "true"
            lines += _check_connection_string(env, key, connection_string)
            if env[c.ENV_APP_INSIGHTS_ENABLED] == "true":  # an unusable one was reported and switched off above
                logger.info(
                    "Application Insights is on because %s is set and %s is not; set %s=false to turn it off.",
                    c.ENV_APP_INSIGHTS_CONNECTION_STRING,
                    c.ENV_APP_INSIGHTS_ENABLED,
                    c.ENV_APP_INSIGHTS_ENABLED,
                )
        elif enabled == "true":
            lines += _check_connection_string(env, key, connection_string)
        else:
            env[c.ENV_APP_INSIGHTS_ENABLED] = "false"
            _warn_switched_off(enabled)
    else:
        if enabled is None and key is not None:
            logger.warning(
                "Application Insights is off: %s is set but %s is not. Set %s=true to send telemetry, or use a "
                "connection string (%s), which needs no switch.",
                c.ENV_APP_INSIGHTS_KEY,
                c.ENV_APP_INSIGHTS_ENABLED,
                c.ENV_APP_INSIGHTS_ENABLED,
                c.ENV_APP_INSIGHTS_CONNECTION_STRING,
            )
        env[c.ENV_APP_INSIGHTS_ENABLED] = "false"
    return lines


def _check_connection_string(
    env: MutableMapping[str, str], key: str | None, connection_string: str, report_valid: bool = True
) -> list[str]:
    """The connection string's counterpart of upstream's key check: valid, or disabled with the reason."""
    try:
        ingestion.resolve(key, connection_string)
    except ingestion.IngestionSettingsError as exc:
        env[c.ENV_APP_INSIGHTS_ENABLED] = "false"
        # The reason names the problem, never the value.
        return [
            f"Invalid Application Insights connection string provided: {exc}.",
            "Application Insights has been disabled.",
        ]
    return ["Valid Application Insights connection string provided."] if report_valid else []


def _warn_switched_off(enabled: str) -> None:
    logger.warning(
        "Application Insights is off: %s is %r, so %s is ignored. Set %s=true, or unset it, to send telemetry.",
        c.ENV_APP_INSIGHTS_ENABLED,
        enabled[:40],
        c.ENV_APP_INSIGHTS_CONNECTION_STRING,
        c.ENV_APP_INSIGHTS_ENABLED,
    )
