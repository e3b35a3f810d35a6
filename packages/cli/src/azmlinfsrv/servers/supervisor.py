"""The waitress path's supervisor: a lean parent that runs the server in a child process and replaces it on a crash.

waitress serves from a single process, so user code that ends the process after start-up (``os._exit(3)`` in
``run()``, a segfault in a native library, the kernel's OOM killer) would end the whole server (docs/guarantees.md#w8).
This process runs ``python -m azmlinfsrv.servers.waitress`` as a child and starts a new one when the child dies
after it had booted. A child that dies before it booted failed to boot: its exit code becomes the server's (3 for
a score script that cannot load, as upstream), so a broken script never loops.

The supervisor imports neither Flask, waitress nor the score script. On POSIX it binds the listening sockets
once and every child inherits them: connections that arrive while a child restarts wait in the kernel's backlog
for the next child instead of being refused. On Windows a child cannot inherit a listening socket without more
machinery, so each child binds the port itself (see docs/reliability.md, Known limits).

The child reports that it has booted (init() succeeded) by connecting to a control port on 127.0.0.1 and sending
a token it got from us. It keeps that connection open: when we stop, or die, it reads EOF and drains, instead of
serving on as an orphan.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import MutableMapping
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING
from typing import Any
from typing import NamedTuple

from . import CLEANUP_ENV
from . import SETTINGS_ENV

if TYPE_CHECKING:
    from ..launch import LaunchSettings

logger = logging.getLogger("azmlinfsrv")

CHILD_MODULE = "azmlinfsrv.servers.waitress"
# What the child receives: its launch settings, the listening sockets' descriptors, the control port and token.
HANDOFF_ENV = "AZMLINFSRV_SUPERVISED"
BACKLOG = 1024  # waitress's own default
# How often the loop looks at the child without being woken. POSIX wakes it on SIGCHLD; Windows has no such
# signal, so this is how soon a crash is noticed there.
TICK_SECONDS = 0.2 if sys.platform == "win32" else 1.0
HELLO_TIMEOUT_SECONDS = 5.0


class CrashPolicy(NamedTuple):
    """How fast crashed children are replaced, and when to give up.

    A child that keeps crashing right after boot (a poison request retried by its client, a native library that
    fails on first use) would otherwise be restarted forever: after ``max_restarts`` restarts within ``window``
    seconds, the next crash stops the server with that child's exit code and leaves the decision to whatever
    runs the server (a container's restart policy, Kubernetes).
    """

    max_restarts: int = 10
    window: float = 60.0
    first_delay: float = 0.1
    max_delay: float = 5.0

    def delay(self, recent_crashes: int) -> float:
        return float(min(self.first_delay * 2 ** max(recent_crashes - 1, 0), self.max_delay))


def listen_addresses(settings: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The (host, port) pairs to serve: the health port first when it is a separate one."""
    host = str(settings["host"])
    port = int(settings["port"])
    health_port = settings.get("health_port")
    addresses = [(host, port)]
    if health_port is not None and int(health_port) != port:
        addresses.insert(0, (host, int(health_port)))
    return addresses


def format_addresses(addresses: Sequence[tuple[str, int]]) -> list[str]:
    return [f"{host}:{port}" for host, port in addresses]


def bind_listeners(addresses: Sequence[tuple[str, int]]) -> list[socket.socket]:
    """Listening sockets for every address each host name resolves to (as waitress binds them itself)."""
    sockets: list[socket.socket] = []
    try:
        for host, port in addresses:
            name = None if host in ("", "*") else host.strip("[]")
            seen: set[tuple[str, int]] = set()
            for family, kind, proto, _, address in socket.getaddrinfo(
                name, port, socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_PASSIVE
            ):
                # getaddrinfo may list one address twice, or once per IPv6 zone index.
                key = (str(address[0]).split("%", 1)[0], int(address[1]))
                if key in seen:
                    continue
                seen.add(key)
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
                sock.listen(BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def exit_status(returncode: int) -> int:
    """A child's return code as a process exit status: killed by signal N is 128 + N, as shells report it."""
    return 128 - returncode if returncode < 0 else returncode


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "signal"
        return f"was killed by {name} ({-returncode})"
    return f"exited with code {returncode}"


class Supervisor:
    """Runs ``command`` as a child until it is stopped, fails to boot, or crashes too often; returns the exit code."""

    def __init__(
        self,
        command: Sequence[str],
        settings: Mapping[str, Any],
        sockets: Sequence[socket.socket] = (),
        policy: CrashPolicy | None = None,
    ) -> None:
        self.command = list(command)
        self.settings = dict(settings)
        self.sockets = list(sockets)
        self.policy = policy or CrashPolicy()
        self.children_started = 0
        self._stop_signal: int | None = None
        self._stopped = False
        self._crashes: list[float] = []
        self._dead: list[int] = []  # children the next one has to account for (see Handoff.dead)
        self._token = ""
        self._booted = False
        self._pending: dict[socket.socket, bytes] = {}  # control connections whose token is not complete yet
        self._child_conn: socket.socket | None = None
        self._control = socket.create_server(("127.0.0.1", 0))
        self._control.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def run(self) -> int:
        """Must be called from the main thread (signal handlers)."""
        previous = self._install_signals()
        try:
            return self._supervise()
        finally:
            self._restore_signals(previous)
            self._close()

    def request_stop(self, signum: int) -> None:
        """Stop serving: the child drains (see waitress.py) and the supervisor exits with its code."""
        self._stop_signal = signum
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    # -- the loop ----------------------------------------------------------------------------------------

    def _supervise(self) -> int:
        while True:
            child = self._spawn()
            returncode = self._watch(child)
            self._dead.append(child.pid)
            if self._stop_signal is not None:
                # Killed by the signal we forwarded, before it could install its handler: a clean stop all the same.
                if returncode in (-signal.SIGTERM, -signal.SIGINT):
                    return 0
                return exit_status(returncode)
            if not self._booted:
                # The child logged why it could not boot; its code is the server's (3 for a broken score script).
                return exit_status(returncode)
            now = time.monotonic()
            self._crashes = [t for t in self._crashes if now - t < self.policy.window] + [now]
            crashes = len(self._crashes)
            if crashes > self.policy.max_restarts:
                logger.error(
                    "Worker with pid %d %s: %d crashes within %g s. Stopping the server instead of restarting the "
                    "worker again.",
                    child.pid,
                    describe(returncode),
                    crashes,
                    self.policy.window,
                )
                return exit_status(returncode) or 1
            delay = self.policy.delay(crashes)
            logger.warning(
                "Worker with pid %d %s after it had booted; starting a new one in %.1f s (restart %d of at most %d "
                "within %g s).",
                child.pid,
                describe(returncode),
                delay,
                crashes,
                self.policy.max_restarts,
                self.policy.window,
            )
            if self._sleep(delay):
                return 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._token = os.urandom(16).hex()
        self._booted = False
        host, port = self._control.getsockname()[:2]
        fds = [sock.fileno() for sock in self.sockets]
        handoff = {
            "settings": self.settings,
            "sockets": fds,
            "control": [host, port],
            "token": self._token,
            "dead": self._dead,
        }
        env = dict(os.environ)
        env[HANDOFF_ENV] = json.dumps(handoff)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        # stdout and stderr are inherited: the child writes to the same stream, unbuffered as before.
        child = subprocess.Popen(self.command, env=env, pass_fds=fds)
        self._dead = []
        self.children_started += 1
        logger.info("Booting worker with pid: %d", child.pid)
        return child

    def _watch(self, child: subprocess.Popen[bytes]) -> int:
        while True:
            if self._stop_signal is not None and not self._stopped:
                self._stop_child(child)
            returncode = child.poll()
            if returncode is not None:
                # The token may have arrived together with the child's death: read what is there.
                self._read_control()
                self._close_child_conn()
                return returncode
            waiting = [self._wake_r, self._control, *self._pending]
            if self._child_conn is not None:
                waiting.append(self._child_conn)
            readable, _, _ = select.select(waiting, [], [], TICK_SECONDS)
            if self._wake_r in readable:
                self._drain_wake()
            if self._child_conn is not None and self._child_conn in readable:
                self._check_child_conn()
            self._read_control()

    def _stop_child(self, child: subprocess.Popen[bytes]) -> None:
        self._stopped = True
        # Our copies of the listening sockets go first: once the child has closed its own, new connections are
        # refused rather than left unanswered in the backlog (docs/guarantees.md#r4).
        for sock in self.sockets:
            sock.close()
        self.sockets = []
        if sys.platform != "win32" and child.poll() is None:
            # Always SIGTERM: a second SIGINT (the whole terminal's process group gets Ctrl+C) would make the child
            # stop at once instead of draining.
            os.kill(child.pid, signal.SIGTERM)
        # On Windows, where a console's Ctrl+C reaches the child directly, the closed connection is the request.
        self._close_child_conn()

    def _sleep(self, seconds: float) -> bool:
        """Wait before the next child; True when a stop was requested meanwhile."""
        deadline = time.monotonic() + seconds
        while self._stop_signal is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([self._wake_r], [], [], left)
            if readable:
                self._drain_wake()
        return True

    # -- the control port --------------------------------------------------------------------------------

    def _read_control(self) -> None:
        while True:
            try:
                conn, _ = self._control.accept()
            except OSError:  # BlockingIOError: nobody else is waiting
                break
            conn.setblocking(False)
            self._pending[conn] = b""
        expected = self._token.encode("ascii") + b"\n"
        for conn in list(self._pending):
            try:
                data = conn.recv(256)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            received = self._pending[conn] + data
            if received == expected and not self._booted:
                del self._pending[conn]
                self._booted = True
                if self._child_conn is not None:
                    self._child_conn.close()
                self._child_conn = conn
                if self._stopped:
                    # Asked to stop while this child was booting (Windows; POSIX sent it SIGTERM): drain now.
                    self._close_child_conn()
            elif data and expected.startswith(received):
                self._pending[conn] = received
            else:
                # Not our child's token (a stale child, or someone else on this machine), or the peer closed.
                del self._pending[conn]
                conn.close()

    def _check_child_conn(self) -> None:
        assert self._child_conn is not None
        try:
            data = self._child_conn.recv(256)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            # The child is exiting; poll() will tell how.
            self._close_child_conn()

    def _close_child_conn(self) -> None:
        if self._child_conn is not None:
            self._child_conn.close()
            self._child_conn = None

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except OSError:
            pass

    # -- signals and cleanup -----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only recorded here; the loop acts on it (closing sockets select() waits on from a handler breaks select).
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stop_signal = signum

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        wanted = [signal.SIGTERM, signal.SIGINT]
        if hasattr(signal, "SIGCHLD"):
            wanted.append(signal.SIGCHLD)  # only to wake the loop at once when the child dies
        for signum in wanted:
            previous[signum] = signal.signal(signum, self._on_signal)
        previous[-1] = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        signal.set_wakeup_fd(previous.pop(-1))
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _close(self) -> None:
        for sock in [*self.sockets, *self._pending, self._control, self._wake_r, self._wake_w]:
            sock.close()
        self._pending.clear()
        self._close_child_conn()


# -- the child's side ------------------------------------------------------------------------------------------


class Handoff(NamedTuple):
    """What a supervised child gets from its supervisor."""

    settings: dict[str, Any]
    sockets: list[socket.socket]
    control: tuple[str, int]
    token: str
    # Pids of the children that died before this one. Their live metrics (requests in flight) must stop counting;
    # the child does it, with prometheus-client, which the supervisor does not load (it would double its memory).
    dead: list[int]

    def announce_booted(self, on_supervisor_gone: Callable[[], None]) -> None:
        """Tell the supervisor that this process has booted; ``on_supervisor_gone`` runs once it stops or dies."""
        try:
            conn = socket.create_connection(self.control, timeout=HELLO_TIMEOUT_SECONDS)
            conn.sendall(self.token.encode("ascii") + b"\n")
            conn.settimeout(None)
        except OSError:
            on_supervisor_gone()
            return

        def watch() -> None:
            try:
                while conn.recv(256):
                    pass
            except OSError:
                pass
            finally:
                conn.close()
            on_supervisor_gone()

        threading.Thread(target=watch, name="azmlinfsrv-supervisor", daemon=True).start()


def receive_handoff(environ: MutableMapping[str, str] = os.environ) -> Handoff:
    """Read (and remove, so that the score script and its subprocesses do not see it) the supervisor's handoff."""
    raw = environ.pop(HANDOFF_ENV, None)
    if raw is None:
        raise RuntimeError(f"{CHILD_MODULE} is started by azmlinfsrv's supervisor, not directly.")
    data = json.loads(raw)
    sockets = []
    for fd in data["sockets"]:
        sock = socket.socket(fileno=int(fd))
        sock.set_inheritable(False)
        sockets.append(sock)
    host, port = data["control"]
    return Handoff(
        settings=data["settings"],
        sockets=sockets,
        control=(str(host), int(port)),
        token=data["token"],
        dead=[int(pid) for pid in data.get("dead", [])],
    )


# -- entry points ----------------------------------------------------------------------------------------------


def _as_dict(settings: LaunchSettings) -> dict[str, Any]:
    # Its fields are plain values; vars() spares this process the import of dataclasses (and inspect).
    return dict(vars(settings))


def supervise(settings: Mapping[str, Any], policy: CrashPolicy | None = None) -> int:
    """Run the waitress server under a supervisor until it stops; the server's exit code."""
    addresses = listen_addresses(settings)
    sockets: list[socket.socket] = []
    if sys.platform != "win32":
        try:
            sockets = bind_listeners(addresses)
        except OSError as exc:
            # Normally the launcher has found a taken port before its banner; this one was taken in between.
            hint = " Stop the process that listens there, or choose a free port with --port."
            shown = ", ".join(format_addresses(addresses))
            logger.error("Cannot listen on %s: %s.%s", shown, exc, hint if exc.errno == errno.EADDRINUSE else "")
            return 1
    command = [sys.executable, "-m", CHILD_MODULE]
    return Supervisor(command, settings, sockets, policy).run()


def serve(settings: LaunchSettings) -> int:
    """The launcher's entry (``azmlinfsrv.launch.SERVERS``) where it cannot exec: supervise from this process."""
    return supervise(_as_dict(settings))


def _main() -> int:
    from azureml_inference_server_http.log_config import apply_packaged_config

    apply_packaged_config()
    settings = json.loads(os.environ.pop(SETTINGS_ENV))
    cleanup_dir = os.environ.pop(CLEANUP_ENV, None)
    try:
        return supervise(settings)
    finally:
        if cleanup_dir:
            shutil.rmtree(cleanup_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(_main())
