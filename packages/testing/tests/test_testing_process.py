"""The server process helper used directly: start, health, stop of the whole process group, and start errors."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from azmlinfsrv_testing import ServerStartError
from azmlinfsrv_testing import free_port
from azmlinfsrv_testing import start_server
from azmlinfsrv_testing.process import azmlinfsrv_command
from azmlinfsrv_testing.settings import without_server_settings
from azmlinfsrv_testing.timing import time_limit

pytest_plugins = ["testing_fixtures"]
WriteFile = Callable[..., Path]
_no_cli = importlib.util.find_spec("azmlinfsrv") is None


def server_test(test: Callable[..., None]) -> Callable[..., None]:
    """Starts real azmlinfsrv processes (e2e); POSIX only because process groups are checked with os.killpg."""
    for mark in (
        pytest.mark.e2e,
        pytest.mark.skipif(_no_cli, reason="needs the azmlinfsrv command (cli package)"),
        pytest.mark.skipif(sys.platform == "win32", reason="process groups are checked with os.killpg"),
    ):
        test = mark(test)
    return test


SLOW_INIT = """
import time

def init():
    time.sleep(60)

def run(raw_data):
    return {}
"""


def _group_gone(pgid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_azmlinfsrv_command_without_the_cli_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "azmlinfsrv" else real_find_spec(name, *a)
    )
    with pytest.raises(ServerStartError, match="pip install azureml-inference-server-http-cli"):
        azmlinfsrv_command()


def test_start_server_rejects_host_and_port_flags() -> None:
    with pytest.raises(ValueError, match="--port"):
        start_server(["--entry_script", "score.py", "--port", "1234"])
    with pytest.raises(ValueError, match="--host"):
        start_server(["--host=0.0.0.0"])


@server_test
def test_start_server_serves_then_stops_its_group(write_file: WriteFile, echo_source: str, tmp_path: Path) -> None:
    script = write_file("score.py", echo_source)
    server = start_server(
        ["--entry_script", str(script), "--worker_count", "2"],
        env={"H3_FLAG": "server"},
        cwd=tmp_path,
        log_dir=tmp_path / "logs",
    )
    with server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        response = server.score(json={"data": [1]}, headers={"x-request-id": "h3-id"})
        assert response.status_code == 200, server.logs()
        assert response.json()["flag"] == "server"
        assert response.headers["X-Request-Id"] == "h3-id"
        assert server.health().text == "Healthy"
        assert server.swagger().json()["swagger"] == "2.0"
        assert server.returncode is None
        assert server.log_path.startswith(str(tmp_path / "logs"))
        assert "echo init done" in server.logs()
    assert server.returncode is not None
    assert _group_gone(server.pid), "a worker of the server's process group survived stop()"
    assert server.stop() == server.returncode  # idempotent


@server_test
def test_start_server_stop_reaches_every_process_of_the_group(write_file: WriteFile, tmp_path: Path) -> None:
    # init() starts a helper process that gunicorn knows nothing about; only signalling the group stops it.
    script = write_file(
        "score.py",
        """
        import subprocess
        import sys

        def init():
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])

        def run(raw_data):
            return {}
        """,
    )
    server = start_server(["--entry_script", str(script)], cwd=tmp_path, log_dir=tmp_path)
    try:
        server.stop()
        assert _group_gone(server.pid), "a process of the server's group survived stop()"
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)  # only reached when the assertion failed: clean up our own group
        except ProcessLookupError:
            pass


@server_test
def test_start_server_hides_inherited_server_settings(
    write_file: WriteFile, echo_source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZUREML_MODEL_DIR", "from-the-shell")
    script = write_file("score.py", echo_source)
    args = ["--entry_script", str(script)]
    with start_server(args, cwd=tmp_path, log_dir=tmp_path / "a") as server:
        assert server.score(json={}).json()["seen"]["model_dir"] is None
    with start_server(args, cwd=tmp_path, log_dir=tmp_path / "b", inherit_settings=True) as server:
        assert server.score(json={}).json()["seen"]["model_dir"] == "from-the-shell"


@server_test
def test_start_server_reports_an_exit_with_the_log(write_file: WriteFile, tmp_path: Path) -> None:
    script = write_file(
        "score.py",
        """
        def init():
            raise RuntimeError("h3 broken init marker")

        def run(raw_data):
            return {}
        """,
    )
    with pytest.raises(ServerStartError) as info:
        start_server(["--entry_script", str(script)], cwd=tmp_path, log_dir=tmp_path, timeout=30)
    message = str(info.value)
    assert "exited with code" in message
    assert "h3 broken init marker" in message
    assert "--entry_script" in message
    assert info.value.returncode not in (None, 0)
    assert info.value.pid is not None and _group_gone(info.value.pid)


@server_test
def test_start_server_times_out_and_stops_the_server(write_file: WriteFile, tmp_path: Path) -> None:
    script = write_file("score.py", SLOW_INIT)
    started = time.monotonic()
    with pytest.raises(ServerStartError, match=r"not healthy after 1\.5 s") as info:
        start_server(["--entry_script", str(script)], cwd=tmp_path, log_dir=tmp_path, timeout=1.5)
    # The 1.5 s start timeout, then the stop of a server that never came up; init() alone would take 60 s.
    assert time.monotonic() - started < time_limit(1.5, 0.0, failure=60.0, budget=13.5)
    assert info.value.pid is not None and _group_gone(info.value.pid)


@server_test
def test_start_server_on_a_taken_port_says_so(write_file: WriteFile, echo_source: str, tmp_path: Path) -> None:
    script = write_file("score.py", echo_source)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError) as info:
            start_server(["--entry_script", str(script)], cwd=tmp_path, log_dir=tmp_path, port=port, timeout=20)
    assert str(port) in str(info.value)
    assert "in use" in str(info.value).lower()


@server_test
def test_a_server_expected_to_exit_is_started_without_waiting_and_keeps_stderr_apart(tmp_path: Path) -> None:
    # No entry script: azmlinfsrv prints its error and exits 1 before it ever listens.
    server = start_server(cwd=tmp_path, log_dir=tmp_path, wait=False, separate_stderr=True)
    try:
        assert server.wait(30) == 1
        assert "Either provide an entry_script" in server.stdout()
        assert server.stderr_path is not None and os.path.exists(server.stderr_path)
        assert server.logs() == server.stdout() + server.stderr()
    finally:
        server.stop()


@server_test
def test_wait_raises_with_the_log_when_the_server_keeps_running(write_file: WriteFile, tmp_path: Path) -> None:
    script = write_file("score.py", "def init(): print('booted marker')\ndef run(raw_data): return {}\n")
    with start_server(["--entry_script", str(script)], cwd=tmp_path, log_dir=tmp_path) as server:
        with pytest.raises(TimeoutError, match="still runs after 0.2 s") as info:
            server.wait(0.2)
        assert "booted marker" in str(info.value)


@server_test
def test_processes_lists_the_workers_and_send_signal_reaches_the_group(write_file: WriteFile, tmp_path: Path) -> None:
    script = write_file("score.py", "def init(): pass\ndef run(raw_data): return {}\n")
    server = start_server(["--entry_script", str(script), "--worker_count", "2"], cwd=tmp_path, log_dir=tmp_path)
    try:
        members = server.processes()
        assert members[0].pid == server.pid
        assert len(members) >= 3, members  # the arbiter and its two workers
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        assert _group_gone(server.pid)
        assert server.processes() == []
    finally:
        server.stop()


@server_test
def test_another_command_is_started_with_the_same_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for another server build: it reports its argv and environment, then serves GET / on --port.
    fake = tmp_path / "fake_server.py"
    fake.write_text(
        "import http.server, json, os, sys\n"
        "port = int(sys.argv[sys.argv.index('--port') + 1])\n"
        "print(json.dumps({'argv': sys.argv[1:], 'host': os.environ.get('AZMLINFSRV_HOST'),"
        " 'timeout': os.environ.get('SCORING_TIMEOUT_MS')}), flush=True)\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
        "http.server.HTTPServer(('127.0.0.1', port), H).serve_forever()\n"
    )
    monkeypatch.setenv("SCORING_TIMEOUT_MS", "1")  # a developer's own setting: not inherited
    server = start_server(["--x", "1"], command=[sys.executable, str(fake)], host_flag=False, log_dir=tmp_path)
    with server:
        assert server.health().status_code == 200
        report = json.loads(server.stdout().splitlines()[0])
    assert report == {"argv": ["--x", "1", "--port", str(server.port)], "host": "127.0.0.1", "timeout": None}
    assert _group_gone(server.pid)


def test_the_front_ends_settings_are_not_inherited_either() -> None:
    environ = {
        "PATH": "/bin",
        "AZMLINFSRV_MAX_REQUESTS": "5",
        "azmlinfsrv_access_log": "true",
        "GUNICORN_CMD_ARGS": "--workers 9",
        "PROMETHEUS_MULTIPROC_DIR": "/somewhere",
        "WORKER_COUNT": "3",
        "HOSTNAME": "box",
    }
    assert without_server_settings(environ) == {"PATH": "/bin", "HOSTNAME": "box"}
