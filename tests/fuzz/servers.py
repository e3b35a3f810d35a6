"""Real ``azmlinfsrv`` processes for the fuzz suite: 127.0.0.1, a free port, their own process group.

Each server is started with ``start_new_session=True`` and stopped by signalling that group's id, never by name or
by port. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import requests

RESOURCES = Path(__file__).parent / "resources"
# Variables of the developer's own shell that would change what the server does.
_INHERITED_PREFIXES = ("AML_", "AZUREML_", "AZMLINFSRV_", "APPLICATIONINSIGHTS_", "SCORING_", "WORKER_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One ``python -m azmlinfsrv`` process; use as a context manager."""

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
        self.port = free_port()
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        full_env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_INHERITED_PREFIXES)}
        full_env.update({"PYTHONUNBUFFERED": "1", "AZMLINFSRV_HOST": "127.0.0.1"})
        if server == "waitress":
            full_env["AZMLINFSRV_SERVER"] = "waitress"
        full_env.update(env or {})
        self.argv = [
            sys.executable,
            "-m",
            "azmlinfsrv",
            "--entry_script",
            str(script),
            "--port",
            str(self.port),
            *args,
        ]
        self.env = full_env
        self.cwd = cwd or RESOURCES
        self.server = server
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        with open(self.log_dir / "stdout.txt", "wb") as out, open(self.log_dir / "stderr.txt", "wb") as err:
            self.process = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=out, stderr=err, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if requests.get(self.url + "/", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not healthy after {timeout} s:\n{self.logs()}")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stdout(self) -> str:
        return (self.log_dir / "stdout.txt").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.log_dir / "stderr.txt").read_text(errors="replace")

    def logs(self) -> str:
        return self.stdout() + self.stderr()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
