"""Real ``azmlinfsrv`` processes for the fuzz suite, started through the testing package's launcher.

The launcher gives them 127.0.0.1, a free port, the project's environment policy (the developer's own server
settings are not inherited) and a process group of their own, stopped by that group's id, never by name or by port.
Every wait is bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from azmlinfsrv_testing import ServerProcess as LaunchedServer
from azmlinfsrv_testing import start_server

RESOURCES = Path(__file__).parent / "resources"


class ServerProcess:
    """One ``azmlinfsrv`` serving ``script``, with gunicorn or waitress; use as a context manager."""

    def __init__(
        self,
        script: str | Path,
        log_dir: Path,
        *,
        server: str = "gunicorn",
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        cwd: Path | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.server = server
        self.args = ("--entry_script", str(script), *args)
        self.env = {**({"AZMLINFSRV_SERVER": "waitress"} if server == "waitress" else {}), **(env or {})}
        self.cwd = cwd or RESOURCES
        self._launched: LaunchedServer | None = None

    @property
    def launched(self) -> LaunchedServer:
        if self._launched is None:
            raise RuntimeError("the server has not been started")
        return self._launched

    @property
    def port(self) -> int:
        return self.launched.port

    @property
    def url(self) -> str:
        return self.launched.url

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self._launched = start_server(
            self.args, env=self.env, cwd=self.cwd, timeout=timeout, log_dir=self.log_dir, separate_stderr=True
        )
        return self

    def stop(self) -> None:
        if self._launched is not None:
            self._launched.stop()

    def stdout(self) -> str:
        return self.launched.stdout()

    def stderr(self) -> str:
        return self.launched.stderr()

    def logs(self) -> str:
        return self.launched.logs()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
