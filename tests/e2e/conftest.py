"""End-to-end fixtures: real ``azmlinfsrv`` processes on free 127.0.0.1 ports, stopped by process group."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from azmlinfsrv_testing import ServerProcess
from azmlinfsrv_testing import allowance
from azmlinfsrv_testing import free_port
from azmlinfsrv_testing import latency
from azmlinfsrv_testing import start_server

RESOURCES = Path(__file__).parent / "resources"
BROKEN = RESOURCES / "broken"
SERVER_MODELS = ["gunicorn", "gunicorn-threads", "waitress"]

__all__ = ["BROKEN", "RESOURCES", "SERVER_MODELS", "Launcher", "Server", "allowance", "free_port", "latency"]

# The e2e tests use the testing package's ServerProcess as is: stdout()/stderr() apart, send_signal(), wait().
Server = ServerProcess


class Launcher:
    """Starts ``azmlinfsrv`` through the testing package's launcher, in ``resources/`` unless told otherwise."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: list[ServerProcess] = []

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        port: int | None = None,
        model: str = "gunicorn",
        wait: bool = True,
        python_module: str = "azmlinfsrv",
    ) -> ServerProcess:
        model_env: dict[str, str] = {}
        if model == "waitress":
            model_env["AZMLINFSRV_SERVER"] = "waitress"
        elif model == "gunicorn-threads":
            model_env["WORKER_THREADS"] = "4"
        server = start_server(
            args,
            env={**model_env, **(env or {})},
            cwd=cwd or RESOURCES,
            port=port,
            log_dir=self.tmp_path / f"server{len(self.servers)}",
            command=None if python_module == "azmlinfsrv" else [sys.executable, "-m", python_module],
            wait=wait,
            separate_stderr=True,
        )
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.close()


@pytest.fixture(params=SERVER_MODELS)
def server_model(request: pytest.FixtureRequest) -> str:
    if request.param == "gunicorn" and sys.platform == "win32":
        pytest.skip("gunicorn does not run on Windows")
    return str(request.param)
