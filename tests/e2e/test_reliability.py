"""Timeouts, probes, limits, crashes and drain, in every worker model (R1 to R6 of docs/guarantees.md)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import sys
import threading
import time

import psutil
import pytest
import requests
from azmlinfsrv_testing import ServerProcess
from azmlinfsrv_testing import latency
from azmlinfsrv_testing import time_budget
from azmlinfsrv_testing import time_limit
from conftest import Launcher

pytestmark = pytest.mark.e2e
# run() sleeps this long in the timeout tests: a timeout that were not enforced would answer after it.
FULL_RUN = 5.0


def _plain(server: ServerProcess) -> float:
    """The latency of a ``run()`` that returns at once, on this server under this load."""
    return latency(lambda: requests.post(server.url + "/score", data="0", timeout=30))


def test_scoring_timeout_holds(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "sleep_score.py", env={"SCORING_TIMEOUT_MS": "1000"}, model=server_model)
    baseline = _plain(server)
    started = time.monotonic()
    response = requests.post(server.url + "/score", data=str(FULL_RUN), timeout=30)
    elapsed = time.monotonic() - started
    assert response.status_code == 500
    assert response.json() == {"message": "Scoring timeout after 1000 ms"}
    assert response.headers["x-ms-run-function-failed"] == "True"
    assert 1.0 <= elapsed < time_limit(1.0, baseline, failure=FULL_RUN), (elapsed, baseline)
    # Capacity restored: the next request is served at once.
    assert requests.post(server.url + "/score", data="0", timeout=5).status_code == 200


def test_scoring_timeout_stops_busy_python_loop(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "sleep_score.py", env={"SCORING_TIMEOUT_MS": "500"}, model=server_model)
    baseline = _plain(server)
    started = time.monotonic()
    assert requests.post(server.url + "/score", data="spin", timeout=40).status_code == 500
    elapsed = time.monotonic() - started
    # The loop itself would spin for 30 s.
    assert elapsed < time_limit(0.5, baseline, failure=FULL_RUN), (elapsed, baseline)
    # The spinning call was interrupted, so it does not starve the next one of the GIL.
    started = time.monotonic()
    assert requests.post(server.url + "/score", data="0", timeout=10).status_code == 200
    elapsed = time.monotonic() - started
    assert elapsed < time_limit(baseline, baseline, failure=FULL_RUN, budget=1.0), (elapsed, baseline)


def test_worker_timeout_does_not_cut_allowed_run(launch: Launcher) -> None:
    server = launch("--entry_script", "sleep_score.py", env={"SCORING_TIMEOUT_MS": "10000", "WORKER_TIMEOUT": "1"})
    response = requests.post(server.url + "/score", data="3", timeout=15)
    assert response.status_code == 200


def test_liveness_while_run_is_busy(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "sleep_score.py", model=server_model)
    baseline = latency(lambda: requests.get(server.url + "/health/live", timeout=30))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        busy = pool.submit(requests.post, server.url + "/score", data=str(FULL_RUN), timeout=30)
        time.sleep(0.3)
        busy_since = time.monotonic()
        for path in ("/", "/health/live", "/health/ready"):
            started = time.monotonic()
            assert requests.get(server.url + path, timeout=FULL_RUN * 2).status_code == 200
            elapsed = time.monotonic() - started
            # A probe queued behind run() would answer when run() ends, FULL_RUN after it began.
            failure = FULL_RUN - (started - busy_since) - 0.3
            assert elapsed < time_limit(baseline, baseline, failure=failure, budget=1.0), (path, elapsed, baseline)
        assert not busy.done()  # the probes really ran while run() was busy
        assert busy.result().status_code == 200


def _trickle(port: int, stop: threading.Event, sent: list[int]) -> None:
    """A slowloris client: a request head sent one byte at a time, never completed before ``stop`` is set."""
    head = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + b"X-Pad: " + b"a" * 200
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for byte in head:
            if stop.is_set():
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return  # the server gave up on us: fine, as long as it kept serving the others
            sent[0] += 1
            time.sleep(0.25)


def test_slow_clients_do_not_starve_probes_or_scoring(launch: Launcher, server_model: str) -> None:
    """R5: more trickling clients than threads and workers; probes answer about as fast as before the attack (a
    starved probe would wait for its 5 s timeout) and every request succeeds."""
    server = launch("--entry_script", "sleep_score.py", model=server_model)
    port = int(server.url.rsplit(":", 1)[1])
    clients = 24
    probes = (("get", "/"), ("get", "/health/live"), ("post", "/score"))
    with requests.Session() as session:
        baseline = max(
            latency(lambda: session.request(method, server.url + path, data="0", timeout=30)) for method, path in probes
        )
    stop = threading.Event()
    sent = [0]
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        attack_started = time.monotonic()
        attackers = [pool.submit(_trickle, port, stop, sent) for _ in range(clients)]
        time.sleep(1.0)  # every slow connection is open and has sent a few bytes
        worst = 0.0
        try:
            with requests.Session() as session:
                for _ in range(10):
                    for method, path in probes:
                        started = time.monotonic()
                        response = session.request(method, server.url + path, data="0", timeout=5)
                        worst = max(worst, time.monotonic() - started)
                        assert response.status_code == 200, (path, response.text)
            assert worst < time_limit(baseline, baseline, failure=5.0, budget=1.0), (worst, baseline)
            # The slow clients trickle for at least 5 s, whatever the probes took: enough bytes to count below.
            time.sleep(max(0.0, attack_started + 5.0 - time.monotonic()))
        finally:
            stop.set()  # the probes above all ran while the attack was on
        for attacker in attackers:
            attacker.result()
    assert sent[0] > clients * 10  # the slow clients really were trickling


def test_concurrent_requests_spread_over_idle_workers(launch: Launcher, server_model: str) -> None:
    """With one run() slot per worker, concurrent requests on new connections run on different workers, so they
    take as long as one request, not as two in a row."""
    server = launch("--entry_script", "sleep_score.py", "--worker_count", "2", model=server_model)
    if server_model != "waitress":  # waitress is one process with two slots
        # Both workers booted: a worker still importing the app cannot take a connection.
        pids: set[int] = set()
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                answers = pool.map(lambda _: requests.post(server.url + "/score", data="0.2", timeout=10), range(2))
                pids.update(answer.json()["pid"] for answer in answers)
        assert len(pids) == 2, pids
    for _ in range(3):
        # One request alone, right before: what "as long as one request" means on this machine now.
        single = latency(lambda: requests.post(server.url + "/score", data="1", timeout=30), samples=1)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: requests.post(server.url + "/score", data="1", timeout=30), range(2)))
        elapsed = time.monotonic() - started
        assert [a.status_code for a in answers] == [200, 200]
        # Midway between one request (in parallel) and two in a row (2 * single).
        assert elapsed < 1.5 * single, (elapsed, single)


def test_readiness_during_slow_init(launch: Launcher) -> None:
    server = launch("--entry_script", "slow_init.py", env={"INIT_SECONDS": "4"}, wait=False)
    server.wait_healthy(path="/health/live", timeout=20)
    ready = requests.get(server.url + "/health/ready", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["phase"] == "initializing"
    assert requests.get(server.url + "/health/live", timeout=5).status_code == 200
    # Upstream's GET / answers once init() has completed, as it did from the accept queue.
    assert requests.get(server.url + "/", timeout=15).text == "Healthy"
    assert requests.get(server.url + "/health/ready", timeout=5).status_code == 200


def _sessions_on_two_workers(url: str) -> tuple[requests.Session, requests.Session]:
    """Two keep-alive sessions whose connections were accepted by different worker processes."""
    by_pid: dict[int, requests.Session] = {}
    deadline = time.monotonic() + 10
    while len(by_pid) < 2 and time.monotonic() < deadline:
        session = requests.Session()
        pid = session.post(url + "/score", data="0", timeout=10).json()["pid"]
        if pid in by_pid:
            session.close()
        else:
            by_pid[pid] = session
    assert len(by_pid) == 2, by_pid
    first, second = by_pid.values()
    return first, second


def test_os_exit_in_run_does_not_stop_server(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "sleep_score.py", "--worker_count", "2", model=server_model)
    if server_model == "waitress":
        # One process serves everything, so requests in flight when it dies are lost with it (docs/reliability.md,
        # Known limits); the supervisor starts a new process.
        crashing, bystander = requests.Session(), None
    else:
        bystander, crashing = _sessions_on_two_workers(server.url)
    baseline = latency(lambda: crashing.post(server.url + "/score", data="0", timeout=30))
    crashed_pid = crashing.post(server.url + "/score", data="0", timeout=10).json()["pid"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(bystander.post, server.url + "/score", data="1", timeout=10) if bystander else None
        time.sleep(0.2)
        started = time.monotonic()
        try:
            response = crashing.post(server.url + "/score", data="exit", timeout=10)
        except requests.ConnectionError:
            pass
        else:
            assert response.status_code >= 500, response.text
        elapsed = time.monotonic() - started
        # A crash nobody notices leaves the client waiting for its 10 s timeout.
        assert elapsed < time_limit(baseline, baseline, failure=10.0, budget=1.0), (elapsed, baseline)
        if in_flight is not None:
            assert in_flight.result().status_code == 200
    server.wait_healthy(timeout=15)
    after = requests.post(server.url + "/score", data="0", timeout=10)
    assert after.status_code == 200
    if server_model == "waitress":
        assert after.json()["pid"] != crashed_pid
        assert f"Worker with pid {crashed_pid} exited with code 3 after it had booted" in server.logs()
        assert server.stdout().count("Azure ML Inferencing HTTP server v") == 1  # the banner is not repeated
        # The request that died with the process no longer counts as in flight.
        assert "azmlinfsrv_requests_in_flight 0.0" in requests.get(server.url + "/metrics", timeout=10).text
    assert server.process.poll() is None
    for session in (crashing, bystander):
        if session is not None:
            session.close()


def test_sigterm_drains_in_flight_requests(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "sleep_score.py", "--threads", "4", model=server_model)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(requests.post, server.url + "/score", data="2", timeout=20) for _ in range(4)]
        time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        results = [future.result() for future in futures]
    assert [r.status_code for r in results] == [200] * 4
    assert server.wait(15) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/", timeout=2)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_signal_handlers_installed_while_loading_take_effect(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "signal_score.py", model=server_model)
    pid = requests.post(server.url + "/score", timeout=10).json()["pid"]
    time.sleep(1.2)  # gunicorn applies them within a heartbeat
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    received: list[int] = []
    while time.monotonic() < deadline and not received:
        received = requests.post(server.url + "/score", timeout=10).json()["received"]
        time.sleep(0.1)
    assert received == [int(signal.SIGUSR1)]


def test_a_finished_request_is_freed_without_the_garbage_collector(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "release_score.py", model=server_model)
    with requests.Session() as session:  # the same keep-alive connection, as load generators use
        first = session.post(server.url + "/score", json={"x": "y" * 100_000}, timeout=10)
        assert first.json() == {"previous_alive": False}
        for _ in range(3):
            time.sleep(0.2)  # the worker lets go of the request after the response is out
            later = session.post(server.url + "/score", json={"x": "y" * 100_000}, timeout=10)
            assert later.json() == {"previous_alive": False}


def _session_members(sid: int) -> list[int]:
    """Pids whose session is ``sid``: what is left of a server started with start_new_session.

    Workers whose supervisor died are re-parented, so the session, not the process tree, finds them.
    """
    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (OSError, psutil.Error):
            continue  # exited meanwhile, or not ours to look at
    return members


posix_sessions = pytest.mark.skipif(sys.platform == "win32", reason="POSIX sessions")


@posix_sessions
def test_sigterm_to_the_started_pid_alone_stops_the_whole_server(launch: Launcher, server_model: str) -> None:
    # A container runtime signals the pid it started, not a group: that pid must be the server's supervisor.
    server = launch("--entry_script", "valid_score.py", "--worker_count", "2", model=server_model)
    os.kill(server.process.pid, signal.SIGTERM)
    assert server.wait(20) == 0
    assert _session_members(server.process.pid) == []


@posix_sessions
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3])
def test_sigterm_during_start_up_leaves_nothing_behind(launch: Launcher, delay: float) -> None:
    # While the command line is still being read, SIGTERM to the started pid must stop it, with no process left
    # over and no server coming up behind the caller's back.
    server = launch("--entry_script", "valid_score.py", wait=False)
    time.sleep(delay)
    os.kill(server.process.pid, signal.SIGTERM)
    code = server.wait(20)
    assert code in (0, -signal.SIGTERM), server.logs()
    time.sleep(0.5)
    assert _session_members(server.process.pid) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/", timeout=2)


def test_new_connections_refused_while_draining(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "sleep_score.py", model=server_model)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(requests.post, server.url + "/score", data="5", timeout=30)
        time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        # The listener closes soon after the signal, however loaded the machine, and well before the 5 s run() ends:
        # from then on new connections are refused while the request in flight is still being served.
        deadline = time.monotonic() + min(time_budget(1.0), 3.5)
        while True:
            try:
                requests.get(server.url + "/health/live", timeout=2)
            except requests.ConnectionError:
                break
            assert time.monotonic() < deadline, "new connections were still accepted after SIGTERM"
            time.sleep(0.05)
        assert not busy.done(), "the request in flight ended before the listener closed: nothing was drained"
        assert busy.result().status_code == 200
    assert server.wait(15) == 0


def test_body_limit(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "valid_score.py", "--max_request_body_mb", "1", model=server_model)
    limit = 1024 * 1024
    baseline = latency(lambda: requests.post(server.url + "/score", data="x", timeout=30))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (50 * limit))
        data = b""
        while b"exceeds the limit" not in data and b"exceeds max_body" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 413"), data
        assert b'{"message": ' in data
        elapsed = time.monotonic() - started
        # A server waiting for the 50 MB never sent would leave recv() to its 5 s timeout.
        assert elapsed < time_limit(baseline, baseline, failure=5.0, budget=1.0), (elapsed, baseline)
    assert requests.post(server.url + "/score", data=b"x" * limit, timeout=10).status_code == 200

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(3):
            yield b"y" * (limit // 2)

    response = requests.post(server.url + "/score", data=chunks(), timeout=10)
    assert response.status_code == 413


def test_metrics_across_workers(launch: Launcher) -> None:
    server = launch("--entry_script", "valid_score.py", "--worker_count", "2")
    for _ in range(3):
        assert requests.post(server.url + "/score", data="x", timeout=10).status_code == 200
    for _ in range(4):  # whichever worker answers the scrape sees every worker's counts
        response = requests.get(server.url + "/metrics", timeout=10)
        assert response.status_code == 200
        assert 'azmlinfsrv_requests_total{method="POST",route="/score",status="200"} 3.0' in response.text, (
            response.text + server.logs()
        )


def test_reload_picks_up_edits_and_keeps_last_good_version(launch: Launcher, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "score.py"
    script.write_text("def init(): pass\ndef run(data): return 'v1'\n")
    server = launch("--entry_script", "score.py", "--reload", cwd=tmp_path)
    assert requests.post(server.url + "/score", timeout=10).json() == "v1"

    def wait_for(expected: str) -> str:
        deadline = time.monotonic() + 15
        answer = ""
        while time.monotonic() < deadline:
            answer = requests.post(server.url + "/score", timeout=10).json()
            if answer == expected:
                break
            time.sleep(0.2)
        return answer

    time.sleep(0.5)  # the watcher starts after init()
    script.write_text("def init(): pass\ndef run(data): return 'v2'\n")
    assert wait_for("v2") == "v2"
    script.write_text("def init():\n    raise RuntimeError('broken edit')\ndef run(data): return 'v3'\n")
    deadline = time.monotonic() + 15
    while "Reload failed" not in server.stdout() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Reload failed" in server.stdout()
    assert requests.post(server.url + "/score", timeout=10).json() == "v2"
    assert server.process.poll() is None


def _hammer(url: str, clients: int, seconds: float, max_requests: int) -> tuple[int, list[str]]:
    """Send unique bodies from ``clients`` threads; return the count and every problem seen."""
    deadline = time.monotonic() + seconds
    problems: list[str] = []
    counter = iter(range(max_requests))

    def client(worker: int) -> int:
        done = 0
        with requests.Session() as session:
            while time.monotonic() < deadline:
                try:
                    n = next(counter)
                except StopIteration:
                    break
                body = f"{worker}-{n}"
                try:
                    response = session.post(url + "/score", data=body, headers={"x-request-id": body}, timeout=10)
                except requests.RequestException as exc:
                    problems.append(f"{body}: {exc}")
                    continue
                if response.status_code != 200:
                    problems.append(f"{body}: {response.status_code}")
                elif response.json()["body"] != body or response.headers["x-request-id"] != body:
                    problems.append(f"{body}: mixed up with {response.json()['body']}")
                done += 1
        return done

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(client, range(clients)))
    return total, problems


def test_sustained_load_loses_and_mixes_nothing(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "valid_score.py", "--worker_count", "2", model=server_model)
    total, problems = _hammer(server.url, clients=16, seconds=5, max_requests=20_000)
    assert problems == []
    assert total > 100
    assert "Traceback" not in server.logs()


def test_worker_recycling_loses_nothing(launch: Launcher) -> None:
    server = launch("--entry_script", "valid_score.py", "--worker_count", "2", env={"AZMLINFSRV_MAX_REQUESTS": "25"})
    # 8 s are plenty for 300 requests on an idle machine; a loaded one gets proportionally longer.
    total, problems = _hammer(server.url, clients=4, seconds=time_budget(8.0), max_requests=300)
    assert problems == []
    assert total == 300
    assert server.stderr().count("Booting worker") > 2  # workers really were recycled
