"""The documented example (examples/test_score.py against examples/score.py) passes, and fails clearly when broken."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester", "testing_fixtures"]
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.usefixtures("inner_ini"),
    pytest.mark.skipif(not (EXAMPLES / "test_score.py").is_file(), reason="the examples folder is not in this tree"),
    pytest.mark.skipif(importlib.util.find_spec("azmlinfsrv") is None, reason="needs the azmlinfsrv command"),
    pytest.mark.skipif(importlib.util.find_spec("azmlinfsrv_appinsights") is None, reason="needs appinsights"),
]


def _copy_example(pytester: pytest.Pytester) -> Path:
    for name in ("score.py", "test_score.py"):
        shutil.copy(EXAMPLES / name, pytester.path / name)
    return pytester.path / "score.py"


def test_example_suite_passes(pytester: pytest.Pytester) -> None:
    _copy_example(pytester)
    result = pytester.runpytest_subprocess()
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 5 and "failed" not in outcomes and "error" not in outcomes, result.stdout.str()


def test_example_suite_fails_clearly_when_run_is_broken(pytester: pytest.Pytester) -> None:
    score = _copy_example(pytester)
    source = score.read_text(encoding="utf-8")
    score.write_text(source.replace('json.loads(raw_data)["data"]', 'json.loads(raw_data)["dta"]'), encoding="utf-8")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*FAILED test_score.py::test_score_returns_a_result*"])
    result.stdout.fnmatch_lines(["*assert 500 == 200*"])
    result.stdout.fnmatch_lines(["*KeyError: 'dta'*"])  # the script's exception, from the captured log


def test_example_suite_fails_clearly_when_init_is_broken(pytester: pytest.Pytester) -> None:
    score = _copy_example(pytester)
    source = score.read_text(encoding="utf-8")
    score.write_text(source.replace("def init():", "def init():\n    raise RuntimeError('model missing')\n"))
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "passed" not in result.parseoutcomes()
    result.stdout.fnmatch_lines(["*RuntimeError: model missing*"])
    result.stdout.fnmatch_lines(["*ServerStartError: azmlinfsrv exited with code*"])
