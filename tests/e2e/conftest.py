"""End-to-end fixtures: real ``azmlinfsrv`` processes on free 127.0.0.1 ports, stopped by process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import pytest
import requests

RESOURCES = Path(__file__).parent / "resources"
BROKEN = RESOURCES / "broken"
SERVER_MODELS = ["gunicorn", "gunicorn-threads", "waitress"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_dir: Path
    extra_ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        return (self.log_dir / "stdout.txt").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.log_dir / "stderr.txt").read_text(errors="replace")

    def logs(self) -> str:
        return self.stdout() + self.stderr()

    def wait_healthy(self, timeout: float = 30.0, path: str = "/") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.url + path, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not healthy after {timeout} s:\n{self.logs()}")

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running after {timeout} s:\n{self.logs()}") from None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return

    def kill(self) -> None:
        self.stop(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.stop(signal.SIGKILL)
            self.process.wait(10)


class Launcher:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.servers: list[Server] = []

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        port: int | None = None,
        model: str = "gunicorn",
        wait: bool = True,
        python_module: str = "azmlinfsrv",
    ) -> Server:
        port = port or free_port()
        log_dir = self.tmp_path / f"server{len(self.servers)}"
        log_dir.mkdir()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AML_", "AZUREML_", "SCORING"))}
        full_env.update({"PYTHONUNBUFFERED": "1", "AZMLINFSRV_HOST": "127.0.0.1"})
        if model == "waitress":
            full_env["AZMLINFSRV_SERVER"] = "waitress"
        elif model == "gunicorn-threads":
            full_env["WORKER_THREADS"] = "4"
        full_env.update(env or {})
        argv = [sys.executable, "-m", python_module, *args]
        if "--port" not in args:
            argv += ["--port", str(port)]
        with open(log_dir / "stdout.txt", "wb") as out, open(log_dir / "stderr.txt", "wb") as err:
            process = subprocess.Popen(
                argv, cwd=cwd or RESOURCES, env=full_env, stdout=out, stderr=err, start_new_session=True
            )
        server = Server(process, port, log_dir)
        self.servers.append(server)
        if wait:
            server.wait_healthy()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.kill()


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
