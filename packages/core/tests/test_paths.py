"""The one-line descriptions of a wrong entry script or model directory, and the model-directory warning."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from azureml_inference_server_http import paths
from azureml_inference_server_http.server import model_dir


def test_entry_script_errors_name_the_path(tmp_path: Path) -> None:
    script = tmp_path / "score.py"
    script.write_text("def init(): pass\n")
    assert paths.entry_script_error(str(script)) is None
    missing = str(tmp_path / "nope.py")
    error = paths.entry_script_error(missing)
    assert isinstance(error, FileNotFoundError)
    assert paths.describe_entry_script_error(missing, error) == f"Entry script not found: {missing}"
    directory = paths.entry_script_error(str(tmp_path))
    assert isinstance(directory, IsADirectoryError)
    assert paths.describe_entry_script_error(str(tmp_path), directory) == (
        f"Entry script is a directory, not a Python file: {tmp_path}"
    )
    denied = PermissionError(13, "Permission denied", str(script))
    assert paths.describe_entry_script_error(str(script), denied) == (
        f"Entry script is not readable (permission denied): {script}"
    )


def test_model_dir_problems_say_unset_or_name_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert paths.model_dir_problem("") == "AZUREML_MODEL_DIR is not set: the score script has no model directory"
    assert paths.model_dir_problem(None) == paths.model_dir_problem("")
    missing = tmp_path / "models"
    assert paths.model_dir_problem(str(missing)) == f"Model directory does not exist: {missing}"
    monkeypatch.chdir(tmp_path)
    assert paths.model_dir_problem("models") == (
        f"Model directory does not exist: {os.path.abspath('models')} (AZUREML_MODEL_DIR=models)"
    )
    missing.write_text("not a folder")
    assert paths.model_dir_problem(str(missing)) == f"Model directory is not a directory: {missing}"
    missing.unlink()
    missing.mkdir()
    assert paths.model_dir_problem(str(missing)) is None
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a non-root user without permission sees it
    assert paths.model_dir_problem(str(missing)) == f"Model directory is not readable (permission denied): {missing}"


def test_model_ids_warning_is_never_an_empty_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="azmlinfsrv.trace")
    assert model_dir.model_ids("") == []
    assert model_dir.model_ids(str(tmp_path / "gone")) == []
    warnings = [record.getMessage() for record in caplog.records if record.name == "azmlinfsrv.trace"]
    assert warnings == [
        "AZUREML_MODEL_DIR is not set: the score script has no model directory",
        f"Model directory does not exist: {tmp_path / 'gone'}",
    ]
