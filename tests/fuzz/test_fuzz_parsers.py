"""R18: atheris (or, where it cannot be installed, hypothesis) over the parsers; only declared errors are allowed.

Each target runs in its own process (``fuzz_main.py``) within the session's budget of executions and seconds.
A crash fails the test with the traceback and the path of the saved input; replay it with
``python tests/fuzz/targets.py TARGET FILE``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import Budget
from .conftest import Results
from .fuzz_main import parse_libfuzzer
from .targets import TARGETS

HERE = Path(__file__).parent


def _engine(requested: str) -> str:
    if requested != "auto":
        return requested
    return "atheris" if importlib.util.find_spec("atheris") is not None else "hypothesis"


def _error_line(text: str) -> str:
    """The ``SomeError: message`` line of a traceback (the last one: the innermost report)."""
    lines = [line.strip() for line in text.splitlines()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Failure|Exit)\b.*:", line)]
    return (errors[-1] if errors else (lines[-1] if lines else ""))[:300]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_allows_only_declared_errors(
    target: str, fuzz_budget: Budget, fuzz_results: Results, tmp_path: Path
) -> None:
    engine = _engine(fuzz_budget.engine)
    result_file = tmp_path / "result.json"
    artifacts = tmp_path / "artifacts"
    argv = [
        sys.executable,
        str(HERE / "fuzz_main.py"),
        target,
        "--engine",
        engine,
        "--runs",
        str(fuzz_budget.runs),
        "--seconds",
        str(fuzz_budget.seconds),
        "--artifacts",
        str(artifacts),
        "--result",
        str(result_file),
    ]
    started = time.monotonic()
    # Start-up (imports, app creation) comes on top of the fuzzing budget; a hung target is cut at twice that.
    # atheris prints the Python traceback on stdout and libFuzzer its statistics on stderr: read both together.
    completed = subprocess.run(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=2 * fuzz_budget.seconds + 120,
        cwd=tmp_path,
    )
    output = completed.stdout
    elapsed = time.monotonic() - started
    if engine == "atheris":
        stats = parse_libfuzzer(output)
        executions = stats["executions"]
        crashes = (
            [{"artifact": " ".join(stats["artifacts"]), "traceback": stats["crash_text"]}] if stats["crashed"] else []
        )
        if completed.returncode != 0 and not crashes:
            crashes = [{"artifact": "", "traceback": output[-4000:]}]
    else:
        summary = json.loads(result_file.read_text(encoding="utf-8")) if result_file.exists() else {}
        executions = int(summary.get("executions", 0))
        crashes = list(summary.get("crashes", []))
        if completed.returncode != 0 and not crashes:
            crashes = [{"artifact": "", "traceback": output[-4000:]}]
    fuzz_results.add(
        "parsers",
        {
            "target": target,
            "engine": engine,
            "executions": executions,
            "crashes": len(crashes),
            "seconds": round(elapsed, 1),
            "first_crash": _error_line(crashes[0]["traceback"]) if crashes else "",
        },
    )
    assert not crashes, (
        f"{target} ({engine}) found a failure after {executions} executions; input saved to "
        f"{crashes[0]['artifact'] or 'n/a'}\n{crashes[0]['traceback']}"
    )
    assert executions > 0, f"{target} ran no input:\n{output[-3000:]}"
