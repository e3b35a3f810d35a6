"""Side-by-side benchmark of upstream azureml-inference-server-http 1.5.1 and this repository's azmlinfsrv.

Run from the checkout root:

    python benchmarks/harness.py --quick                 # ~3-5 minutes, for development
    python benchmarks/harness.py                         # full run, ~15-25 minutes
    python benchmarks/harness.py --workloads hello,sleep_io --rounds 3 --duration 5

Each target is installed in its own virtual environment under benchmarks/.work/ and started as a real
`azmlinfsrv` process in its own session. wrk (one thread, 127.0.0.1 only) drives it; targets are interleaved
within each round and every figure is reported as the median of per-round ratios (ours / upstream) with its
min-max, because on a shared two-core machine absolute figures drift far more than ratios taken side by side.
The report goes to docs/performance.md with a chart next to it (docs/performance.png).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WORK = BENCH_DIR / ".work"
LUA_SCRIPT = BENCH_DIR / "post.lua"

sys.path.insert(0, str(BENCH_DIR))

from bodies import V2_HELLO_CHECK  # noqa: E402
from bodies import V2_HELLO_PATH  # noqa: E402
from bodies import WORKLOADS  # noqa: E402
from bodies import write_bodies  # noqa: E402

UPSTREAM_REQUIREMENT = "azureml-inference-server-http==1.5.1"
# Installed together in one pip call so the exact-pinned siblings resolve from the checkout, never the index.
OURS_PACKAGES = ("core", "cli", "appinsights", "testing")
TOOLS_REQUIREMENTS = ("matplotlib",)
TOOLS_ENV_FLAG = "AZMLINFSRV_BENCH_TOOLS"

HOST = "127.0.0.1"
WRK_INSTALL_HINT = "apt-get update && apt-get install -y wrk"
PIP_TIMEOUT_S = 900.0
STARTUP_TIMEOUT_S = 60.0
# A single launch's start-up time moves by +-30 % on this kind of machine (a launch right after the other target's
# load window is often the slow one); each round's figure is the median of this many launches.
STARTUP_SAMPLES = 3
STOP_TIMEOUT_S = 10.0
WRK_TIMEOUT = "10s"
SETTLE_S = 0.3
RSS_SAMPLE_S = 0.1
# Rescanning /proc for new members of the tree costs more than rereading known ones; do it less often.
RSS_RESCAN_EVERY = 5
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Above this median share of the CPUs used by other processes, the report warns that ratios are noisy.
NOISY_PERCENT = 10.0
# Inherited variables of these families would configure one server differently from the other.
SCRUBBED_ENV_PREFIXES = ("AZUREML_", "AML_", "APPINSIGHTS", "WORKER_", "GUNICORN")


# --------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class ServerConfig:
    """One server start: a workload at a worker count, measured at one or more connection counts."""

    workload: str
    workers: int
    conns: tuple[int, ...]
    # Flags only our CLI has (upstream has no --threads); upstream runs the same config without them.
    ours_args: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.workload} w{self.workers}"


THREADS_8 = ("--threads", "8")

FULL_PLAN: tuple[ServerConfig, ...] = (
    ServerConfig("hello", 1, (1, 8, 64)),
    ServerConfig("hello", 2, (8, 64)),
    ServerConfig("echo_small", 1, (8,)),
    ServerConfig("echo_small", 2, (8,)),
    ServerConfig("rawhttp_bytes", 1, (8,)),
    ServerConfig("rawhttp_bytes", 2, (8,)),
    ServerConfig("numeric_1mb", 1, (8,)),
    ServerConfig("schema_1mb", 1, (8,)),
    ServerConfig("sleep_io", 1, (8,), THREADS_8),
    ServerConfig("sleep_io", 2, (8,), THREADS_8),
)

QUICK_PLAN: tuple[ServerConfig, ...] = (
    ServerConfig("hello", 1, (8, 64)),
    ServerConfig("hello", 2, (8, 64)),
    ServerConfig("echo_small", 1, (8,)),
    ServerConfig("rawhttp_bytes", 1, (8,)),
    ServerConfig("schema_1mb", 1, (8,)),
    ServerConfig("sleep_io", 1, (8,), THREADS_8),
)


# V2 infer on the hello workload keeps at least this share of /score's req/s on the same server.
V2_BOUND = 0.85


@dataclass(frozen=True)
class Goal:
    """A target from the issue: a ratio (ours / upstream) that must be at least or at most `bound`."""

    metric: str
    workload: str
    workers: int
    conns: int
    at_least: bool
    bound: float

    @property
    def text(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.bound:g}x"


def _goals() -> list[Goal]:
    goals: list[Goal] = []
    for workers in (1, 2):
        for conns in (8, 64):
            goals.append(Goal("rps", "hello", workers, conns, True, 2.5))
            goals.append(Goal("p99", "hello", workers, conns, False, 0.5))
    for workload in ("echo_small", "rawhttp_bytes"):
        for workers in (1, 2):
            goals.append(Goal("rps", workload, workers, 8, True, 2.0))
    goals.append(Goal("rps", "schema_1mb", 1, 8, True, 2.0))
    goals.append(Goal("rps", "sleep_io", 1, 8, True, 6.0))
    return goals


GOALS = _goals()
# Start-up and memory targets hold for every server configuration, not one cell.
STARTUP_BOUND = 0.5
RSS_BOUND = 0.7


# ---------------------------------------------------------------------------------------- targets


@dataclass
class Target:
    """An installed server: its venv and whether it gets our extra flags."""

    name: str
    venv: Path
    is_ours: bool
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def executable(self) -> Path:
        return self.venv / "bin" / "azmlinfsrv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _hash_tree(paths: Iterable[Path]) -> str:
    """Hash the sources of our packages, so the venv is rebuilt exactly when the checkout changed."""
    digest = hashlib.sha256()
    skipped = {"tests", "__pycache__", "build", "dist", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
    for base in paths:
        for path in sorted(base.rglob("*")):
            relative = path.relative_to(ROOT)
            if any(part in skipped or part.endswith(".egg-info") for part in relative.parts) or not path.is_file():
                continue
            digest.update(str(relative).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _run_logged(command: Sequence[str], log_path: Path, timeout: float, cwd: Path = ROOT) -> bool:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        try:
            completed = subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            log.write(f"\n[bench] timed out after {timeout:.0f}s\n".encode())
            return False
    return completed.returncode == 0


def ensure_venv(name: str, pip_args: Sequence[str], stamp: str, python: str) -> Path | None:
    """Create WORK/venv-<name> with one pip call; reuse it while `stamp` (what was installed) is unchanged."""
    venv = WORK / f"venv-{name}"
    stamp_file = venv / ".bench-stamp"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return venv
    _log(f"creating {venv.relative_to(ROOT)} ({' '.join(pip_args)})")
    if venv.exists():
        shutil.rmtree(venv)
    log_path = WORK / "logs" / f"pip-{name}.log"
    ok = _run_logged([python, "-m", "venv", str(venv)], log_path, timeout=120)
    ok = ok and _run_logged(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", *pip_args],
        log_path,
        timeout=PIP_TIMEOUT_S,
    )
    if not ok:
        _log(f"installing {name} failed; last lines of {log_path.relative_to(ROOT)}:\n{_tail(log_path)}")
        return None
    stamp_file.write_text(stamp)
    return venv


def _versions(python: Path, names: Sequence[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n"
        "    try:\n"
        "        out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
        "out['python'] = sys.version.split()[0]\n"
        "print(json.dumps(out))\n"
    )
    try:
        completed = subprocess.run(
            [str(python), "-c", code, *names], capture_output=True, text=True, timeout=60, check=True
        )
        return dict(json.loads(completed.stdout))
    except (subprocess.SubprocessError, ValueError):
        return {}


VERSION_NAMES = (
    "azureml-inference-server-http",
    "azureml-inference-server-http-core",
    "azureml-inference-server-http-cli",
    "gunicorn",
    "flask",
    "inference-schema",
    "numpy",
)


def prepare_targets(candidate: str, python: str) -> tuple[Target | None, Target | None, str]:
    """Install both targets; returns (upstream, ours, note). Ours may be None while our server is not ready."""
    upstream_venv = ensure_venv("upstream", [UPSTREAM_REQUIREMENT, "numpy"], UPSTREAM_REQUIREMENT + " numpy", python)
    upstream = Target("upstream", upstream_venv, False) if upstream_venv else None
    note = ""
    ours: Target | None = None
    if candidate == "upstream":
        # Self-test of the harness: both sides are upstream, so every ratio should be close to 1.
        if upstream_venv:
            ours = Target("upstream-as-ours", upstream_venv, False)
        note = "Self-test: the candidate is upstream itself (`--candidate upstream`), so ratios should be ~1."
    else:
        dirs = [ROOT / "packages" / name for name in OURS_PACKAGES]
        missing = [str(d.relative_to(ROOT)) for d in dirs if not (d / "pyproject.toml").exists()]
        if missing:
            note = f"Ours was not measured: missing {', '.join(missing)}."
        else:
            pip_args = [f"./{d.relative_to(ROOT)}" for d in dirs] + ["numpy"]
            ours_venv = ensure_venv("ours", pip_args, _hash_tree(dirs), python)
            if ours_venv and (ours_venv / "bin" / "azmlinfsrv").exists():
                ours = Target("ours", ours_venv, True)
            else:
                note = "Ours was not measured: installing packages/* did not give an `azmlinfsrv` command."
    for target in (upstream, ours):
        if target:
            target.versions = _versions(target.python, VERSION_NAMES)
    return upstream, ours, note


# ------------------------------------------------------------------------------- process sampling


def _session_members(sid: int) -> list[int]:
    """Every live process of a session: the server, its workers, and anything they left behind."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may hold spaces or parentheses: fields are counted after the last ')'.
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def _cpu_seconds(pids: Iterable[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def _machine_busy_seconds() -> float:
    """CPU time all processors spent busy since boot, from the first line of /proc/stat.

    Interrupt time is left out: loopback traffic of the benchmark itself lands there, charged to no process.
    Steal stays in: it is other guests of the host taking our CPUs.
    """
    with open("/proc/stat", "rb") as handle:
        fields = [int(v) for v in handle.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields
    return (user + nice + system + steal) / CLK_TCK


def _own_seconds() -> float:
    """CPU time of the harness and of the children it has reaped (each wrk run is reaped when it ends)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class ForeignLoad:
    """Share of the machine's CPUs used by processes that are neither the server, wrk nor the harness.

    The machine is shared: this says how much of a window's noise came from outside the benchmark.
    """

    def __init__(self, server_seconds: float) -> None:
        self.wall = time.monotonic()
        self.busy = _machine_busy_seconds()
        self.own = _own_seconds()
        self.server = server_seconds

    def percent(self, server_seconds: float) -> float:
        wall = time.monotonic() - self.wall
        busy = _machine_busy_seconds() - self.busy
        ours = (_own_seconds() - self.own) + (server_seconds - self.server)
        cpus = len(os.sched_getaffinity(0))
        return max(0.0, 100 * (busy - ours) / (wall * cpus)) if wall > 0 else 0.0


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a session's processes and remembers every pid it saw."""

    def __init__(self, sid: int) -> None:
        super().__init__(daemon=True)
        self.sid = sid
        self.peak_rss = 0
        self.seen: set[int] = set()
        self.current: list[int] = []
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        tick = 0
        while not self._stop_event.is_set():
            if tick % RSS_RESCAN_EVERY == 0:
                members = _session_members(self.sid)
                with self._lock:
                    self.current = members
                    self.seen.update(members)
            with self._lock:
                members = list(self.current)
            rss = sum(_rss_bytes(pid) for pid in members)
            self.peak_rss = max(self.peak_rss, rss)
            tick += 1
            self._stop_event.wait(RSS_SAMPLE_S)

    def snapshot(self) -> tuple[set[int], list[int]]:
        members = _session_members(self.sid)
        with self._lock:
            self.current = members
            self.seen.update(members)
            return set(self.seen), members

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


# -------------------------------------------------------------------------------------- the server


class StartError(RuntimeError):
    """The server did not become healthy."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _request(port: int, method: str, path: str, body: bytes | None, content_type: str, timeout: float) -> Any:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


class Server:
    """One azmlinfsrv process tree, in a session of its own so it can be stopped as a group."""

    def __init__(self, target: Target, config: ServerConfig, log_path: Path) -> None:
        self.target = target
        self.config = config
        self.port = _free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.sampler: TreeSampler | None = None

    def command(self) -> list[str]:
        script = WORKLOADS[self.config.workload].script(BENCH_DIR)
        command = [
            str(self.target.executable),
            "--entry_script",
            str(script),
            "--port",
            str(self.port),
            "--worker_count",
            str(self.config.workers),
        ]
        if self.target.is_ours:
            command.extend(self.config.ours_args)
        return command

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_ENV_PREFIXES)}
        env["PATH"] = f"{self.target.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.target.venv)
        env.pop("PYTHONPATH", None)
        env.pop(TOOLS_ENV_FLAG, None)
        return env

    def start(self) -> float:
        """Start, and return the seconds until GET / first answered 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        run_dir = WORK / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            self.command(),
            cwd=run_dir,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.sampler = TreeSampler(self.process.pid)
        self.sampler.start()
        deadline = started + STARTUP_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise StartError(f"exited with {self.process.returncode} before it was healthy")
            try:
                status, _, _ = _request(self.port, "GET", "/", None, "", timeout=1.0)
                if status == 200:
                    return time.perf_counter() - started
            except (OSError, http.client.HTTPException):
                # Not listening yet, or a half-started server: keep polling until the deadline.
                pass
            time.sleep(0.02)
        raise StartError(f"not healthy after {STARTUP_TIMEOUT_S:.0f}s")

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left of it, by group id only."""
        if self.process is None:
            return
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None and not _session_members(pgid):
                break
            time.sleep(0.05)
        else:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _log(f"process group {pgid} survived SIGKILL")
        if self.sampler:
            self.sampler.stop()


# ------------------------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests: int
    duration_us: int
    errors: int
    non_2xx: int
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        # Only good answers count: a server failing fast with 5xx must not look faster.
        return (self.requests - self.non_2xx) / (self.duration_us / 1e6) if self.duration_us else 0.0


def run_wrk(port: int, workload: str, body_file: Path, conns: int, seconds: float, path: str = "/score") -> WrkResult:
    env = dict(os.environ)
    env["BENCH_BODY_FILE"] = str(body_file)
    env["BENCH_CONTENT_TYPE"] = WORKLOADS[workload].content_type
    # wrk's -d takes whole seconds (its time units stop at s, m, h).
    duration = f"{max(1, round(seconds))}s"
    command = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{duration}",
        "--latency",
        "--timeout",
        WRK_TIMEOUT,
        "-s",
        str(LUA_SCRIPT),
        f"http://{HOST}:{port}{path}",
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            data = json.loads(line[len("BENCH_RESULT ") :])
            return WrkResult(
                requests=data["requests"],
                duration_us=data["duration_us"],
                errors=data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"],
                non_2xx=data["status_errors"],
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                mean_ms=data["mean_us"] / 1000,
            )
    output = (completed.stderr.strip() or completed.stdout.strip())[-300:]
    raise RuntimeError(f"wrk gave no result (exit {completed.returncode}): {output}")


# ---------------------------------------------------------------------------------------- records


@dataclass
class CellRecord:
    round: int
    target: str
    workload: str
    workers: int
    conns: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    non_2xx: int
    log_bytes: int
    cpu_ms_per_request: float
    foreign_cpu_pct: float = 0.0


@dataclass
class ServerRecord:
    round: int
    target: str
    workload: str
    workers: int
    startup_s: float | None = None
    peak_rss_mb: float | None = None
    log_bytes_per_request: float | None = None
    tracebacks: int = 0
    restarts: int = 0
    failure: str | None = None


@dataclass
class Settings:
    rounds: int
    duration: int
    warmup: int
    budget_s: float
    plan: tuple[ServerConfig, ...]


def run_config(
    target: Target, config: ServerConfig, round_index: int, settings: Settings, bodies: dict[str, Path]
) -> tuple[ServerRecord, list[CellRecord]]:
    workload = WORKLOADS[config.workload]
    record = ServerRecord(round_index, target.name, config.workload, config.workers)
    cells: list[CellRecord] = []
    log_path = WORK / "logs" / f"r{round_index}-{target.name}-{config.workload}-w{config.workers}.log"
    server = Server(target, config, log_path)
    try:
        record.startup_s = statistics.median(
            [_startup_only(target, config, log_path, sample) for sample in range(1, STARTUP_SAMPLES)] + [server.start()]
        )
        body = bodies[config.workload].read_bytes()
        status, content_type, answer = _request(server.port, "POST", "/score", body, workload.content_type, 60.0)
        problem = f"status {status}" if status != 200 else workload.check(body, answer, content_type)
        if problem:
            raise StartError(f"wrong answer: {problem}")
        if settings.warmup > 0:
            run_wrk(server.port, config.workload, bodies[config.workload], max(config.conns), settings.warmup)
        assert server.sampler is not None
        time.sleep(SETTLE_S)
        pids_before, _ = server.sampler.snapshot()
        total_log = 0
        total_requests = 0
        # On ours, the hello workload is measured a second time through the Open Inference Protocol's infer route,
        # in the same server right after /score: the V2 section of the report compares the two.
        passes = [(config.workload, "/score", bodies[config.workload])]
        if target.is_ours and config.workload == "hello":
            v2_body = bodies["hello_v2"].read_bytes()
            status, _, answer = _request(server.port, "POST", V2_HELLO_PATH, v2_body, workload.content_type, 60.0)
            if status != 200 or json.loads(answer) != V2_HELLO_CHECK:
                raise StartError(f"wrong V2 answer: status {status}, {answer[:200]!r}")
            passes.append(("hello_v2", V2_HELLO_PATH, bodies["hello_v2"]))
        for (label, path, body_file), conns in ((each, conns) for each in passes for conns in config.conns):
            time.sleep(SETTLE_S)
            _, members = server.sampler.snapshot()
            cpu_before = _cpu_seconds(members)
            foreign = ForeignLoad(cpu_before)
            log_before = server.log_size()
            result = run_wrk(server.port, config.workload, body_file, conns, settings.duration, path)
            cpu_after = _cpu_seconds(members)
            foreign_pct = foreign.percent(cpu_after)
            # Let the last log lines of the window reach the file before counting them.
            time.sleep(SETTLE_S)
            log_bytes = server.log_size() - log_before
            total_log += log_bytes
            total_requests += result.requests
            cells.append(
                CellRecord(
                    round=round_index,
                    target=target.name,
                    workload=label,
                    workers=config.workers,
                    conns=conns,
                    rps=result.rps,
                    p50_ms=result.p50_ms,
                    p99_ms=result.p99_ms,
                    requests=result.requests,
                    errors=result.errors,
                    non_2xx=result.non_2xx,
                    log_bytes=log_bytes,
                    cpu_ms_per_request=1000 * (cpu_after - cpu_before) / max(result.requests, 1),
                    foreign_cpu_pct=foreign_pct,
                )
            )
        pids_after, _ = server.sampler.snapshot()
        # A pid that appears while measuring is a worker that died and was replaced.
        record.restarts = len(pids_after - pids_before)
        record.log_bytes_per_request = total_log / max(total_requests, 1)
    except (StartError, RuntimeError, OSError, subprocess.SubprocessError, http.client.HTTPException) as error:
        record.failure = f"{type(error).__name__}: {error}"
        _log(f"{target.name} {config.label}: {record.failure}; log tail:\n{_tail(log_path)}")
    finally:
        server.stop()
    if server.sampler:
        record.peak_rss_mb = server.sampler.peak_rss / 2**20
    try:
        record.tracebacks = log_path.read_bytes().count(b"Traceback (most recent call last)")
    except OSError:
        pass
    return record, cells


def _startup_only(target: Target, config: ServerConfig, log_path: Path, sample: int) -> float:
    """One more launch of the same server, timed to its first healthy probe and stopped."""
    server = Server(target, config, log_path.with_name(f"{log_path.stem}-start{sample}.log"))
    try:
        return server.start()
    finally:
        server.stop()


def estimate_seconds(config: ServerConfig, settings: Settings) -> float:
    # Start-ups, check, warm-up, settles and stop: a rough but pessimistic allowance per configuration.
    return 2.0 * STARTUP_SAMPLES + 1.0 + settings.warmup + len(config.conns) * (settings.duration + 2 * SETTLE_S)


def measure(
    targets: list[Target], settings: Settings, bodies: dict[str, Path]
) -> tuple[list[ServerRecord], list[CellRecord], bool]:
    servers: list[ServerRecord] = []
    cells: list[CellRecord] = []
    started = time.monotonic()
    for round_index in range(1, settings.rounds + 1):
        # Alternate which target goes first so a slow drift of the machine favours neither.
        order = targets if round_index % 2 else list(reversed(targets))
        for config in settings.plan:
            for target in order:
                elapsed = time.monotonic() - started
                if elapsed + estimate_seconds(config, settings) > settings.budget_s:
                    _log(f"time budget of {settings.budget_s:.0f}s reached: stopping early")
                    return servers, cells, False
                record, new_cells = run_config(target, config, round_index, settings, bodies)
                servers.append(record)
                cells.extend(new_cells)
                summary = ", ".join(
                    f"c{c.conns} {c.rps:,.0f} req/s p99 {c.p99_ms:.1f} ms (other load {c.foreign_cpu_pct:.0f}%)"
                    for c in new_cells
                )
                startup = f"{record.startup_s:.2f}s" if record.startup_s is not None else "-"
                _log(
                    f"round {round_index} {target.name:>8} {config.label:<16} start {startup} "
                    f"rss {record.peak_rss_mb or 0:.0f} MB  {summary or record.failure}"
                )
    return servers, cells, True


# ------------------------------------------------------------------------------------------ stats


@dataclass
class Ratio:
    median: float
    low: float
    high: float
    rounds: int

    def text(self) -> str:
        if self.rounds == 1:
            return f"{self.median:.2f}x"
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f})"


def ratio_of(pairs: list[tuple[float, float]]) -> Ratio | None:
    """Median and range of per-round ratios ours/upstream; rounds where either side is missing are skipped."""
    values = [ours / base for base, ours in pairs if base > 0 and ours is not None]
    if not values:
        return None
    return Ratio(statistics.median(values), min(values), max(values), len(values))


def _by_round(records: Iterable[Any], target: str, **key: Any) -> dict[int, Any]:
    return {r.round: r for r in records if r.target == target and all(getattr(r, k) == v for k, v in key.items())}


def cell_pairs(cells: list[CellRecord], upstream: str, ours: str, metric: str, **key: Any) -> list[tuple[float, float]]:
    base = _by_round(cells, upstream, **key)
    cand = _by_round(cells, ours, **key)
    return [(getattr(base[r], metric), getattr(cand[r], metric)) for r in sorted(base.keys() & cand.keys())]


def server_pairs(
    servers: list[ServerRecord], upstream: str, ours: str, metric: str, **key: Any
) -> list[tuple[float, float]]:
    base = _by_round(servers, upstream, **key)
    cand = _by_round(servers, ours, **key)
    pairs = []
    for r in sorted(base.keys() & cand.keys()):
        a, b = getattr(base[r], metric), getattr(cand[r], metric)
        if a is not None and b is not None and base[r].failure is None and cand[r].failure is None:
            pairs.append((a, b))
    return pairs


def median_of(records: Iterable[Any], metric: str) -> float | None:
    values = [getattr(r, metric) for r in records if getattr(r, metric) is not None]
    return statistics.median(values) if values else None


# ----------------------------------------------------------------------------------------- report


def _checkout() -> str:
    """The commit measured, marked when our packages had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "packages"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "no commit") + (" with uncommitted changes in packages/" if dirty else "")


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    memory = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 2**20:.0f} GiB"
                break
    except OSError:
        pass
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10).stdout.split("[")[0]
    except (OSError, subprocess.SubprocessError):
        wrk = "unknown"
    return {
        "checkout": _checkout(),
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "memory": memory,
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "wrk": wrk.strip(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _verdict(ratio: Ratio | None, at_least: bool, bound: float) -> str:
    if ratio is None:
        return "not measured"
    ok = ratio.median >= bound if at_least else ratio.median <= bound
    return "met" if ok else "**missed**"


@dataclass
class Results:
    machine: dict[str, str]
    settings: dict[str, Any]
    upstream: str
    ours: str | None
    versions: dict[str, dict[str, str]]
    servers: list[ServerRecord]
    cells: list[CellRecord]
    complete: bool
    note: str


def _cell_keys(results: Results) -> list[tuple[str, int, int]]:
    keys: list[tuple[str, int, int]] = []
    for c in results.cells:
        key = (c.workload, c.workers, c.conns)
        if key not in keys:
            keys.append(key)
    return keys


def _server_keys(results: Results) -> list[tuple[str, int]]:
    keys: list[tuple[str, int]] = []
    for s in results.servers:
        if (s.workload, s.workers) not in keys:
            keys.append((s.workload, s.workers))
    return keys


def chart_data(results: Results) -> dict[str, list[tuple[str, Ratio, float | None]]]:
    """Ratios to plot, each with its bound from the issue (None where the issue sets none)."""
    data: dict[str, list[tuple[str, Ratio, float | None]]] = {"rps": [], "p99": [], "startup": [], "rss": []}
    if results.ours is None:
        return data
    goals = {(g.metric, g.workload, g.workers, g.conns): g.bound for g in GOALS}
    for workload, workers, conns in _cell_keys(results):
        for metric, attr in (("rps", "rps"), ("p99", "p99_ms")):
            pairs = cell_pairs(
                results.cells, results.upstream, results.ours, attr, workload=workload, workers=workers, conns=conns
            )
            ratio = ratio_of(pairs)
            if ratio:
                label = f"{workload}\nw{workers} c{conns}"
                data[metric].append((label, ratio, goals.get((metric, workload, workers, conns))))
    for workload, workers in _server_keys(results):
        for metric, attr, bound in (("startup", "startup_s", STARTUP_BOUND), ("rss", "peak_rss_mb", RSS_BOUND)):
            pairs = server_pairs(
                results.servers, results.upstream, results.ours, attr, workload=workload, workers=workers
            )
            ratio = ratio_of(pairs)
            if ratio:
                data[metric].append((f"{workload}\nw{workers}", ratio, bound))
    return data


def render_chart(results: Results, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log("matplotlib is not installed: no chart (run through `nox -s bench`, or let the harness bootstrap it)")
        return False
    data = chart_data(results)
    panels = [
        ("rps", "req/s, ours / upstream (higher is better)"),
        ("p99", "p99 latency, ours / upstream (lower is better)"),
        ("startup", "start-up to first healthy probe, ours / upstream (lower is better)"),
        ("rss", "peak RSS of the process tree, ours / upstream (lower is better)"),
    ]
    panels = [(key, title) for key, title in panels if data[key]]
    if not panels:
        return False
    figure, axes = plt.subplots(len(panels), 1, figsize=(14, 3.6 * len(panels)), squeeze=False)
    for axis, (key, title) in zip(axes[:, 0], panels, strict=True):
        rows = data[key]
        positions = list(range(len(rows)))
        medians = [ratio.median for _, ratio, _ in rows]
        below = [ratio.median - ratio.low for _, ratio, _ in rows]
        above = [ratio.high - ratio.median for _, ratio, _ in rows]
        axis.bar(positions, medians, color="#4878a8", yerr=[below, above], capsize=3)
        for position, (_, _, bound) in zip(positions, rows, strict=True):
            if bound is not None:
                axis.hlines(bound, position - 0.4, position + 0.4, colors="#c03030", linewidth=2)
        axis.axhline(1.0, color="#555555", linewidth=0.8, linestyle="--")
        axis.set_xticks(positions)
        axis.set_xticklabels([label for label, _, _ in rows], fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.set_ylabel("ratio")
        for position, median in zip(positions, medians, strict=True):
            # Beside the bar's top, so the whisker does not cross the number.
            axis.annotate(f"{median:.2f}", (position + 0.08, median), ha="left", va="bottom", fontsize=7)
    figure.suptitle(
        f"{results.ours} vs {results.upstream}, {results.machine['date']}, {results.machine['cpus']} CPUs\n"
        "bars: median of per-round ratios; whiskers: min-max; red: target from the issue",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def v2_section(results: Results, ours: str) -> list[str]:
    """The hello workload through V2 infer against /score, both on our server in the same round."""
    keys = [(workers, conns) for workload, workers, conns in _cell_keys(results) if workload == "hello_v2"]
    if not keys:
        return []
    lines = [
        "## Open Inference Protocol (V2)",
        "",
        f"The hello workload sent to `POST {V2_HELLO_PATH}` right after `/score`, on the same server of ours in each "
        "round (upstream has no V2 routes). The ratio is V2 / `/score` req/s, the median of the per-round ratios.",
        "",
        "| workers | conns | /score req/s | V2 req/s | V2 / score | goal | verdict |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for workers, conns in keys:
        score = _by_round(results.cells, ours, workload="hello", workers=workers, conns=conns)
        v2 = _by_round(results.cells, ours, workload="hello_v2", workers=workers, conns=conns)
        ratio = ratio_of([(score[r].rps, v2[r].rps) for r in sorted(score.keys() & v2.keys())])
        lines.append(
            f"| {workers} | {conns} | {_fmt(median_of(score.values(), 'rps'), ',.0f')} |"
            f" {_fmt(median_of(v2.values(), 'rps'), ',.0f')} | {ratio.text() if ratio else '-'} |"
            f" >= {V2_BOUND:g}x | {_verdict(ratio, True, V2_BOUND)} |"
        )
    return [*lines, ""]


def write_report(results: Results, path: Path, chart: Path | None) -> None:
    up, ours = results.upstream, results.ours
    m = results.machine
    s = results.settings
    lines = [
        "# Performance",
        "",
        "Generated by `python benchmarks/harness.py"
        + (" --quick" if s["quick"] else "")
        + "` (or `nox -s bench`); do not edit by hand.",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory']}, {m['os']}, Python {m['python']}, {m['wrk']}. "
        f"Date: {m['date']}. Checkout: {m.get('checkout', 'unknown')}.",
        "",
        f"Mode: {'quick' if s['quick'] else 'full'}; {s['rounds']} rounds of {s['duration']:g} s per cell after "
        f"{s['warmup']:g} s of warm-up"
        + ("" if results.complete else "; **stopped early by the time budget, some rounds are missing**")
        + ".",
        "",
    ]
    if results.note:
        lines += [f"> {results.note}", ""]
    foreign = [c.foreign_cpu_pct for c in results.cells]
    if foreign and statistics.median(foreign) >= NOISY_PERCENT:
        lines += [
            f"> Other processes used a median {statistics.median(foreign):.0f} % of the CPUs while this ran: "
            "the ratios are noisier than usual (see the min-max ranges and the Errors section).",
            "",
        ]
    versions = results.versions
    for name in (up, ours):
        if name and name in versions:
            shown = ", ".join(f"{k} {v}" for k, v in versions[name].items())
            lines.append(f"- `{name}`: {shown}")
    lines += [
        "",
        "## Method",
        "",
        "Each target is installed in its own virtual environment: upstream with "
        f"`pip install {UPSTREAM_REQUIREMENT} numpy`, ours with one "
        "`pip install ./packages/core ./packages/cli ./packages/appinsights ./packages/testing numpy`. "
        "For every workload and worker count the harness starts `azmlinfsrv --entry_script "
        "benchmarks/workloads/<name>.py --port <free port> --worker_count N` in a session of its own, waits for "
        f"`GET /` to answer 200 (the start-up time: the median of {STARTUP_SAMPLES} such launches, the others stopped "
        "once healthy), checks one answer, warms up, then runs "
        "`wrk -t1 -c<conns> --latency` against `POST http://127.0.0.1:<port>/score` with the body written by "
        "`benchmarks/bodies.py` (`benchmarks/post.lua`). It samples the summed RSS of the whole process tree "
        "every 0.1 s, counts the bytes of stdout and stderr written during the measured windows, and stops the "
        "process group with SIGTERM, then SIGKILL. Within a round the targets run back to back for each "
        "configuration, the first target alternating between rounds. Every ratio is ours / upstream, given as "
        "the median of the per-round ratios with the min-max in brackets. `sleep_io` runs ours with "
        "`--threads 8` (upstream has no such flag).",
        "",
    ]
    if chart:
        lines += [f"![ratios ours / upstream]({chart.name})", ""]

    if ours:
        lines += ["## Targets", "", "| target | cell | ratio (min-max) | goal | verdict |", "|---|---|---:|---:|---|"]
        for goal in GOALS:
            attr = "rps" if goal.metric == "rps" else "p99_ms"
            pairs = cell_pairs(
                results.cells, up, ours, attr, workload=goal.workload, workers=goal.workers, conns=goal.conns
            )
            ratio = ratio_of(pairs)
            cell = f"{goal.workload} w{goal.workers} c{goal.conns}"
            metric = "req/s" if goal.metric == "rps" else "p99"
            lines.append(
                f"| {metric} | {cell} | {ratio.text() if ratio else '-'} | {goal.text} | "
                f"{_verdict(ratio, goal.at_least, goal.bound)} |"
            )
        for workload, workers in _server_keys(results):
            for metric, attr, bound in (
                ("start-up", "startup_s", STARTUP_BOUND),
                ("peak RSS", "peak_rss_mb", RSS_BOUND),
            ):
                pairs = server_pairs(results.servers, up, ours, attr, workload=workload, workers=workers)
                ratio = ratio_of(pairs)
                lines.append(
                    f"| {metric} | {workload} w{workers} | {ratio.text() if ratio else '-'} | <= {bound:g}x | "
                    f"{_verdict(ratio, False, bound)} |"
                )
        lines.append("")

    lines += ["## Throughput and latency", ""]
    header = "| workload | workers | conns | upstream req/s | upstream p50 ms | upstream p99 ms |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if ours:
        header += " ours req/s | ours p50 ms | ours p99 ms | req/s ratio | p50 ratio | p99 ratio |"
        rule += "---:|---:|---:|---:|---:|---:|"
    lines += [header, rule]
    for workload, workers, conns in _cell_keys(results):
        key = {"workload": workload, "workers": workers, "conns": conns}
        row = f"| {workload} | {workers} | {conns} |"
        for name in (up, ours) if ours else (up,):
            records = list(_by_round(results.cells, name, **key).values())
            row += (
                f" {_fmt(median_of(records, 'rps'), ',.0f')} | {_fmt(median_of(records, 'p50_ms'), '.2f')} |"
                f" {_fmt(median_of(records, 'p99_ms'), '.2f')} |"
            )
        if ours:
            for attr in ("rps", "p50_ms", "p99_ms"):
                ratio = ratio_of(cell_pairs(results.cells, up, ours, attr, **key))
                row += f" {ratio.text() if ratio else '-'} |"
        lines.append(row)
    lines += ["", "Absolute figures are medians over rounds; they move by 20-30 % between runs on this machine.", ""]
    if ours:
        lines += v2_section(results, ours)

    lines += ["## Start-up, memory, logs, CPU", ""]
    header = "| workload | workers |"
    rule = "|---|---:|"
    names = (up, ours) if ours else (up,)
    for name in names:
        header += f" {name} start s | {name} peak RSS MB | {name} log B/req | {name} CPU ms/req |"
        rule += "---:|---:|---:|---:|"
    lines += [header, rule]
    for workload, workers in _server_keys(results):
        row = f"| {workload} | {workers} |"
        for name in names:
            records = [
                r for r in results.servers if r.target == name and (r.workload, r.workers) == (workload, workers)
            ]
            ok = [r for r in records if r.failure is None]
            cpu = [c for c in results.cells if c.target == name and (c.workload, c.workers) == (workload, workers)]
            row += (
                f" {_fmt(median_of(ok, 'startup_s'), '.2f')} | {_fmt(median_of(ok, 'peak_rss_mb'), '.0f')} |"
                f" {_fmt(median_of(ok, 'log_bytes_per_request'), '.0f')} |"
                f" {_fmt(median_of(cpu, 'cpu_ms_per_request'), '.2f')} |"
            )
        lines.append(row)
    lines += [
        "",
        f"Start-up is from process launch to the first `GET /` that answers 200, the median of {STARTUP_SAMPLES} "
        "launches per round. Peak RSS sums every process of "
        "the server's session (shared pages counted once per process). Log bytes are stdout plus stderr during the "
        "measured windows, divided by the requests served. CPU is user plus system time of the server's processes "
        "during the measured windows, divided by the requests served.",
        "",
    ]

    lines += [
        "## Errors",
        "",
        "| target | failed starts or checks | socket errors | non-2xx | tracebacks | worker restarts |",
    ]
    lines.append("|---|---:|---:|---:|---:|---:|")
    for name in names:
        srv = [r for r in results.servers if r.target == name]
        cel = [c for c in results.cells if c.target == name]
        lines.append(
            f"| {name} | {sum(r.failure is not None for r in srv)} | {sum(c.errors for c in cel)} | "
            f"{sum(c.non_2xx for c in cel)} | {sum(r.tracebacks for r in srv)} | {sum(r.restarts for r in srv)} |"
        )
    if foreign:
        lines += [
            "",
            f"Other load: processes outside the benchmark used a median {statistics.median(foreign):.0f} % "
            f"(max {max(foreign):.0f} %) of the machine's CPUs during the measured windows"
            + (
                "; **the machine was busy, expect wide min-max ranges**."
                if statistics.median(foreign) >= NOISY_PERCENT
                else "."
            ),
        ]
    failures = [r for r in results.servers if r.failure]
    if failures:
        lines += ["", "Failures:", ""]
        for r in failures[:20]:
            lines.append(f"- round {r.round}, {r.target}, {r.workload} w{r.workers}: {r.failure}")
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


# ------------------------------------------------------------------------------------------- main


def ensure_tools(no_chart: bool) -> None:
    """Re-run the harness in a small venv with matplotlib when the current interpreter lacks it."""
    if no_chart or os.environ.get(TOOLS_ENV_FLAG) == "1":
        return
    try:
        import matplotlib  # noqa: F401

        return
    except ImportError:
        pass
    venv = ensure_venv("tools", list(TOOLS_REQUIREMENTS), " ".join(TOOLS_REQUIREMENTS), sys.executable)
    if venv is None:
        _log("could not install matplotlib: continuing without a chart")
        return
    python = venv / "bin" / "python"
    env = dict(os.environ)
    env[TOOLS_ENV_FLAG] = "1"
    # Target venvs are built from the interpreter that was asked for, not from the tools venv.
    argv = [str(python), str(Path(__file__).resolve()), *sys.argv[1:], "--python", _base_python()]
    os.execve(str(python), argv, env)


def _base_python() -> str:
    for index, arg in enumerate(sys.argv):
        if arg == "--python" and index + 1 < len(sys.argv):
            return sys.argv[index + 1]
        if arg.startswith("--python="):
            return arg.split("=", 1)[1]
    return sys.executable


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer cells and short windows (~3-5 minutes)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3); ratios are medians of per-round ratios")
    parser.add_argument("--duration", type=int, help="whole seconds per measured cell (default 10, quick 2)")
    parser.add_argument("--warmup", type=int, help="whole seconds of warm-up per server start (default 2, quick 1)")
    parser.add_argument("--workloads", help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md", help="report (markdown)")
    parser.add_argument("--max-minutes", type=float, help="stop measuring after this (default 25, quick 5)")
    parser.add_argument(
        "--candidate",
        choices=("ours", "upstream"),
        default="ours",
        help="what to compare with upstream; 'upstream' is a self-test of the harness (ratios ~1)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter the target venvs are built from")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG (no matplotlib needed)")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a target from the issue is missed")
    parser.add_argument("--report-only", type=Path, help="rewrite the report from a results JSON of an earlier run")
    args = parser.parse_args(argv)
    if args.rounds is not None and not 1 <= args.rounds <= 20:
        parser.error("--rounds must be between 1 and 20")
    if args.duration is not None and not 1 <= args.duration <= 120:
        parser.error("--duration must be between 1 and 120 seconds")
    if args.warmup is not None and not 0 <= args.warmup <= 60:
        parser.error("--warmup must be between 0 and 60 seconds")
    if args.workloads:
        unknown = set(args.workloads.split(",")) - set(WORKLOADS)
        if unknown:
            parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    return args


def _load_results(path: Path) -> Results:
    raw = json.loads(path.read_text())
    raw["servers"] = [ServerRecord(**r) for r in raw["servers"]]
    raw["cells"] = [CellRecord(**c) for c in raw["cells"]]
    return Results(**raw)


def _missed_goals(results: Results) -> list[str]:
    if results.ours is None:
        return []
    missed = []
    for goal in GOALS:
        attr = "rps" if goal.metric == "rps" else "p99_ms"
        key = {"workload": goal.workload, "workers": goal.workers, "conns": goal.conns}
        ratio = ratio_of(cell_pairs(results.cells, results.upstream, results.ours, attr, **key))
        if ratio and _verdict(ratio, goal.at_least, goal.bound) != "met":
            missed.append(
                f"{goal.metric} {goal.workload} w{goal.workers} c{goal.conns}: {ratio.text()} (goal {goal.text})"
            )
    return missed


def finish(results: Results, output: Path, no_chart: bool) -> list[str]:
    chart_path = output.with_suffix(".png")
    chart = chart_path if not no_chart and render_chart(results, chart_path) else None
    write_report(results, output, chart)
    _log(f"report written to {output.resolve().relative_to(ROOT) if output.resolve().is_relative_to(ROOT) else output}")
    missed = _missed_goals(results)
    for line in missed:
        _log(f"missed: {line}")
    return missed


def select_plan(quick: bool, wanted: list[str] | None) -> tuple[ServerConfig, ...]:
    """The server configs to run: the quick or full plan, narrowed to the wanted workloads."""
    if wanted is None:
        return QUICK_PLAN if quick else FULL_PLAN
    plan: list[ServerConfig] = []
    for name in WORKLOADS:
        if name not in wanted:
            continue
        configs = [c for c in (QUICK_PLAN if quick else FULL_PLAN) if c.workload == name]
        if not configs:
            # A workload the quick plan leaves out still gets its one-worker, 8-connection cell.
            configs = [ServerConfig(c.workload, 1, (8,), c.ours_args) for c in FULL_PLAN if c.workload == name][:1]
        plan.extend(configs)
    return tuple(plan)


def _terminate(signum: int, frame: object) -> None:
    # Turn SIGTERM into SystemExit so the `finally` around each server still stops its process group.
    sys.exit(128 + signum)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.report_only is None and shutil.which("wrk") is None:
        print(f"wrk is not installed; install it with:\n    {WRK_INSTALL_HINT}", file=sys.stderr)
        return 2
    ensure_tools(args.no_chart)
    if args.report_only:
        missed = finish(_load_results(args.report_only), args.output, args.no_chart)
        return 1 if missed and args.fail_on_miss else 0

    plan = select_plan(args.quick, args.workloads.split(",") if args.workloads else None)
    settings = Settings(
        rounds=args.rounds or 3,
        duration=args.duration or (2 if args.quick else 10),
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
        budget_s=60 * (args.max_minutes or (5.0 if args.quick else 25.0)),
        plan=plan,
    )

    signal.signal(signal.SIGTERM, _terminate)
    WORK.mkdir(parents=True, exist_ok=True)
    upstream, ours, note = prepare_targets(args.candidate, args.python)
    if upstream is None:
        _log("upstream could not be installed: nothing to compare against")
        return 2
    if note:
        _log(note)
    targets = [upstream] + ([ours] if ours else [])
    bodies = write_bodies(WORK / "bodies")
    _log(
        f"{len(targets)} target(s), {len(plan)} server configs, {settings.rounds} rounds, "
        f"{settings.duration:g}s per cell, budget {settings.budget_s / 60:.0f} min"
    )
    servers, cells, complete = measure(targets, settings, bodies)
    results = Results(
        machine=machine_info(),
        settings={
            "quick": args.quick,
            "rounds": settings.rounds,
            "duration": settings.duration,
            "warmup": settings.warmup,
            "plan": [asdict(c) for c in plan],
        },
        upstream=upstream.name,
        ours=ours.name if ours else None,
        versions={t.name: t.versions for t in targets},
        servers=servers,
        cells=cells,
        complete=complete,
        note=note,
    )
    results_dir = WORK / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = asdict(results)
    (results_dir / f"results-{stamp}.json").write_text(json.dumps(raw, indent=1))
    (results_dir / "latest.json").write_text(json.dumps(raw, indent=1))
    missed = finish(results, args.output, args.no_chart)
    return 1 if missed and args.fail_on_miss else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
