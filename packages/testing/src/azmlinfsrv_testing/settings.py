"""Which inherited environment variables a score script under test does not get: the server's own settings.

A developer's shell or a CI runner may carry ``AZUREML_MODEL_DIR``, ``SCORING_TIMEOUT_MS`` or an Application Insights
connection string from other work; a test that silently picked them up would pass or fail depending on where it
runs, or send telemetry to a real resource. Tests pass the settings they mean with ``env=`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from azureml_inference_server_http import constants

__all__ = ["server_setting_names", "without_server_settings"]

# Set by the operating system, not by whoever runs the tests; the server only reads it as a container id.
_KEEP = frozenset({"HOSTNAME"})


def server_setting_names() -> frozenset[str]:
    """Every environment variable the server reads (core's ``ENV_*`` constants), upper-case."""
    names = {getattr(constants, name) for name in dir(constants) if name.startswith("ENV_")}
    return frozenset(name.upper() for name in names if isinstance(name, str)) - _KEEP


# Read by the command-line front-end and the servers it runs rather than by core: its own AZMLINFSRV_* options
# (worker recycling, access log, ...), gunicorn's extra options and the metrics directory it shares with workers.
_FRONT_END_PREFIX = "AZMLINFSRV_"
_FRONT_END_NAMES = frozenset({"GUNICORN_CMD_ARGS", "PROMETHEUS_MULTIPROC_DIR"})


def without_server_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the server's settings, core's and the front-end's (``AZMLINFSRV_*``,
    ``GUNICORN_CMD_ARGS``, ``PROMETHEUS_MULTIPROC_DIR``); names are compared case-insensitively, as the server
    reads them."""
    drop = server_setting_names() | _FRONT_END_NAMES
    return {
        name: value
        for name, value in environ.items()
        if name.upper() not in drop and not name.upper().startswith(_FRONT_END_PREFIX)
    }
