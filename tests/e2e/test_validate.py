"""``azmlinfsrv validate``: the one-shot check for CI gates (issue 7)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import RESOURCES

pytestmark = pytest.mark.e2e


def validate(*args: str, cwd: Path = RESOURCES) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "azmlinfsrv", "validate", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_good_script_with_samples_passes(tmp_path: Path) -> None:
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps({"data": [1, 2, 3]}))
    failing = tmp_path / "expect_404.json"
    failing.write_text(json.dumps({"method": "POST", "json": {"data": [1]}, "expect_status": 404}))
    result = validate("--entry_script", "swagger_score.py", "--sample", str(sample))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS load and init" in result.stdout
    assert "PASS sample" in result.stdout
    assert "0 failed" in result.stdout
    mismatch = validate("--entry_script", "swagger_score.py", "--sample", str(failing))
    assert mismatch.returncode == 1
    assert "FAIL sample" in mismatch.stdout


def test_broken_init_fails_with_the_error() -> None:
    result = validate("--entry_script", "broken/init_raises.py")
    assert result.returncode == 1
    assert "ZeroDivisionError: model file is corrupt" in result.stdout


def test_import_error_fails() -> None:
    result = validate("--entry_script", "broken/import_error.py", "--format", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["passed"] is False
    assert "module_that_does_not_exist" in json.dumps(report)


def test_junit_output(tmp_path: Path) -> None:
    out = tmp_path / "report.xml"
    result = validate("--entry_script", "valid_score.py", "--format", "junit", "--output", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    suite = ET.parse(out).getroot()
    assert suite.tag == "testsuite"
    assert suite.get("failures") == "0"
    assert int(suite.get("tests", "0")) >= 2


def test_import_error_reports_module_and_line_first_in_few_lines() -> None:
    """The one fact a CI log must show: which module is missing, imported at which line of the script."""
    result = validate("--entry_script", "broken/missing_module.py")
    assert result.returncode == 1
    script = str((RESOURCES / "broken" / "missing_module.py").resolve())
    report = result.stdout.splitlines()
    assert report[2].strip() == (f"ModuleNotFoundError: No module named 'module_that_does_not_exist' at {script}:5"), (
        result.stdout
    )
    assert "Missing module: module_that_does_not_exist" in report[3]
    both = result.stdout + result.stderr
    assert len(both.splitlines()) <= 30, both
    assert both.count("Traceback (most recent call last)") == 1, both
    assert "azureml_inference_server_http/" not in result.stdout  # the server's frames are left out
    assert f'File "{script}", line 5, in <module>' in result.stdout


def test_import_error_facts_in_json_and_junit(tmp_path: Path) -> None:
    script = str((RESOURCES / "broken" / "missing_module.py").resolve())
    result = validate("--entry_script", "broken/missing_module.py", "--format", "json")
    assert result.returncode == 1
    [check] = json.loads(result.stdout)["checks"]
    assert check["passed"] is False
    error = check["error"]
    assert (error["type"], error["module"], error["file"], error["line"]) == (
        "ModuleNotFoundError",
        "module_that_does_not_exist",
        script,
        5,
    )
    assert error["traceback"].count("File ") == 1
    out = tmp_path / "report.xml"
    result = validate("--entry_script", "broken/missing_module.py", "--format", "junit", "--output", str(out))
    assert result.returncode == 1
    [case] = ET.parse(out).getroot().iter("testcase")
    assert (case.get("file"), case.get("line")) == (script, "5")
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("type") == "ModuleNotFoundError"
    assert "No module named 'module_that_does_not_exist'" in failure.get("message", "")
    assert f"{script}:5" in failure.get("message", "")
