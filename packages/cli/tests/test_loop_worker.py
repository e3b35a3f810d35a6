"""The event-loop worker's module-level contract: what the gunicorn master loads, and the shared load board."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(os.name == "nt", reason="gunicorn serves Linux and macOS only")


def test_the_gunicorn_master_does_not_load_flask() -> None:
    """The master imports the worker class; Flask in the master would sit in every forked worker's memory."""
    code = (
        "import sys, azmlinfsrv.servers.gunicorn; print(sorted(m for m in ('flask', 'werkzeug') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_environ_keys_match_the_core() -> None:
    from azmlinfsrv.servers import loop_worker
    from azureml_inference_server_http.server import app
    from azureml_inference_server_http.server import scoring

    assert loop_worker.CLOSE_CONNECTION_KEY == app.CLOSE_CONNECTION_KEY
    assert loop_worker.STATE_KEY == app.STATE_KEY
    assert loop_worker.SLOT_LEASE_KEY == scoring.SLOT_LEASE_KEY


def test_load_board_least_connections_among_live_workers() -> None:
    from azmlinfsrv.servers.loop_worker import LoadBoard

    board = LoadBoard(4)
    first, second, third = board.claim(1), board.claim(2), board.claim(3)
    assert (first, second, third) == (0, 1, 2)
    board.set(first, 5)
    board.set(second, 2)
    board.set(third, 7)
    assert board.least_other(first) == 2
    assert board.least_other(second) == 5
    board.release(2)  # a dead worker no longer counts, and its slot is reused
    assert board.least_other(first) == 7
    assert board.claim(4) == 1
    assert board.least_other(first) == 0
    lone = LoadBoard(2)
    assert lone.least_other(lone.claim(1) or 0) is None


def test_load_board_is_shared_with_forked_workers() -> None:
    # In a fresh single-threaded interpreter: forking a process that runs threads (as pytest may) is unsafe.
    code = """
import os
from azmlinfsrv.servers.loop_worker import LoadBoard
board = LoadBoard(2)
slot, other = board.claim(1), board.claim(2)
pid = os.fork()
if pid == 0:  # the worker publishes its count
    board.set(slot, 42)
    os._exit(0)
os.waitpid(pid, 0)
print(board.least_other(other))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "42"


def test_the_loop_is_woken_the_moment_init_settles() -> None:
    """Requests that arrived during init() wait in the loop; the end of init() must wake it (a byte on its wake
    pipe), not leave them to the main thread's next tick."""
    import select
    import threading

    from azmlinfsrv.servers.loop_worker import EventLoopWorker

    worker = EventLoopWorker.__new__(EventLoopWorker)  # only the two attributes the waiter uses
    worker._settled_event = threading.Event()
    worker._wake_r, worker._wake_w = os.pipe()
    try:
        waiter = threading.Thread(target=worker._wake_when_settled, daemon=True)
        waiter.start()
        assert select.select([worker._wake_r], [], [], 0.2)[0] == []  # nothing before init() ends
        worker._settled_event.set()
        waiter.join(5)
        assert not waiter.is_alive()
        assert select.select([worker._wake_r], [], [], 5)[0] == [worker._wake_r]
        assert os.read(worker._wake_r, 16) == b"\0"
    finally:
        os.close(worker._wake_r)
        os.close(worker._wake_w)
