"""The console-script entry: the CLI runs in a child and hands back the server it would have exec'd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from azmlinfsrv import entry
from azmlinfsrv_testing.timing import time_limit

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the hand-over exists where fork does")


def _run_in_fork(body: str) -> tuple[bytes, int]:
    """Run ``body`` in a fresh interpreter as the parsing child would: a pipe back to the caller, then its status."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from azmlinfsrv import entry
        read_fd, write_fd = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read_fd)
            entry._handoff_fd = write_fd
            {body}
            os._exit(99)
        os.close(write_fd)
        data = b""
        while chunk := os.read(read_fd, 65536):
            data += chunk
        _, status = os.waitpid(child, 0)
        sys.stdout.buffer.write(data)
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=False)
    return done.stdout, done.returncode


def test_the_child_hands_over_the_module_and_its_environment() -> None:
    out, code = _run_in_fork("os.environ['AZMLINFSRV_TEST_MARK'] = 'from the child'; entry.replace_process('a.b')")
    assert code == 0
    plan = json.loads(out)
    assert plan["module"] == "a.b"
    assert plan["environ"]["AZMLINFSRV_TEST_MARK"] == "from the child"


def test_the_child_reads_the_command_line_without_importing_the_server(tmp_path: Path) -> None:
    """The child's time is on every start's path: gunicorn is the parent's to import (side by side with the
    child), and typer must not pull pydantic in (typer 0.29 and later build a pydantic validator per option)."""
    script = tmp_path / "score.py"
    script.write_text("def init(): pass\ndef run(data): return data\n", encoding="utf-8")
    out, code = _run_in_fork(
        f"""
            original = entry.replace_process
            def spy(module):
                loaded = [name for name in ("gunicorn", "pydantic") if name in sys.modules]
                os.environ["AZMLINFSRV_TEST_LOADED"] = ",".join(loaded)
                original(module)
            entry.replace_process = spy
            sys.argv = ["azmlinfsrv", "--entry_script", {str(script)!r}, "--port", "5999"]
            from azmlinfsrv.main import main
            main()
        """
    )
    assert code == 0
    plan = json.loads(out.splitlines()[-1])  # the banner the child printed comes first
    assert plan["module"] == entry.GUNICORN_MASTER
    assert plan["environ"]["AZMLINFSRV_TEST_LOADED"] == ""


def test_values_that_are_not_utf8_survive_the_hand_over() -> None:
    # Environment values are bytes on POSIX; Python keeps undecodable ones as surrogates, and so must the plan.
    out, code = _run_in_fork("os.environb[b'AZMLINFSRV_TEST_RAW'] = b'caf\\xe9'; entry.replace_process('m')")
    assert code == 0
    environ = json.loads(out)["environ"]
    assert environ["AZMLINFSRV_TEST_RAW"].encode("utf-8", "surrogateescape") == b"caf\xe9"


def test_without_a_hand_over_the_process_is_replaced() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from azmlinfsrv import entry; entry.replace_process('json.tool')"],
        input=b'{"a": 1}',
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert json.loads(done.stdout) == {"a": 1}


def _waiting(status: int, plan: bytes = b"", stop_signal: int | None = None) -> entry._Waiting:
    waiting = entry._Waiting(child=0)
    waiting.status, waiting.plan, waiting.stop_signal = status, plan, stop_signal
    return waiting


@pytest.mark.parametrize(("status", "code"), [(0, 0), (2, 2), (1, 1), (-signal.SIGTERM, 128 + signal.SIGTERM)])
def test_without_a_plan_the_child_status_is_the_exit_status(status: int, code: int) -> None:
    assert entry._become(_waiting(status)) == code


def test_a_stop_signal_during_the_parse_stops_the_launcher_as_that_signal_would() -> None:
    script = (
        "import signal; from azmlinfsrv import entry\n"
        "w = entry._Waiting(child=0); w.plan = b'{}'; w.stop_signal = signal.SIGTERM\n"
        "entry._become(w)\n"
        "print('still running')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGTERM
    assert b"still running" not in done.stdout


def test_the_launcher_forwards_a_stop_signal_to_the_parsing_child() -> None:
    # The parent (the pid a container runtime knows) gets SIGTERM while the child still parses: the child must
    # get it too, and nothing may start.
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from azmlinfsrv import entry
        read_fd, write_fd = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read_fd)
            time.sleep(30)
            os._exit(0)
        os.close(write_fd)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
        started = time.monotonic()
        waiting = entry._wait_for_plan(child, read_fd)
        in_time = time.monotonic() - started < LIMIT
        print(waiting.stop_signal == signal.SIGTERM, waiting.status == -signal.SIGTERM, in_time)
        """
    )
    # SIGTERM comes at 0.3 s; a child that never got it would sleep its 30 s.
    script = script.replace("LIMIT", repr(time_limit(0.3, 0.0, failure=30.0, budget=2.0)))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=False)
    assert done.stdout.split() == [b"True", b"True", b"True"], done.stderr
