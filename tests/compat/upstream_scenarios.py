"""Run upstream 1.5.1's own end-to-end scenarios (``tests/azmlinfsrv``) against our installed ``azmlinfsrv``.

Upstream's scenarios are not part of this repository and are never copied into it: they are taken at run time
from upstream's source, extracted into ``tests/compat/.work/`` (ignored by git) and run there unmodified, with
the Python that has our packages installed, so the ``azmlinfsrv`` they start is ours.

Where the source comes from (``--source``):

- ``pypi`` (the default): upstream's source distribution, downloaded with pip. Upstream publishes 1.5.1 as a wheel
  only, and the wheel holds no tests, so for 1.5.1 this stops with an explanation;
- a path to a checkout of upstream's repository (a folder holding ``tests/azmlinfsrv``), to a git directory of it
  (``--rev`` picks the commit; 1.5.1 is ``4a7ea9b``), or to an sdist archive.

The scenarios assume a machine of their own; this runner adapts them by configuration only:

- upstream's autouse fixture sends SIGTERM to *any* process holding port 5001; here it only sees the processes
  this run started (this module is loaded as a pytest plugin and narrows the fixture's process list);
- they use the fixed ports 5000, 5001, 5002, 8346 and 8347: the run stops before starting if one is taken;
- the servers listen on 127.0.0.1 only (``AZMLINFSRV_HOST``), and telemetry, which two scenarios turn on with a
  real-looking key, is sent to a closed port on 127.0.0.1 (``APPLICATIONINSIGHTS_CONNECTION_STRING``);
- one scenario uninstalls flask-cors with pip; the run refuses to start where flask-cors is installed, so that
  nothing of the environment is removed (our packages do not use it).

Prints one line per scenario and a closing ``N passed, N failed`` line; the exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "upstream-scenarios"
UPSTREAM_REQUIREMENT = "azureml-inference-server-http==1.5.1"
SCENARIOS = Path("tests") / "azmlinfsrv"
FIXED_PORTS = (5000, 5001, 5002, 8346, 8347)
PLUGIN = Path(__file__).stem

# Scenarios that assert upstream behaviour we changed on purpose (docs/migrating.md), by test name: they run as
# strict expected failures, so one that starts passing is reported too.
DELIBERATE = {
    "test_cors_enabled_without_package": "CORS is built in: without flask-cors, CORS is still enabled",
    # Both assert upstream's "Starting up app insights client" where telemetry cannot run (no instrumentation key):
    # this server logs that line only when telemetry is on.
    "test_load_config_from_file": "'Starting up app insights client' is logged only when telemetry is on",
    # Its --entry_script names a file that does not exist (it copies the script elsewhere) and asserts only that
    # line: this server names the missing script before the banner and starts no worker.
    "test_log_configurability": "a missing entry script stops the start before the banner, without telemetry lines",
}


# -- the pytest plugin side (loaded in the scenarios' pytest process with ``-p upstream_scenarios``) --------------


def _own_processes() -> Iterator[Any]:
    import psutil

    yield from psutil.Process().children(recursive=True)


def pytest_plugin_registered(plugin: object, manager: object) -> None:
    """Narrow upstream's port-freeing fixture to the processes this run started."""
    name = getattr(plugin, "__name__", "")
    if name.endswith("conftest") and hasattr(plugin, "process_iter") and hasattr(plugin, "free_port"):
        setattr(plugin, "process_iter", _own_processes)  # the conftest module is only known at run time


def pytest_collection_modifyitems(items: list[Any]) -> None:
    import pytest

    for item in items:
        reason = DELIBERATE.get(item.name)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=f"deliberate difference: {reason}", strict=True))


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    """A scenario that fails before its clean-up leaves its server running: stop what this run started."""
    import psutil

    children = list(_own_processes())
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(children, timeout=10)


# -- the runner side --------------------------------------------------------------------------------------------


def _fetch_from_pypi(work: Path) -> Path:
    download = work / "sdist"
    shutil.rmtree(download, ignore_errors=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", UPSTREAM_REQUIREMENT, "-d"]
        + [str(download)],
        capture_output=True,
        text=True,
    )
    archives = sorted(download.glob("*.tar.gz")) if result.returncode == 0 else []
    if not archives:
        raise SystemExit(
            f"PyPI has no source distribution of {UPSTREAM_REQUIREMENT} (it is published as a wheel, and the wheel "
            "holds no tests). Pass --source with a checkout or git directory of upstream's repository at 1.5.1."
        )
    return archives[0]


