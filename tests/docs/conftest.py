"""Shared helpers for the documentation, deployment and example tests."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DEPLOY = ROOT / "deploy"
EXAMPLES = ROOT / "examples"


def read_doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def doc_sections(text: str) -> dict[str, str]:
    """The body under each ``## `` heading of a Markdown page, keyed by the heading text."""
    sections: dict[str, str] = {}
    parts = re.split(r"^## +(.+?)\s*$", text, flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2]):
        sections[heading] = body
    return sections


def table_first_cells(text: str) -> list[str]:
    """The backticked names in the first cell of every Markdown table row (``| `NAME` | ... |``)."""
    names: list[str] = []
    for line in text.splitlines():
        match = re.match(r"^\|\s*([^|]+?)\s*\|", line)
        if match:
            names += re.findall(r"`([^`]+)`", match.group(1))
    return names


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process in its own process group, stopped by that group's id (never by name or port)."""

    def __init__(self, args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._log_file = open(log, "wb")  # closed in terminate()
        kwargs: dict[str, object] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True
        self.popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            **kwargs,  # type: ignore[call-overload]
        )

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(encoding="utf-8", errors="replace")

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM the group (a polite stop on Windows); kill it if it is still there after ``timeout``."""
        if self.popen.poll() is None:
            if sys.platform == "win32":
                self.popen.terminate()
            else:
                import signal

                os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            if sys.platform == "win32":
                self.popen.kill()
            else:
                import signal

                os.killpg(self.popen.pid, signal.SIGKILL)
            code = self.popen.wait(5)
        self._log_file.close()
        return code


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[list[Process]]:
    """Collects started processes and stops any still running at the end of the test."""
    started: list[Process] = []
    yield started
    for process in started:
        if process.popen.poll() is None:
            process.terminate(5.0)


def wait_for_http(url: str, process: Process, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 200, the process exits, or ``timeout`` passes (then fail with the log)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            pytest.fail(f"the process exited with {process.popen.returncode}:\n{process.output()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} did not answer 200 within {timeout} s:\n{process.output()}")
