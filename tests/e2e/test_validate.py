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
