"""The README's test command is what CI runs, and it works on a distribution's externally managed Python."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Interpreters that a Linux distribution manages itself (PEP 668); the first one found is used.
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")


def _readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Running the tests", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README's test section must hold exactly one command"
    return blocks[0].strip()


def _externally_managed_python() -> str | None:
    for candidate in SYSTEM_PYTHONS:
        if not os.access(candidate, os.X_OK):
            continue
        stdlib = subprocess.run(
            [candidate, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if stdlib and (Path(stdlib) / "EXTERNALLY-MANAGED").exists():
            return candidate
    return None


def test_ci_runs_the_readme_test_command() -> None:
    command = _readme_test_command()
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci_lines[-1] == command
    # One command, that needs no package outside the standard library first (no pip install before it).
    assert "\n" not in command and "pip install" not in command
    assert command.startswith("python3 tools/run_nox.py")


def test_readme_test_command_runs_on_an_externally_managed_python(tmp_path: Path) -> None:
    python = _externally_managed_python()
    if python is None:
        pytest.skip(f"no externally managed Python among {SYSTEM_PYTHONS} on this machine")
    # What the README used to say is refused there before any test runs; the README's command is not.
    refused = subprocess.run(
        [python, "-m", "pip", "install", "--dry-run", "nox"], capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0
    script = _readme_test_command().split()[1]
    env = {**os.environ, "RUN_NOX_RUNNER_DIR": str(tmp_path / "runner")}
    env.pop("VIRTUAL_ENV", None)
    listed = subprocess.run(
        [python, script, "--list"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for session in ("lint", "typecheck", "release", "core_only"):
        assert re.search(rf"^\* {session}\b", listed.stdout, flags=re.M), listed.stdout
    # The runner lives where it was told to, not in the user's Python.
    assert (tmp_path / "runner" / "runner.txt").read_text().startswith(python)


def test_run_nox_refuses_an_old_python_with_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "RUN_NOX_RUNNER_DIR": str(tmp_path / "runner")}
    code = (
        "import runpy, sys; sys.version_info = (3, 9, 18, 'final', 0); sys.argv = ['run_nox.py'];"
        f" runpy.run_path({str(ROOT / 'tools' / 'run_nox.py')!r}, run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "Python 3.10 or newer is needed" in result.stderr
    assert not (tmp_path / "runner").exists()


def test_stdlib_only() -> None:
    # The runner must start on a bare interpreter: every module it imports is in the standard library.
    source = (ROOT / "tools" / "run_nox.py").read_text()
    imported = set(re.findall(r"^(?:from|import) (\w+)", source, flags=re.M)) - {"__future__"}
    stdlib = Path(sysconfig.get_path("stdlib"))
    for module in imported:
        assert module in sys.builtin_module_names or any(
            (stdlib / candidate).exists() for candidate in (f"{module}.py", module)
        ), module
