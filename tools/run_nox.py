"""Runs the project's nox sessions from a virtual environment of their own, on any Python 3.10+.

``python3 tools/run_nox.py`` runs the default sessions (what CI runs); every argument goes to nox as it is
(``python3 tools/run_nox.py -s e2e``, ``python3 tools/run_nox.py -l``).

Why a script and not ``pip install nox``: a distribution's own Python (Debian, Ubuntu, Fedora; PEP 668) refuses
``pip install`` outside a virtual environment, and a user's own environment should not be changed to run our tests.
This script needs nothing but the standard library: it creates ``.nox/.runner`` with ``venv``, installs the pinned
nox and uv there (again only when the pins below change), and hands over to that nox. uv is nox's backend for the
sessions' own environments (see noxfile.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

# Pinned so that every machine runs the suite with the same tools; bump both together with a run of the suite.
RUNNER_REQUIREMENTS = ("nox==2026.10.20", "uv==0.13.10")
MINIMUM_PYTHON = (3, 10)

ROOT = Path(__file__).resolve().parent.parent
# RUN_NOX_RUNNER_DIR moves the runner's environment (the tests of this script use a temporary one).
RUNNER_DIR = Path(os.environ.get("RUN_NOX_RUNNER_DIR") or ROOT / ".nox" / ".runner")
STAMP = RUNNER_DIR / "runner.txt"


def _bin(name: str) -> Path:
    scripts = "Scripts" if os.name == "nt" else "bin"
    suffix = ".exe" if os.name == "nt" else ""
    return RUNNER_DIR / scripts / f"{name}{suffix}"


def _fail(message: str) -> int:
    print(f"run_nox: {message}", file=sys.stderr)
    return 2


def _ensure_runner() -> int:
    # A virtual environment belongs to the interpreter that made it: another Python makes a new one.
    wanted = "\n".join((sys.executable, sys.version, *RUNNER_REQUIREMENTS)) + "\n"
    if _bin("nox").exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return 0
    print(f"run_nox: installing {', '.join(RUNNER_REQUIREMENTS)} into {RUNNER_DIR}", flush=True)
    try:
        venv.EnvBuilder(clear=True, with_pip=True).create(RUNNER_DIR)
    except (subprocess.CalledProcessError, OSError) as error:
        # Debian and Ubuntu ship venv's pip bootstrap in a separate package.
        return _fail(
            f"could not create a virtual environment with {sys.executable} ({error}). "
            "On Debian or Ubuntu install it first: apt install python3-venv"
        )
    install = [str(_bin("python")), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    result = subprocess.run([*install, *RUNNER_REQUIREMENTS], check=False)
    if result.returncode != 0:
        return _fail(f"installing {' '.join(RUNNER_REQUIREMENTS)} failed (exit {result.returncode})")
    STAMP.write_text(wanted)
    return 0


def main(argv: list[str]) -> int:
    if sys.version_info < MINIMUM_PYTHON:
        wanted = ".".join(map(str, MINIMUM_PYTHON))
        return _fail(f"Python {wanted} or newer is needed; this is {sys.version.split()[0]} ({sys.executable})")
    status = _ensure_runner()
    if status:
        return status
    command = [str(_bin("nox")), "--noxfile", str(ROOT / "noxfile.py"), *argv]
    if os.name == "nt":
        return subprocess.run(command, check=False).returncode
    os.execv(command[0], command)
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
