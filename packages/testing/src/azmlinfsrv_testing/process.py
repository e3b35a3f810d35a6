"""Running the real ``azmlinfsrv`` in a child process on 127.0.0.1, for users' tests and the project's e2e tests.

The server runs in a process group of its own (a new session on POSIX, a new process group on Windows) so that
stopping it also stops the gunicorn workers it forked, and nothing else: the group is signalled by its id, never
by name or port. Its stdout and stderr go to one log file (or two, with ``separate_stderr``), which
:class:`ServerStartError` quotes when the server does not come up. The same launcher starts any other server
command (``command=``), e.g. another build of ``azmlinfsrv``, under the same environment policy and teardown.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from types import TracebackType
from typing import IO
from typing import Any

import psutil

from .messages import Headers
from .messages import Response
from .messages import encode_request
from .settings import without_server_settings

__all__ = [
    "DEFAULT_START_TIMEOUT",
    "ServerProcess",
    "ServerStartError",
    "azmlinfsrv_command",
    "free_port",
    "start_server",
]

HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT = 30.0
DEFAULT_REQUEST_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0  # gunicorn's graceful shutdown normally takes well under a second
KILL_TIMEOUT = 5.0
# A server that never became healthy has nothing to drain; gunicorn would otherwise wait out its graceful timeout
# for a worker still inside init().
FAILED_START_STOP_TIMEOUT = 2.0
POLL_INTERVAL = 0.1
LOG_TAIL_LINES = 100
PORT_ATTEMPTS = 3
CLI_DISTRIBUTION = "azureml-inference-server-http-cli"
# Printed by gunicorn and by waitress when the port was taken between free_port() and the server's bind().
_ADDRESS_IN_USE = ("Address already in use", "Connection in use", "address already in use", "WinError 10048")


class ServerStartError(RuntimeError):
    """The server exited, or was not healthy in time. The message holds the end of its log."""

    def __init__(self, message: str, log: str = "", returncode: int | None = None, pid: int | None = None) -> None:
        super().__init__(message)
        self.log = log
        self.returncode = returncode
        self.pid = pid  # the server's process (and process group) id, stopped by the time this is raised


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def azmlinfsrv_command() -> list[str]:
    """The command that starts ``azmlinfsrv`` with this interpreter, so the server sees the test's packages."""
    if importlib.util.find_spec("azmlinfsrv") is None:
        raise ServerStartError(
            "The azmlinfsrv command is not installed in this environment. "
            f"Install it with: pip install {CLI_DISTRIBUTION}"
        )
    return [sys.executable, "-m", "azmlinfsrv"]


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    parts = text.splitlines()
    if len(parts) <= lines:
        return text
    return "\n".join([f"[... {len(parts) - lines} earlier lines ...]", *parts[-lines:]])


