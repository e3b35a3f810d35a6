"""The call signatures of the fixture factories, for annotating tests (``azmlinfsrv_client: ClientFactory``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from .inprocess import InProcessClient
from .process import DEFAULT_START_TIMEOUT
from .process import ServerProcess

__all__ = ["ClientFactory", "ServerFactory"]

PathArg = str | os.PathLike[str]


class ClientFactory(Protocol):
    """``azmlinfsrv_client(entry_script, model_dir=None, env=None)``: an :class:`InProcessClient`, closed after a test.

    Relative paths are looked up next to the test file first, then in the working directory.
    """

    def __call__(
        self,
        entry_script: PathArg,
        model_dir: PathArg | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> InProcessClient: ...


class ServerFactory(Protocol):
    """``azmlinfsrv_server(entry_script, *flags, model_dir=None, env=None, timeout=30, cwd=None)``: a healthy server.

    ``flags`` are more ``azmlinfsrv`` arguments (``"--worker_count", "2"``); ``--host`` and ``--port`` are set by the
    fixture. The server runs in ``cwd`` (default: the score script's directory) and is stopped after the test.
    """

    def __call__(
        self,
        entry_script: PathArg,
        *flags: str,
        model_dir: PathArg | None = None,
        env: Mapping[str, str | None] | None = None,
        timeout: float = DEFAULT_START_TIMEOUT,
        cwd: PathArg | None = None,
    ) -> ServerProcess: ...
