"""Server front-ends; the launcher imports only the one it uses (see ``azmlinfsrv.launch.SERVERS``)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

# What the launcher hands, in the environment, to the process it execs into (the gunicorn master, or the waitress
# supervisor): its launch settings as JSON, and a temporary directory to remove when the server ends.
SETTINGS_ENV = "AZMLINFSRV_LAUNCH_SETTINGS"
CLEANUP_ENV = "AZMLINFSRV_LAUNCH_CLEANUP"

WAITRESS_SUPERVISOR = "azmlinfsrv.servers.supervisor"  # the module run as the supervisor (POSIX)


def hand_over(module: str, settings: Mapping[str, Any], cleanup_dir: str | None) -> None:
    """Become ``python -m module`` (same pid) with the launch settings in the environment; never returns.

    The launcher does not import the server module itself: on the way to the gunicorn master that would be
    gunicorn's import on the start-up path twice, once here and once in the process that serves.
    """
    os.environ[SETTINGS_ENV] = json.dumps(dict(settings))
    if cleanup_dir:
        os.environ[CLEANUP_ENV] = cleanup_dir
    from ..entry import replace_process

    replace_process(module)
