"""SCORING_TIMEOUT_MS and run() concurrency, in-process (the runner is the same in every worker model)."""

from __future__ import annotations

import threading
import time

import pytest
from azmlinfsrv_testing.timing import latency
from azmlinfsrv_testing.timing import time_limit
from core_helpers import MakeClient

from azureml_inference_server_http.exceptions import UserScriptTimeout
from azureml_inference_server_http.server.scoring import AnsweredTimeout
from azureml_inference_server_http.server.scoring import ScoringRunner

SLEEPY = """
import time
def init(): pass
def run(data):
    time.sleep(float(data))
    return "done"
"""


def test_timeout_answers_on_time_with_upstream_message(client: MakeClient) -> None:
    app = client(SLEEPY, env={"SCORING_TIMEOUT_MS": "200"})
    baseline = latency(lambda: app.post("/score", data="0"))
    started = time.monotonic()
    response = app.post("/score", data="2")
    elapsed = time.monotonic() - started
    assert response.status_code == 500
    assert response.get_json() == {"message": "Scoring timeout after 200 ms"}
    assert response.headers["x-ms-run-function-failed"] == "True"
    # Not before the deadline, and well before the 2 s run() would have ended.
    assert 0.2 <= elapsed < time_limit(0.2, baseline, failure=2.0), (elapsed, baseline)
    # Capacity is back at once: the next call runs on a fresh runner.
    assert app.post("/score", data="0").get_json() == "done"


def test_timeout_stops_python_loops(client: MakeClient) -> None:
    source = """
import threading
state = {"iterations": 0, "stopped": False}
def init(): pass
def run(data):
    if data == "status":
        return state
    try:
        while True:
            state["iterations"] += 1
    except BaseException:
        state["stopped"] = True
        raise
"""
    app = client(source, env={"SCORING_TIMEOUT_MS": "100"})
    assert app.post("/score", data="spin").status_code == 500
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not app.post("/score", data="status").get_json()["stopped"]:
        time.sleep(0.05)
    assert app.post("/score", data="status").get_json()["stopped"] is True


def test_timeout_error_from_user_code_reported_as_timeout(client: MakeClient) -> None:
    source = "def init(): pass\ndef run(data):\n    raise TimeoutError('socket')\n"
    response = client(source, env={"SCORING_TIMEOUT_MS": "5000"}).post("/score")
    assert response.get_json() == {"message": "Scoring timeout after 5000 ms"}


def test_timeout_zero_disables(client: MakeClient) -> None:
    assert client(SLEEPY, env={"SCORING_TIMEOUT_MS": "0"}).post("/score", data="0.3").get_json() == "done"


def test_flask_request_visible_in_runner_thread(client: MakeClient) -> None:
    source = """
from azureml_inference_server_http.api.aml_request import rawhttp
import flask
def init(): pass
@rawhttp
def run(request):
    return {"same": flask.request.path, "arg": request.args.get("x")}
"""
    response = client(source, env={"SCORING_TIMEOUT_MS": "5000"}).get("/score?x=1")
    assert response.get_json() == {"same": "/score", "arg": "1"}


def test_runner_limits_concurrency() -> None:
    runner = ScoringRunner(concurrency=2, timeout_ms=5000)
    active = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1

    def request() -> None:
        runner.acquire()
        try:
            runner.call(work, {})
        finally:
            runner.release()

    threads = [threading.Thread(target=request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert peak == 2
    runner.close()


def test_runner_reports_stuck_calls() -> None:
    stuck: list[int] = []
    runner = ScoringRunner(concurrency=1, timeout_ms=50, on_stuck=stuck.append, stuck_grace=0.1)
    release = threading.Event()
    with pytest.raises(UserScriptTimeout):
        runner.call(release.wait, {"timeout": 5})  # a blocking C call: the injected exception cannot land
    deadline = time.monotonic() + 3
    while not stuck and time.monotonic() < deadline:
        time.sleep(0.02)
    release.set()
    assert stuck == [1]
    runner.close()


def test_threads_setting_runs_calls_concurrently(client: MakeClient) -> None:
    app = client(SLEEPY, env={"WORKER_THREADS": "4", "SCORING_TIMEOUT_MS": "5000"})
    results: list[int] = []

    def call() -> None:
        results.append(app.application.test_client().post("/score", data="0.3").status_code)

    single = latency(call, samples=1)  # one call alone, on this machine now
    results.clear()
    started = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    elapsed = time.monotonic() - started
    assert results == [200] * 4
    # Four calls in a row would take 4 * single; concurrently, about one.
    assert elapsed < 2 * single, (elapsed, single)


def test_inline_call_answered_by_watchdog_at_deadline() -> None:
    runner = ScoringRunner(concurrency=1, timeout_ms=200)
    answered: list[float] = []
    started = time.monotonic()
    runner.acquire()
    with pytest.raises(AnsweredTimeout):
        runner.call_inline(
            lambda secs: time.sleep(secs), {"secs": 0.8}, lambda: answered.append(time.monotonic() - started)
        )
    assert len(answered) == 1
    # Answered at the deadline, while the call was still blocked (it sleeps 0.8 s).
    assert 0.2 <= answered[0] < time_limit(0.2, 0.0, failure=0.8), answered
    # The watchdog freed the slot: it can be taken again without a release by the caller.
    assert runner._slots.acquire(timeout=1)
    runner.release()
    runner.close()


def test_inline_call_returns_normally_before_deadline() -> None:
    runner = ScoringRunner(concurrency=1, timeout_ms=2000)
    answered: list[int] = []
    runner.acquire()
    assert runner.call_inline(lambda x: x * 2, {"x": 21}, lambda: answered.append(1)) == 42
    runner.release()
    time.sleep(0.05)
    assert answered == []
    with pytest.raises(ZeroDivisionError):
        runner.call_inline(lambda: 1 / 0, {}, lambda: answered.append(1))
    runner.close()


def test_inline_call_stops_python_loop() -> None:
    runner = ScoringRunner(concurrency=1, timeout_ms=100)
    state = {"stopped": False}

    def spin() -> None:
        try:
            while True:
                pass
        finally:
            state["stopped"] = True

    runner.acquire()
    started = time.monotonic()
    with pytest.raises(AnsweredTimeout):
        runner.call_inline(spin, {}, lambda: None)
    assert state["stopped"]
    assert time.monotonic() - started < time_limit(0.1, 0.0, budget=0.9)
    assert runner.stuck == 0
    runner.close()


def test_watchdog_forgets_finished_calls_behind_a_long_one() -> None:
    runner = ScoringRunner(concurrency=2, timeout_ms=3_600_000)
    release = threading.Event()
    runner.acquire()
    long_call = threading.Thread(target=runner.call_inline, args=(lambda: release.wait(10), {}, lambda: None))
    long_call.start()
    time.sleep(0.05)
    for n in range(2000):
        runner.acquire()
        assert runner.call_inline(lambda n: n, {"n": n}, lambda: None) == n
        runner.release()
    heap = runner._watchdog()._heap
    assert len(heap) < 300  # the long call's entry and at most one purge interval of finished ones
    release.set()
    long_call.join(5)
    runner.close()