class ServerProcess:
    """A running ``azmlinfsrv``: its ``url``, a small HTTP client, its log, and :meth:`stop`."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        command: Sequence[str],
        port: int,
        log_path: str,
        host: str = HOST,
        stderr_path: str | None = None,
    ) -> None:
        self.process = process
        self.command = list(command)
        self.host = host
        self.port = port
        self.log_path = log_path
        self.stderr_path = stderr_path  # None: stderr is in log_path, interleaved with stdout

    @property
    def url(self) -> str:
        """e.g. ``http://127.0.0.1:40123`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """None while the server runs."""
        return self.process.poll()

    def logs(self) -> str:
        """Everything the server wrote to stdout and stderr so far (stdout first when they are kept apart)."""
        return self.stdout() + self.stderr()

    def stdout(self) -> str:
        """What the server wrote to stdout so far; stderr too unless it was started with ``separate_stderr``."""
        return _read(self.log_path)

    def stderr(self) -> str:
        """What the server wrote to stderr so far, when it was started with ``separate_stderr``; else ``""``."""
        return _read(self.stderr_path) if self.stderr_path is not None else ""

    def processes(self) -> list[psutil.Process]:
        """The server's processes still running: the one started and every descendant (gunicorn's workers).

        Exited processes not yet reaped by their parent (zombies) are left out.
        """
        try:
            root = psutil.Process(self.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        return [member for member in members if _running(member)]

    # -- HTTP --------------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> Response:
        """Send one request (on a new connection) and read the whole response."""
        target, body, out_headers = encode_request(path, json=json, data=data, headers=headers, params=params)
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request(method.upper(), target, body=body, headers=out_headers)
            answer = connection.getresponse()
            content = answer.read()
            return Response(answer.status, Headers(answer.getheaders()), content)
        finally:
            connection.close()

    def score(
        self,
        json: Any = None,
        *,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
        params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> Response:
        """Call ``/score``: ``json`` is sent as application/json, ``data`` as is; ``params`` form the query string."""
        return self.request(method, "/score", json=json, data=data, headers=headers, params=params, timeout=timeout)

    def health(self, timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Response:
        """``GET /``, the liveness probe: 200 "Healthy" once init() has completed."""
        return self.request("GET", "/", timeout=timeout)

    def swagger(self, version: str | None = "2", timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Response:
        """``GET /swagger.json?version=...``; ``version=None`` asks without a version."""
        params = {"version": version} if version is not None else None
        return self.request("GET", "/swagger.json", params=params, timeout=timeout)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def wait_healthy(self, timeout: float = DEFAULT_START_TIMEOUT, path: str = "/") -> None:
        """Poll ``path`` until it answers 200; raise :class:`ServerStartError` if the server exits or time runs out."""
        deadline = time.monotonic() + timeout
        last_problem = "no answer yet"
        while True:
            code = self.process.poll()
            if code is not None:
                raise self._start_error(f"azmlinfsrv exited with code {code} before it was healthy", code)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._start_error(f"azmlinfsrv was not healthy after {timeout:g} s (last: {last_problem})", None)
            try:
                # GET / waits for init() to finish, so a short timeout keeps the exit check above responsive.
                answer = self.request("GET", path, timeout=min(remaining, 2.0))
            except (OSError, http.client.HTTPException) as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            else:
                if answer.status_code == 200:
                    return
                last_problem = f"GET {path} answered {answer.status_code}"
            time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))

    def _start_error(self, message: str, code: int | None) -> ServerStartError:
        log = self.logs()
        return ServerStartError(
            f"{message}.\ncommand: {shlex.join(self.command)}\n"
            f"--- azmlinfsrv log ({self.log_path}) ---\n{_tail(log)}\n--- end of log ---",
            log=log,
            returncode=code,
            pid=self.pid,
        )

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the server's whole process group and return at once (see :meth:`wait`).

        On Windows only ``signal.CTRL_BREAK_EVENT`` reaches the group; other signals go to the started process.
        """
        if sys.platform == "win32":
            if self.process.poll() is None:
                self.process.send_signal(signum)
            return
        _signal_group(self.process.pid, signum)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the started process to exit and return its exit code.

        Raises :class:`TimeoutError`, quoting the end of the log, if it still runs after ``timeout`` seconds.
        """
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"azmlinfsrv still runs after {timeout:g} s.\ncommand: {shlex.join(self.command)}\n"
                f"--- azmlinfsrv log ---\n{_tail(self.logs())}\n--- end of log ---"
            ) from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop the server's process group: a graceful signal, then a kill after ``timeout`` seconds. Idempotent."""
        process = self.process
        if sys.platform == "win32":
            if process.poll() is None:
                # CTRL_BREAK_EVENT reaches exactly the group made with CREATE_NEW_PROCESS_GROUP.
                process.send_signal(signal.CTRL_BREAK_EVENT)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(KILL_TIMEOUT)
            return process.poll()
        # The leader's pid is the group id (start_new_session=True). Workers may outlive a dead leader, so the
        # group is signalled even when the leader has exited already.
        group = process.pid
        if not _signal_group(group, signal.SIGTERM):
            process.wait(KILL_TIMEOUT)
            return process.returncode
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process.poll()
            if not _group_alive(group):
                break
            time.sleep(POLL_INTERVAL)
        else:
            _signal_group(group, signal.SIGKILL)
        try:
            process.wait(KILL_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        return process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ServerProcess pid={self.pid} {self.url}>"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal_group(group: int, signum: int) -> bool:
    """False when no process of the group is left."""
    if sys.platform == "win32":
        return False
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    return True


def _group_alive(group: int) -> bool:
    # Signal 0 checks for existence without delivering anything. Zombies (exited, not yet reaped by their
    # parent) still count; the leader is reaped by poll() in the caller, its workers by the leader.
    return _signal_group(group, 0)


def start_server(
    args: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    *,
    port: int | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    health_path: str = "/",
    inherit_settings: bool = False,
    command: Sequence[str] | None = None,
    host_flag: bool = True,
    wait: bool = True,
    separate_stderr: bool = False,
) -> ServerProcess:
    """Start ``azmlinfsrv ARGS --host 127.0.0.1 --port PORT`` and wait until ``GET health_path`` answers 200.

    ``env`` is applied on top of this process's environment, from which the server's own settings (``AZUREML_*``,
    ``AML_*``, ``SCORING_TIMEOUT_MS``, ...) are removed unless ``inherit_settings`` is true; ``None`` in ``env`` removes
    a variable. With ``port=None`` a free
    port is picked, and picked again (up to three times) if another process takes it before the server binds it.
    Raises :class:`ServerStartError`, quoting the server's log, when the server exits or is not healthy in time;
    the process group is stopped before the error is raised.

    ``command`` runs another server instead of this environment's ``azmlinfsrv`` (e.g. ``["/path/to/azmlinfsrv"]``
    of another installation, or ``[sys.executable, "host.py"]``), with the same environment, process group and
    teardown; it is given ``--host``/``--port`` the same way. ``host_flag=False`` leaves out ``--host`` for a
    command without that option and sets ``AZMLINFSRV_HOST`` instead. ``wait=False`` returns as soon as the process
    is started, for a server expected to exit (see :meth:`ServerProcess.wait`) or one the test polls itself; a
    taken port is then not retried. ``separate_stderr`` keeps stderr in a file of its own
    (:meth:`ServerProcess.stderr`).
    """
    for flag in ("--port", "--host"):
        if any(arg == flag or arg.startswith(flag + "=") for arg in args):
            raise ValueError(f"start_server() sets {flag} itself; pass port= instead")
    base_command = list(command) if command is not None else azmlinfsrv_command()
    child_env = dict(os.environ) if inherit_settings else without_server_settings(os.environ)
    if not host_flag:
        child_env["AZMLINFSRV_HOST"] = HOST
    for name, value in (env or {}).items():
        if value is None:
            child_env.pop(name, None)
        else:
            child_env[name] = value
    # Log lines reach the file as they are written, so logs() and start errors show the latest ones.
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    directory = os.fspath(log_dir) if log_dir is not None else tempfile.mkdtemp(prefix="azmlinfsrv-")
    os.makedirs(directory, exist_ok=True)
    attempts = 1 if port is not None or not wait else PORT_ATTEMPTS
    host_args = ["--host", HOST] if host_flag else []
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_port()
        log_path = os.path.join(directory, f"azmlinfsrv-{chosen}.log")
        stderr_path = os.path.join(directory, f"azmlinfsrv-{chosen}.stderr.log") if separate_stderr else None
        full_command = [*base_command, *args, *host_args, "--port", str(chosen)]
        server = _spawn(full_command, child_env, cwd, chosen, log_path, stderr_path)
        if not wait:
            return server
        try:
            server.wait_healthy(timeout, health_path)
        except ServerStartError as exc:
            server.stop(FAILED_START_STOP_TIMEOUT)
            if attempt < attempts and any(marker in exc.log for marker in _ADDRESS_IN_USE):
                continue
            raise
        except BaseException:
            server.stop(FAILED_START_STOP_TIMEOUT)  # KeyboardInterrupt while waiting: leave no server behind
            raise
        return server
    raise AssertionError("unreachable")  # pragma: no cover


def _spawn(
    command: list[str],
    env: dict[str, str],
    cwd: str | os.PathLike[str] | None,
    port: int,
    log_path: str,
    stderr_path: str | None = None,
) -> ServerProcess:
    with contextlib.ExitStack() as files:
        log = files.enter_context(open(log_path, "wb"))
        errors: IO[bytes] | int = subprocess.STDOUT
        if stderr_path is not None:
            errors = files.enter_context(open(stderr_path, "wb"))
        if sys.platform == "win32":
            process = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=errors,
                creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,
            )
        else:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=errors,
                start_new_session=True,
            )
    return ServerProcess(process, command, port, log_path, stderr_path=stderr_path)
