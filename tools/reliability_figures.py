"""Reliability figures of our server next to upstream 1.5.1's, written into docs/reliability.md.

Run through ``nox -s reliability`` (quick) or ``nox -s reliability -- --long``. For each server model (upstream
1.5.1 under gunicorn sync workers; ours under gunicorn with one run() thread, with ``--threads 4``, and under
waitress) real servers are started on 127.0.0.1 with the score script ``tools/reliability_scripts/behaviours.py``
and measured from the client side: start-up, the scoring timeout, liveness while run() is busy, the body limit,
SIGTERM with requests in flight, sustained load (docs/guarantees.md#r1), worker recycling (R19) and a crash in run().

Every server runs in its own process group and is stopped by that id (SIGTERM, then SIGKILL after a bound); every
loop is bounded in time and count. Only the section between the markers in docs/reliability.md is rewritten.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import functools
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import psutil
from azmlinfsrv_testing import start_server

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "reliability_scripts" / "behaviours.py"
DOC = ROOT / "docs" / "reliability.md"
UPSTREAM_VENV = ROOT / "tests" / "compat" / ".work" / "upstream-venv"
UPSTREAM_REQUIREMENT = "azureml-inference-server-http==1.5.1"
START_MARKER = "<!-- reliability-figures:start -->"
END_MARKER = "<!-- reliability-figures:end -->"
HOST = "127.0.0.1"
START_BOUND_S = 60.0
STOP_BOUND_S = 15.0
NOT_APPLICABLE = "—"
VERSION_OF = "import importlib.metadata as m; print(m.version({!r}))"


@dataclass(frozen=True)
class Mode:
    name: str
    clients: int
    load_seconds: float
    warmup_seconds: float
    recycle_requests: int
    recycle_seconds: float


QUICK = Mode("quick", clients=16, load_seconds=10.0, warmup_seconds=2.0, recycle_requests=300, recycle_seconds=20.0)
LONG = Mode("long", clients=64, load_seconds=60.0, warmup_seconds=10.0, recycle_requests=1500, recycle_seconds=60.0)


@dataclass(frozen=True)
class Column:
    """One server model: how to start it and what it offers."""

    key: str
    title: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ours: bool = True
    # Flags giving four run() calls at once, for the SIGTERM figure.
    four_at_once: tuple[str, ...] = ("--threads", "4")
    recycles: bool = True  # worker recycling (max requests) exists in this model
    forks_workers: bool = True  # gunicorn: a master and --worker_count worker processes

    def processes(self, args: tuple[str, ...]) -> int:
        """How many processes the server runs with ``args``."""
        if not self.forks_workers:
            return 1
        workers = int(args[args.index("--worker_count") + 1]) if "--worker_count" in args else 1
        return 1 + workers


@dataclass(frozen=True)
class Row:
    key: str
    label: str


ROWS = (
    Row("start_root", "start to first 200 on `GET /`"),
    Row("start_ready", "start to first 200 on `/health/ready`"),
    Row("timeout_sleep", "`SCORING_TIMEOUT_MS=1000`, `run()` sleeps 3 s: answer"),
    Row("timeout_sleep_next", "the next request after it"),
    Row("timeout_spin", "`SCORING_TIMEOUT_MS=1000`, `run()` spins 3 s (holding the GIL): answer"),
    Row("timeout_spin_next", "the next request after it"),
    Row("live_root_sleep", "slowest of 5 `GET /` while `run()` sleeps 3 s"),
    Row("live_live_sleep", "slowest of 5 `/health/live` while `run()` sleeps 3 s"),
    Row("live_root_spin", "slowest of 5 `GET /` while `run()` spins 3 s"),
    Row("live_live_spin", "slowest of 5 `/health/live` while `run()` spins 3 s"),
    Row("body_limit", "a request declaring `Content-Length` 200 MB (raw socket): answer"),
    Row("slowloris", "R5: 24 clients trickling request heads; slowest of 10 `GET /` and 10 `/score`"),
    Row("sigterm_done", "`SIGTERM` with 4 requests of 2 s in flight: answered 200"),
    Row("sigterm_slowest", "the slowest of those 4 answers (2 s if each had a run() slot of its own)"),
    Row("sigterm_exit", "then: exit code, time from `SIGTERM` to exit"),
    Row("load_total", "sustained load (R1), {clients} clients for {seconds} s: requests answered, rate"),
    Row("load_errors", "lost / mixed-up / unexpected 5xx / other status"),
    Row("load_latency", "latency p50 / p99 / max"),
    Row("load_rss", "RSS of the process tree after warm-up → at the end (growth)"),
    Row("load_fds", "open file descriptors of the server processes before → after"),
    Row("recycle", "recycling every 25 requests (R19), 4 clients: answered / lost, worker processes seen"),
    Row("crash_request", "`run()` calls `os._exit(3)`: that request"),
    Row("crash_after", "then: the server"),
)


# ---------------------------------------------------------------------------------------------------------------
# Processes


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (zombies included, as they still count as started)."""
    try:
        parent = psutil.Process(root)
        return [root, *(child.pid for child in parent.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _each(pids: list[int], measure: Callable[[psutil.Process], int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += measure(psutil.Process(pid))
        except psutil.Error:
            continue  # exited meanwhile
    return total


def rss_kib(pids: list[int]) -> int:
    return _each(pids, lambda process: int(process.memory_info().rss) // 1024)


def fd_count(pids: list[int]) -> int:
    return _each(pids, lambda process: int(process.num_fds()))


class Server:
    """One server process (and its workers) in its own process group, started by the testing package's launcher:
    the same environment policy (the caller's server settings are not inherited) and process-group stop as the
    tests. Upstream has no ``--host``; both are given ``AZMLINFSRV_HOST`` (upstream binds 0.0.0.0 whatever it is
    told) and only ever addressed on 127.0.0.1. The start is timed here, from the spawn, so the launcher does not
    wait for health."""

    def __init__(self, column: Column, log_dir: Path, name: str, args: tuple[str, ...], env: dict[str, str]) -> None:
        self.column = column
        self.started = time.monotonic()
        self.launched = start_server(
            ("--entry_script", str(SCRIPT), *column.args, *args),
            env={**dict(column.env), **env},
            cwd=SCRIPT.parent,
            log_dir=log_dir / f"{column.key}-{name}",
            command=[column.command],
            host_flag=False,
            wait=False,
        )
        self.process = self.launched.process
        self.port = self.launched.port
        self.log_path = Path(self.launched.log_path)
        RUNNING.append(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for(self, *paths: str, bound: float = START_BOUND_S) -> dict[str, float]:
        """Seconds from the start to the first 200 on each of ``paths``; those missing never answered 200 before
        the server exited or the bound passed."""
        deadline = self.started + bound
        seen: dict[str, float] = {}
        for _ in range(int(bound / 0.02) + 1):
            if time.monotonic() >= deadline or self.process.poll() is not None:
                break
            for path in paths:
                if path in seen:
                    continue
                try:
                    if get(self.port, path, timeout=1.0).status == 200:
                        seen[path] = time.monotonic() - self.started
                except (OSError, http.client.HTTPException):
                    pass
            if len(seen) == len(paths):
                break
            time.sleep(0.02)
        return seen

    def up(self) -> bool:
        return "/" in self.wait_for("/")

    def settle(self, processes: int, bound: float = 30.0, grace: float = 2.0) -> bool:
        """Wait until the server has all its processes, then ``grace`` seconds for the last ones to load the
        script: every worker should be serving before a figure that depends on several of them."""
        deadline = time.monotonic() + bound
        while len(process_tree(self.pid)) < processes:
            if time.monotonic() > deadline or self.process.poll() is not None:
                return False
            time.sleep(0.1)
        time.sleep(grace)
        return self.process.poll() is None

    def stop(self) -> None:
        # SIGTERM to the group, SIGKILL after the bound; workers orphaned by a dead master are still in the group.
        self.launched.stop(STOP_BOUND_S)
        if self in RUNNING:
            RUNNING.remove(self)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


RUNNING: list[Server] = []


@contextmanager
def server(
    column: Column, log_dir: Path, name: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Iterator[Server]:
    started = Server(column, log_dir, name, args, env or {})
    try:
        yield started
    finally:
        started.stop()


def stop_all(signum: int = 0, frame: object = None) -> None:
    for running in list(RUNNING):
        running.stop()
    if signum:
        sys.exit(128 + signum)


# ---------------------------------------------------------------------------------------------------------------
# HTTP


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Answer:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, data, time.monotonic() - started
        )
    finally:
        conn.close()


def get(port: int, path: str, timeout: float = 10.0) -> Answer:
    return request(port, "GET", path, timeout=timeout)


def score(port: int, op: str, timeout: float = 10.0, **fields: object) -> Answer:
    body = json.dumps({"op": op, **fields}).encode()
    return request(port, "POST", "/score", body, {"Content-Type": "application/json"}, timeout=timeout)


def ms(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def failure(exc: BaseException, seconds: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer in {ms(seconds)}"
    if isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, http.client.IncompleteRead)):
        return f"connection closed after {ms(seconds)}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused after {ms(seconds)}"
    return f"{type(exc).__name__} after {ms(seconds)}"


def timed(call: Callable[[], Answer]) -> str:
    """``call``'s outcome as a cell: status and time, or what went wrong."""
    started = time.monotonic()
    try:
        answer = call()
    except (OSError, http.client.HTTPException) as exc:
        return failure(exc, time.monotonic() - started)
    return f"{answer.status} after {ms(answer.seconds)}"


# ---------------------------------------------------------------------------------------------------------------
# Figures


def measure_startup(srv: Server, out: dict[str, str]) -> bool:
    seen = srv.wait_for("/", "/health/ready") if srv.column.ours else srv.wait_for("/")
    if srv.column.ours:
        out["start_ready"] = f"{seen['/health/ready']:.2f} s" if "/health/ready" in seen else "never"
    if "/" not in seen:
        out["start_root"] = f"not up after {START_BOUND_S:.0f} s"
        print(srv.log_tail(), file=sys.stderr)
        return False
    out["start_root"] = f"{seen['/']:.2f} s"
    return True


def measure_timeouts(column: Column, log_dir: Path, out: dict[str, str]) -> None:
    with server(column, log_dir, "timeout", env={"SCORING_TIMEOUT_MS": "1000"}) as srv:
        if not srv.up():
            out["timeout_sleep"] = "server did not start"
            return
        for op in ("sleep", "spin"):
            out[f"timeout_{op}"] = timed(functools.partial(score, srv.port, op, 10.0, seconds=3))
            out[f"timeout_{op}_next"] = timed(lambda: score(srv.port, "echo", timeout=10.0))


def measure_liveness(srv: Server, out: dict[str, str]) -> None:
    paths = {"root": "/", "live": "/health/live"} if srv.column.ours else {"root": "/"}
    for op in ("sleep", "spin"):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            busy = pool.submit(score, srv.port, op, 15.0, seconds=3)
            time.sleep(0.3)
            for name, path in paths.items():
                slowest = 0.0
                note = ""
                for _ in range(5):
                    started = time.monotonic()
                    try:
                        status = get(srv.port, path, timeout=10.0).status
                        if status != 200:
                            note = f" (a {status})"
                    except (OSError, http.client.HTTPException) as exc:
                        note = f" ({failure(exc, time.monotonic() - started)})"
                    slowest = max(slowest, time.monotonic() - started)
                out[f"live_{name}_{op}"] = ms(slowest) + note
            try:
                busy.result(timeout=20)
            except (OSError, http.client.HTTPException, concurrent.futures.TimeoutError):
                pass


def _trickle(port: int, stop: float) -> None:
    """A slowloris client: a request head one byte at a time, never finished before ``stop``."""
    head = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 200
    try:
        with socket.create_connection((HOST, port), timeout=5) as sock:
            for byte in head:
                if time.monotonic() >= stop:
                    return
                sock.sendall(bytes([byte]))
                time.sleep(0.25)
    except OSError:
        pass  # refused or cut by the server: what counts is whether the others were served


def measure_slowloris(srv: Server, out: dict[str, str]) -> None:
    clients = 24
    stop = time.monotonic() + 8.0
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(_trickle, srv.port, stop)
        time.sleep(1.0)
        slowest = 0.0
        failed = 0
        for _ in range(10):
            for call in (lambda: get(srv.port, "/", timeout=5.0), lambda: score(srv.port, "echo", timeout=5.0)):
                started = time.monotonic()
                try:
                    if call().status != 200:
                        failed += 1
                except (OSError, http.client.HTTPException):
                    failed += 1
                slowest = max(slowest, time.monotonic() - started)
        out["slowloris"] = ms(slowest) + (f" ({failed} of 20 failed)" if failed else "")


def measure_body_limit(srv: Server, out: dict[str, str]) -> None:
    declared = 200 * 1024 * 1024
    bound = 5.0
    with socket.create_connection((HOST, srv.port), timeout=bound) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        sock.sendall(b"Content-Length: %d\r\n\r\n" % declared)
        data = b""
        closed = False
        for _ in range(1000):
            remaining = started + bound - time.monotonic()
            if remaining <= 0 or b"\r\n" in data:
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
        elapsed = time.monotonic() - started
    if data.startswith(b"HTTP/"):
        status = data.split(b" ", 2)[1].decode(errors="replace")
        out["body_limit"] = f"{status} after {ms(elapsed)}"
    elif closed:
        out["body_limit"] = f"connection closed after {ms(elapsed)}"
    else:
        out["body_limit"] = f"no answer in {bound:.0f} s (waits for the body)"


def measure_sigterm(column: Column, log_dir: Path, out: dict[str, str]) -> None:
    with server(column, log_dir, "sigterm", args=column.four_at_once) as srv:
        if not srv.up() or not srv.settle(processes=column.processes(column.args + column.four_at_once)):
            out["sigterm_done"] = "server did not start"
            return
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(score, srv.port, "sleep", 20.0, seconds=2) for _ in range(4)]
            time.sleep(0.5)
            # What a container runtime does: the signal goes to the server's main process only.
            signalled = time.monotonic()
            os.kill(srv.pid, signal.SIGTERM)
            outcomes: list[str] = []
            slowest = 0.0
            for future in futures:
                try:
                    answer = future.result(timeout=30)
                    outcomes.append(str(answer.status))
                    slowest = max(slowest, answer.seconds)
                except (OSError, http.client.HTTPException) as exc:
                    outcomes.append(failure(exc, time.monotonic() - signalled))
                except concurrent.futures.TimeoutError:
                    outcomes.append("no answer")
        try:
            code = srv.process.wait(30)
            out["sigterm_exit"] = f"exit {code} after {time.monotonic() - signalled:.2f} s"
        except subprocess.TimeoutExpired:
            out["sigterm_exit"] = "still running 30 s after it"
        done = outcomes.count("200")
        others = sorted(set(outcome for outcome in outcomes if outcome != "200"))
        out["sigterm_done"] = f"{done} of 4" + (f" (others: {', '.join(others)})" if others else "")
        out["sigterm_done"] += f" (`{' '.join(column.args + column.four_at_once)}`)"
        if done:
            out["sigterm_slowest"] = f"{slowest:.2f} s"


@dataclass
class LoadResult:
    answered: int = 0
    lost: int = 0
    mixed: int = 0
    server_errors: int = 0
    other_status: int = 0
    latencies: list[float] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def problem(self, kind: str, text: str) -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) + 1)
            if len(self.examples) < 5:
                self.examples.append(text)


def hammer(port: int, clients: int, seconds: float, max_requests: int) -> LoadResult:
    """``clients`` threads send unique bodies and ids for ``seconds`` or ``max_requests`` in all."""
    result = LoadResult()
    counter = iter(range(max_requests))
    counter_lock = threading.Lock()
    started = time.monotonic()
    deadline = started + seconds

    def client(index: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10.0)
        latencies: list[float] = []
        try:
            while time.monotonic() < deadline:
                with counter_lock:
                    n = next(counter, None)
                if n is None:
                    break
                rid = f"c{index}-{n}-{uuid.uuid4().hex[:12]}"
                body = json.dumps({"op": "echo", "id": rid})
                sent = time.monotonic()
                try:
                    conn.request(
                        "POST", "/score", body=body, headers={"Content-Type": "application/json", "x-request-id": rid}
                    )
                    response = conn.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    result.problem("lost", f"{rid}: {type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.monotonic() - sent)
                if response.status >= 500:
                    result.problem("server_errors", f"{rid}: {response.status} {data[:200]!r}")
                    continue
                if response.status != 200:
                    result.problem("other_status", f"{rid}: {response.status} {data[:200]!r}")
                    continue
                try:
                    answer = json.loads(data)
                    echoed = answer["echo"]
                    pid = int(answer["pid"])
                except (ValueError, KeyError, TypeError):
                    result.problem("mixed", f"{rid}: unexpected body {data[:200]!r}")
                    continue
                if echoed != body or response.getheader("x-request-id") != rid:
                    result.problem("mixed", f"{rid}: got {echoed!r} / {response.getheader('x-request-id')}")
                    continue
                with result.lock:
                    result.answered += 1
                    result.pids.add(pid)
        finally:
            conn.close()
            with result.lock:
                result.latencies.extend(latencies)

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client, i) for i in range(clients)]:
            future.result()
    result.seconds = time.monotonic() - started
    return result


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def settle_fds(srv: Server, baseline: int, bound: float = 5.0) -> int:
    """The descriptor count once it is back to ``baseline``, or after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    count = fd_count(process_tree(srv.pid))
    while count > baseline and time.monotonic() < deadline:
        time.sleep(0.2)
        count = fd_count(process_tree(srv.pid))
    return count


def measure_load(srv: Server, mode: Mode, out: dict[str, str]) -> None:
    fds_before = fd_count(process_tree(srv.pid))
    samples: list[int] = []
    stop = threading.Event()

    def sampler() -> None:
        if stop.wait(mode.warmup_seconds):
            return
        for _ in range(int(mode.load_seconds) + 5):
            samples.append(rss_kib(process_tree(srv.pid)))
            if stop.wait(1.0):
                return

    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    result = hammer(srv.port, mode.clients, mode.load_seconds, max_requests=10_000_000)
    stop.set()
    watcher.join(5)
    samples.append(rss_kib(process_tree(srv.pid)))
    fds_after = settle_fds(srv, fds_before)
    rate = result.answered / result.seconds if result.seconds else 0.0
    out["load_total"] = f"{result.answered} in {result.seconds:.1f} s, {rate:.0f}/s"
    out["load_errors"] = f"{result.lost} / {result.mixed} / {result.server_errors} / {result.other_status}"
    lat = result.latencies
    out["load_latency"] = f"{ms(percentile(lat, 0.5))} / {ms(percentile(lat, 0.99))} / {ms(max(lat, default=0.0))}"
    if len(samples) >= 2 and samples[0]:
        growth = (samples[-1] - samples[0]) / samples[0] * 100
        out["load_rss"] = f"{samples[0] / 1024:.0f} → {samples[-1] / 1024:.0f} MiB ({growth:+.1f} %)"
        peak = max(samples)
        if peak > samples[-1]:
            out["load_rss"] += f", peak {peak / 1024:.0f} MiB"
    out["load_fds"] = f"{fds_before} → {fds_after}"
    mib = [round(kib / 1024) for kib in samples]
    print(f"  [{srv.column.key}] RSS samples (MiB, 1 s apart): {mib}", file=sys.stderr)
    for example in result.examples:
        print(f"  [{srv.column.key}] load problem: {example}", file=sys.stderr)


def measure_recycling(column: Column, log_dir: Path, mode: Mode, out: dict[str, str]) -> None:
    if not column.recycles:
        out["recycle"] = "no recycling in this model"
        return
    env = {"AZMLINFSRV_MAX_REQUESTS": "25"} if column.ours else {"GUNICORN_CMD_ARGS": "--max-requests 25"}
    with server(column, log_dir, "recycle", args=("--worker_count", "2"), env=env) as srv:
        if not srv.up():
            out["recycle"] = "server did not start"
            return
        result = hammer(srv.port, 4, mode.recycle_seconds, mode.recycle_requests)
    lost = result.lost + result.mixed + result.server_errors + result.other_status
    out["recycle"] = f"{result.answered} / {lost} (of {mode.recycle_requests}), {len(result.pids)} pids"
    for example in result.examples:
        print(f"  [{column.key}] recycling problem: {example}", file=sys.stderr)


def measure_crash(srv: Server, out: dict[str, str]) -> None:
    started = time.monotonic()
    out["crash_request"] = timed(lambda: score(srv.port, "exit", timeout=10.0, code=3))
    crashed = time.monotonic()
    for _ in range(1000):
        if time.monotonic() - crashed > 15:
            out["crash_after"] = "no answer for 15 s"
            return
        code = srv.process.poll()
        if code is not None:
            out["crash_after"] = f"exited (code {code}) {ms(time.monotonic() - started)} after the request"
            return
        try:
            if score(srv.port, "echo", timeout=2.0).status == 200:
                out["crash_after"] = f"up; scoring again {ms(time.monotonic() - crashed)} later"
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.05)


def measure_column(column: Column, mode: Mode, log_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    print(f"== {column.title}", file=sys.stderr)
    with server(column, log_dir, "main") as srv:
        if measure_startup(srv, out):
            measure_liveness(srv, out)
            measure_load(srv, mode, out)
            measure_body_limit(srv, out)
            measure_slowloris(srv, out)
            measure_crash(srv, out)
    measure_timeouts(column, log_dir, out)
    measure_sigterm(column, log_dir, out)
    measure_recycling(column, log_dir, mode, out)
    for row in ROWS:
        print(f"  {row.key}: {out.get(row.key, NOT_APPLICABLE)}", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Setup and report


def upstream_command(given: str | None) -> str:
    """Upstream's ``azmlinfsrv``: as given, or from its own venv (created on first use, as compare_upstream does)."""
    if given:
        return given
    binary = UPSTREAM_VENV / "bin" / "azmlinfsrv"
    if not binary.exists():
        print(f"Installing {UPSTREAM_REQUIREMENT} into {UPSTREAM_VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(UPSTREAM_VENV)], check=True)
        pip = str(UPSTREAM_VENV / "bin" / "pip")
        subprocess.run([pip, "install", "--quiet", UPSTREAM_REQUIREMENT], check=True)
    return str(binary)


def ours_command(given: str | None) -> str:
    if given:
        return given
    beside = Path(sys.executable).parent / "azmlinfsrv"
    found = str(beside) if beside.exists() else shutil.which("azmlinfsrv")
    if not found:
        raise SystemExit("azmlinfsrv (ours) not found: run this through `nox -s reliability`, or pass --ours")
    return found


def columns(upstream: str, ours: str) -> list[Column]:
    return [
        Column(
            "upstream",
            "upstream 1.5.1 (gunicorn sync)",
            upstream,
            ours=False,
            four_at_once=("--worker_count", "4"),
        ),
        # One run() thread per worker: four at once means four workers, as upstream.
        Column("gunicorn", "ours: gunicorn, 1 thread", ours, four_at_once=("--worker_count", "4")),
        Column("threads", "ours: gunicorn `--threads 4`", ours, args=("--threads", "4"), four_at_once=()),
        Column(
            "waitress",
            "ours: waitress",
            ours,
            env=(("AZMLINFSRV_SERVER", "waitress"),),
            recycles=False,
            forks_workers=False,
        ),
    ]


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"`{done.stdout.strip()}`" + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def probe(command: str, code: str) -> str:
    """What ``code`` prints in the Python environment of ``command`` (a console script in a venv's bin/)."""
    python = Path(command).parent / "python"
    try:
        done = subprocess.run(
            [str(python), "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return done.stdout.strip() or "?"


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def paragraph(text: str) -> list[str]:
    return textwrap.wrap(text, width=115, break_long_words=False, break_on_hyphens=False)


def render(
    cols: list[Column], results: dict[str, dict[str, str]], mode: Mode, meta: dict[str, str], minutes: float
) -> str:
    lines = [
        START_MARKER,
        "## Measured by `nox -s reliability`",
        "",
        *paragraph(
            "Generated by `tools/reliability_figures.py` (`nox -s reliability`, or `nox -s reliability -- --long`); "
            "do not edit by hand. This section supersedes the hand-measured tables above."
        ),
        "",
        *paragraph(
            f"Run on {meta['date']} at commit {meta['commit']} in {mode.name} mode, on a {meta['cores']}-core Linux "
            f"machine shared with other jobs (load average over 1 / 5 / 15 min: {meta['load_before']} before, "
            f"{meta['load_after']} after), {minutes:.1f} minutes in all. Ours: Python {meta['python']}, gunicorn "
            f"{meta['gunicorn']}, waitress {meta['waitress']}. Upstream: azureml-inference-server-http "
            f"{meta['upstream']}, Python {meta['upstream_python']}, gunicorn {meta['upstream_gunicorn']}. Every server "
            "runs on 127.0.0.1 with the score script `tools/reliability_scripts/behaviours.py`, an undecorated "
            "`run(data)` whose behaviour the request body selects, one server at a time; times are seen by the client. "
            f"{NOT_APPLICABLE} marks a figure that does not apply."
        ),
        "",
        "| What | " + " | ".join(column.title for column in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for row in ROWS:
        cells = [results[column.key].get(row.key, NOT_APPLICABLE) for column in cols]
        label = row.label.format(clients=mode.clients, seconds=f"{mode.load_seconds:.0f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        *paragraph(
            "Each column starts its own servers, with default settings except where a row says otherwise. The "
            "scoring-timeout rows use a server started with `SCORING_TIMEOUT_MS=1000`. `SIGTERM` goes to the "
            "server's main process only, as a container runtime sends it, 0.5 s after the requests; every worker had "
            "booted before they were sent. "
            f"Sustained load: {mode.clients} clients for {mode.load_seconds:.0f} s, each request with a unique body "
            "and `x-request-id`; run() echoes the body, and a response whose body or `x-request-id` is not the "
            "request's counts as mixed up; lost means no response (a connection error, or 10 s without an answer). "
            "Memory is the resident set of the server process and its workers, sampled after "
            f"{mode.warmup_seconds:.0f} s of warm-up and at the end of the load. File descriptors are counted in "
            "/proc before the load and after it, once the clients have closed their connections. Recycling: "
            f"`--worker_count 2` under 4 clients ({mode.recycle_requests} requests), with "
            '`AZMLINFSRV_MAX_REQUESTS=25` (ours) or `GUNICORN_CMD_ARGS="--max-requests 25"` (upstream).'
        ),
        END_MARKER,
    ]
    return "\n".join(lines) + "\n"


def write_section(doc: Path, section: str) -> None:
    text = doc.read_text()
    pattern = re.compile(re.escape(START_MARKER) + r".*?" + re.escape(END_MARKER) + r"\n?", re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{doc}: the markers {START_MARKER} and {END_MARKER} are missing")
    doc.write_text(pattern.sub(lambda _: section, text, count=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true", help="64 clients for 60 s (default: 16 clients for 10 s)")
    parser.add_argument("--upstream", help="upstream's azmlinfsrv (default: its own venv under tests/compat/.work)")
    parser.add_argument("--ours", help="our azmlinfsrv (default: the one beside this Python)")
    parser.add_argument("--only", action="append", help="measure only these columns (repeatable; for development)")
    parser.add_argument("--doc", type=Path, default=DOC, help="the page to update (default: docs/reliability.md)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--logs", type=Path, help="keep the servers' logs in this folder (default: discarded)")
    options = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        raise SystemExit("the figures read /proc: run them on Linux")
    mode = LONG if options.long else QUICK
    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    ours = ours_command(options.ours)
    upstream = upstream_command(options.upstream)
    cols = [column for column in columns(upstream, ours) if not options.only or column.key in options.only]
    meta = {
        "date": datetime.date.today().isoformat(),
        "commit": git_commit(),
        "cores": str(len(os.sched_getaffinity(0))),
        "python": platform.python_version(),
        "gunicorn": probe(ours, VERSION_OF.format("gunicorn")),
        "waitress": probe(ours, VERSION_OF.format("waitress")),
        "upstream": probe(upstream, VERSION_OF.format("azureml-inference-server-http")),
        "upstream_python": probe(upstream, "import platform; print(platform.python_version())"),
        "upstream_gunicorn": probe(upstream, VERSION_OF.format("gunicorn")),
        "load_before": load_average(),
    }
    started = time.monotonic()
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="reliability-figures-") as tmp:
        log_dir = options.logs or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for column in cols:
                results[column.key] = measure_column(column, mode, log_dir)
        finally:
            stop_all()
    meta["load_after"] = load_average()
    section = render(cols, results, mode, meta, (time.monotonic() - started) / 60)
    if options.no_write:
        print(section)
    else:
        write_section(options.doc, section)
        print(f"Wrote the figures to {options.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
