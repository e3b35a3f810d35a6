"""The ``azmlinfsrv`` console script: parse the command line in a child while this process warms up the server.

Start-up is a chain: read the command line (typer, and what typer imports, is the slowest link), then become
the gunicorn master (import gunicorn and our worker class, bind), then fork a worker that imports Flask and
the score script. On POSIX the first two links run side by side on two cores:

- a forked child runs the whole CLI (``azmlinfsrv.main``): options, config.json, environment, banner;
- meanwhile this process, which never imports the CLI stack, imports what the gunicorn master needs;
- the child hands back what it would have ``exec``'d (a module to run and the environment to run it in)
  through a pipe, and exits;
- this process, whose pid is the one the user or the container runtime started, becomes that server:
  the gunicorn master in place, or anything else (the waitress supervisor) by ``exec``.

Anything that does not start a server (``--help``, usage errors, a missing entry script) is the child's exit
status. ``validate`` runs in this process directly: it is a one-shot check, not a server, and a signal sent
to this pid must reach the run() it is checking.

Keep this module's imports to the standard library: everything it imports is resident in the master.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from types import FrameType

GUNICORN_MASTER = "azmlinfsrv.servers.gunicorn"

# Signals a supervisor (a container runtime, systemd, a CI runner) sends to the pid it started: while the
# child parses, they are passed on to it and the start is abandoned. SIGINT from a terminal reaches both
# processes already (same process group), so it only marks the start as abandoned here.
_FORWARDED = ("SIGTERM", "SIGHUP", "SIGQUIT")

# Set in the parsing child: replace_process() hands the plan to the parent instead of exec'ing.
_handoff_fd: int | None = None


def replace_process(module: str) -> None:
    """Become ``python -m module`` with the current environment, keeping the pid; never returns.

    In the parsing child the plan goes to the parent, which is the process the user started.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if _handoff_fd is not None:
        plan = json.dumps({"module": module, "environ": dict(os.environ)}).encode()
        view = memoryview(plan)
        while view:
            view = view[os.write(_handoff_fd, view) :]
        os.close(_handoff_fd)
        os._exit(0)
    os.execv(sys.executable, [sys.executable, "-m", module])


def main() -> None:
    """Console-script entry point."""
    # Start-up is mostly imports: they allocate a great deal and free almost nothing, so the collector's passes
    # over them are wasted (about a tenth of import time). It is on again before any request is served.
    gc.disable()
    if not hasattr(os, "fork") or sys.argv[1:2] == ["validate"]:
        from .main import main as cli_main

        gc.enable()
        cli_main()
        return
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        _run_cli_in_child(write_fd)
    os.close(write_fd)
    sys.exit(_become(_wait_for_plan(child, read_fd)))


def _run_cli_in_child(write_fd: int) -> None:
    global _handoff_fd
    _handoff_fd = write_fd
    code = 0
    try:
        from .main import main as cli_main

        cli_main()
    except SystemExit as exc:
        code = _exit_code(exc)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 -- whatever the CLI raised, the user sees it, then the status
        import traceback  # here: this module's imports are on every start's path

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


class _Waiting:
    """What happened while the child parsed: the plan it handed over, its exit status, a stop request."""

    def __init__(self, child: int) -> None:
        self.child = child
        self.stop_signal: int | None = None
        self.plan = b""
        self.status = 0

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_signal = signum
        if signum != signal.SIGINT:
            try:
                os.kill(self.child, signum)
            except ProcessLookupError:
                pass


def _wait_for_plan(child: int, read_fd: int) -> _Waiting:
    waiting = _Waiting(child)
    handled = [getattr(signal, name) for name in _FORWARDED if hasattr(signal, name)] + [signal.SIGINT]
    previous = {signum: signal.signal(signum, waiting.on_signal) for signum in handled}
    try:
        _warm_up()
        chunks = []
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
        waiting.plan = b"".join(chunks)
        _, status = os.waitpid(child, 0)
        waiting.status = os.waitstatus_to_exitcode(status)
    finally:
        os.close(read_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return waiting


def _warm_up() -> None:
    """Import what the gunicorn master needs while the child parses; a failure is the real start's to report."""
    try:
        __import__(GUNICORN_MASTER)
    except Exception:  # noqa: BLE001, S110 -- e.g. no gunicorn: the server the user chose may not need it
        pass


def _become(waiting: _Waiting) -> int:
    """Run the plan in this process; without one, end as the child ended."""
    if waiting.stop_signal is not None:
        # Asked to stop before the server existed: stop as that signal would have stopped us.
        signal.signal(waiting.stop_signal, signal.SIG_DFL)
        os.kill(os.getpid(), waiting.stop_signal)
        return 128 + waiting.stop_signal
    if not waiting.plan:
        return 128 - waiting.status if waiting.status < 0 else waiting.status
    gc.enable()
    plan = json.loads(waiting.plan)
    os.environ.clear()
    os.environ.update(plan["environ"])
    module = plan["module"]
    if module == GUNICORN_MASTER and module in sys.modules:
        # What `python -m` would have put first on sys.path: the working directory, not this script's folder.
        sys.path[0] = os.getcwd()
        code: int = sys.modules[module].master_main()
        return code
    os.execv(sys.executable, [sys.executable, "-m", module])
    return 1  # not reached: execv replaced this process