def _extract(source: Path, rev: str, target: Path) -> None:
    """Put upstream's ``tests/azmlinfsrv`` at ``target``."""
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_file():
        with tarfile.open(source) as archive, tempfile.TemporaryDirectory() as scratch:
            members = [m for m in archive.getmembers() if f"/{SCENARIOS.as_posix()}/" in f"/{m.name}/"]
            if not members:
                raise SystemExit(f"{source.name} holds no {SCENARIOS.as_posix()}")
            archive.extractall(scratch, members=members, filter="data")
            found = next(Path(scratch).glob(f"*/{SCENARIOS.as_posix()}"), None) or Path(scratch) / SCENARIOS
            shutil.copytree(found, target)
    elif (source / SCENARIOS).is_dir():
        shutil.copytree(source / SCENARIOS, target, ignore=shutil.ignore_patterns("out", "__pycache__"))
    elif (source / "HEAD").is_file() and (source / "objects").is_dir():
        archive_run = subprocess.run(
            ["git", f"--git-dir={source}", "archive", "--format=tar", rev, SCENARIOS.as_posix()],
            capture_output=True,
            check=True,
        )
        with tempfile.TemporaryDirectory() as scratch:
            tar_path = Path(scratch) / "scenarios.tar"
            tar_path.write_bytes(archive_run.stdout)
            with tarfile.open(tar_path) as archive:
                archive.extractall(scratch, filter="data")
            shutil.copytree(Path(scratch) / SCENARIOS, target)
    else:
        raise SystemExit(f"--source {source}: not an sdist, a checkout holding {SCENARIOS}, nor a git directory")


def _taken_ports() -> list[int]:
    taken = []
    for port in FIXED_PORTS:
        with socket.socket() as sock:
            # As the servers do: connections still in TIME_WAIT from an earlier run do not make a port taken.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                taken.append(port)
    return taken


def _closed_port() -> int:
    """A loopback port nothing listens on: telemetry sent there is refused at once and stays on this machine."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_interpreter(python: str) -> Path:
    probe = (
        "import importlib.util as u, sys\n"
        "names = ('pytest', 'requests', 'psutil', 'azureml_inference_server_http')\n"
        "missing = [m for m in names if not u.find_spec(m)]\n"
        "sys.stdout.write(','.join(missing) + '|' + str(u.find_spec('flask_cors') is not None))\n"
    )
    missing, _, has_flask_cors = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.partition("|")
    if missing:
        raise SystemExit(f"{python} lacks {missing}: install our packages and pytest, requests, psutil into it")
    if has_flask_cors == "True":
        raise SystemExit(
            f"flask-cors is installed for {python}; one upstream scenario uninstalls it with pip. Use an environment "
            "without it (our packages do not need it)."
        )
    bin_dir = Path(python).absolute().parent
    if not (bin_dir / "azmlinfsrv").exists() and not (bin_dir / "azmlinfsrv.exe").exists():
        raise SystemExit(f"no azmlinfsrv next to {python}: the scenarios would not start our server")
    return bin_dir


def _environment(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AML_", "AZUREML_", "APPLICATIONINSIGHTS_"))}
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    env["AZMLINFSRV_HOST"] = "127.0.0.1"
    env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = f"IngestionEndpoint=http://127.0.0.1:{_closed_port()}"
    return env


def _summarise(junit: Path) -> tuple[int, int, int, int]:
    passed = failed = skipped = deliberate = 0
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        name = f"{Path(case.get('classname', '').replace('.', '/')).name}::{case.get('name')}"
        skip = case.find("skipped")
        if skip is not None and skip.get("type") == "pytest.xfail":
            deliberate += 1
            verdict = "DIFFERS"
        elif skip is not None:
            skipped += 1
            verdict = "SKIPPED"
        elif case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            verdict = "FAILED"
        else:
            passed += 1
            verdict = "PASSED"
        print(f"{verdict:8} {name}")
    return passed, failed, skipped, deliberate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="pypi", help="pypi, or a path to upstream's checkout, git dir or sdist")
    parser.add_argument("--rev", default="HEAD", help="the commit to take from a git directory (default HEAD)")
    parser.add_argument("--python", default=sys.executable, help="the Python with our packages (default: this one)")
    parser.add_argument("--work", default=str(WORK), help="where the scenarios are extracted and run")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments, e.g. -k version")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # Absolute, not resolved: a venv's python is a symlink, and the venv is found through the link's folder.
    python = str(Path(shutil.which(args.python) or args.python).absolute())
    bin_dir = _check_interpreter(python)
    taken = _taken_ports()
    if taken:
        raise SystemExit(f"ports {taken} are in use; upstream's scenarios need {list(FIXED_PORTS)} free")
    source = _fetch_from_pypi(work) if args.source == "pypi" else Path(args.source).resolve()
    # The folder keeps upstream's name: the scenarios import their helpers relative to the package.
    scenarios = work / "upstream" / SCENARIOS.name
    _extract(source, args.rev, scenarios)
    # Found first when pytest looks for its configuration, so none of this repository's (warnings as errors) applies;
    # the marker is the one upstream's configuration declares.
    (scenarios.parent / "pytest.ini").write_text("[pytest]\nmarkers =\n    online: needs the network\n")
    junit = work / "junit.xml"
    command = [python, "-m", "pytest", "-p", PLUGIN, "-p", "no:cacheprovider", "--test_run_name=run"]
    command += [f"--junitxml={junit}", "-q", "-rfE", *args.pytest_args]
    code = subprocess.run(command, cwd=scenarios, env=_environment(bin_dir)).returncode
    if not junit.exists():
        return code or 1
    passed, failed, skipped, deliberate = _summarise(junit)
    total = passed + failed + skipped + deliberate
    print(
        f"upstream scenarios: {total} run, {passed} pass, {failed} fail, {deliberate} differ on purpose "
        f"({', '.join(DELIBERATE)}), {skipped} skipped"
    )
    print(f"logs of each scenario: {scenarios / 'out' / 'run'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
