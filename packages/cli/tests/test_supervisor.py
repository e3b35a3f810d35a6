"""The waitress supervisor with stand-in children: boot failures, crashes, the crash-loop cap, stop, port in use."""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azmlinfsrv.servers import supervisor
from azmlinfsrv.servers.supervisor import CrashPolicy
from azmlinfsrv.servers.supervisor import Supervisor
from azmlinfsrv_testing.timing import time_budget

# A child that follows a plan, one step per start: "fail:N" exits with N before booting, "crash:N" boots then
# exits with N, "kill:N" boots then dies of signal N, "serve" boots and exits 0 once the supervisor stops.
FAKE_CHILD = """
import json, os, sys
from azmlinfsrv.servers.supervisor import receive_handoff

handoff = receive_handoff()
folder = sys.argv[1]
plan = json.loads(sys.argv[2])
started = len(os.listdir(folder))
with open(os.path.join(folder, f"start{started}"), "w") as record:
    json.dump({"pid": os.getpid(), "dead": handoff.dead}, record)
action, _, arg = plan[min(started, len(plan) - 1)].partition(":")
if action == "fail":
    os._exit(int(arg))
if action == "serve":
    handoff.announce_booted(on_supervisor_gone=lambda: os._exit(0))
    open(os.path.join(folder, "booted"), "w").close()
    import time
    time.sleep(60)
    os._exit(9)
handoff.announce_booted(on_supervisor_gone=lambda: None)
if action == "crash":
    os._exit(int(arg))
os.kill(os.getpid(), int(arg))
"""

FAST = CrashPolicy(max_restarts=3, window=60.0, first_delay=0.01, max_delay=0.05)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """The supervisor's log records, whatever logging config other tests applied."""
    seen: list[logging.LogRecord] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = ListHandler(logging.INFO)
    logger = logging.getLogger("azmlinfsrv")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def make(tmp_path: Path, *plan: str, policy: CrashPolicy = FAST) -> Supervisor:
    script = tmp_path / "child.py"
    script.write_text(FAKE_CHILD)
    starts = tmp_path / "starts"
    starts.mkdir()
    return Supervisor([sys.executable, str(script), str(starts), json.dumps(list(plan))], {"host": "x"}, [], policy)


def messages(records: list[logging.LogRecord], level: int) -> list[str]:
    return [r.getMessage() for r in records if r.levelno == level]


def test_supervisor_boot_failure_exits_with_the_childs_code(tmp_path: Path, records: list[logging.LogRecord]) -> None:
    sup = make(tmp_path, "fail:3")
    assert sup.run() == 3
    assert sup.children_started == 1
    assert messages(records, logging.WARNING) == []


def test_supervisor_restarts_a_crash_after_boot_and_passes_a_later_boot_failure_on(
    tmp_path: Path, records: list[logging.LogRecord]
) -> None:
    # Crashes right after announcing: the announcement and the death reach the supervisor together.
    sup = make(tmp_path, "crash:3", "fail:3")
    assert sup.run() == 3
    assert sup.children_started == 2
    first, second = (json.loads((tmp_path / "starts" / f"start{n}").read_text()) for n in (0, 1))
    assert first["dead"] == [] and second["dead"] == [first["pid"]]  # so that it can clear the first one's metrics
    [warning] = messages(records, logging.WARNING)
    assert "exited with code 3 after it had booted; starting a new one in 0.0 s (restart 1 of at most 3" in warning


def test_supervisor_stops_after_too_many_crashes(tmp_path: Path, records: list[logging.LogRecord]) -> None:
    sup = make(tmp_path, "crash:5")
    started = time.monotonic()
    assert sup.run() == 5
    assert time.monotonic() - started < time_budget(20.0)
    assert sup.children_started == 4  # the first child and three restarts
    assert len(messages(records, logging.WARNING)) == 3
    [error] = messages(records, logging.ERROR)
    assert "exited with code 5: 4 crashes within 60 s. Stopping the server" in error


def test_supervisor_crash_count_forgets_old_crashes(tmp_path: Path) -> None:
    # A window too short to hold two crashes: the cap is never reached, the later boot failure ends it.
    policy = CrashPolicy(max_restarts=1, window=0.001, first_delay=0.01, max_delay=0.01)
    sup = make(tmp_path, "crash:5", "crash:5", "crash:5", "crash:5", "crash:5", "fail:4", policy=policy)
    assert sup.run() == 4
    assert sup.children_started == 6


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_supervisor_reports_a_child_killed_by_a_signal(tmp_path: Path, records: list[logging.LogRecord]) -> None:
    sup = make(tmp_path, f"kill:{int(signal.SIGKILL)}", policy=CrashPolicy(max_restarts=0))
    assert sup.run() == 128 + signal.SIGKILL
    [error] = messages(records, logging.ERROR)
    assert "was killed by SIGKILL (9)" in error


def test_supervisor_stop_reaches_a_booted_child(tmp_path: Path) -> None:
    sup = make(tmp_path, "serve")
    booted = tmp_path / "starts" / "booted"

    def stop_once_booted() -> None:
        deadline = time.monotonic() + 30
        while not booted.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        sup.request_stop(signal.SIGTERM)

    thread = threading.Thread(target=stop_once_booted)
    thread.start()
    try:
        assert sup.run() == 0
    finally:
        thread.join()
    assert sup.children_started == 1


def test_supervise_reports_a_port_in_use_without_starting_a_child(records: list[logging.LogRecord]) -> None:
    if sys.platform == "win32":
        pytest.skip("on Windows the child binds the port itself")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = {"host": "127.0.0.1", "port": port, "health_port": None}
        assert supervisor.supervise(settings) == 1
    [error] = messages(records, logging.ERROR)
    assert error.startswith(f"Cannot listen on 127.0.0.1:{port}: ")
    assert "choose a free port with --port" in error


def test_listen_addresses_puts_a_separate_health_port_first() -> None:
    assert supervisor.listen_addresses({"host": "h", "port": 1, "health_port": None}) == [("h", 1)]
    assert supervisor.listen_addresses({"host": "h", "port": 1, "health_port": 1}) == [("h", 1)]
    assert supervisor.listen_addresses({"host": "h", "port": 1, "health_port": 2}) == [("h", 2), ("h", 1)]


def test_crash_policy_backs_off_up_to_its_limit() -> None:
    policy = CrashPolicy(first_delay=0.1, max_delay=1.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
