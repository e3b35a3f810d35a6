"""Loading entry scripts and analysing run() (docs/compatibility.md#score-script)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from azureml_inference_server_http.exceptions import UserScriptError
from azureml_inference_server_http.exceptions import UserScriptException
from azureml_inference_server_http.exceptions import UserScriptImportException
from azureml_inference_server_http.server import create_app
from azureml_inference_server_http.server.user_script import MissingMainModule


@pytest.mark.parametrize(
    ("source", "error", "text"),
    [
        (
            "def init(): pass\n",
            UserScriptError,
            "does not have a run() function defined.",
        ),
        (
            "def run(data): pass\n",
            UserScriptError,
            "does not have a init() function defined.",
        ),
        (
            "def init(): pass\ndef run(*args): pass\n",
            UserScriptError,
            "run() cannot accept positional-only arguments, *args, or **kwargs.",
        ),
        (
            "def init(): pass\ndef run(**kw): pass\n",
            UserScriptError,
            "run() cannot accept positional-only arguments, *args, or **kwargs.",
        ),
        (
            "def init(): pass\ndef run(a, /): pass\n",
            UserScriptError,
            "run() cannot accept positional-only arguments, *args, or **kwargs.",
        ),
        (
            "def init(): pass\ndef run(): pass\n",
            UserScriptError,
            "run() needs to accept an argument for input data.",
        ),
        (
            "def init(): pass\ndef run(request_headers): pass\n",
            UserScriptError,
            'run() needs to accept an argument other than "request_headers".',
        ),
    ],
)
def test_contract_violations(make_app: Callable[..., Flask], source: str, error: type, text: str) -> None:
    with pytest.raises(
        error,
        match=".*" + text.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*"),
    ):
        make_app(source)


def test_both_decorators_rejected(make_app: Callable[..., Flask]) -> None:
    source = """
from azureml_inference_server_http.api.aml_request import rawhttp
from inference_schema.schema_decorators import input_schema
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
def init(): pass
@rawhttp
@input_schema("num", StandardPythonParameterType(1))
def run(num): pass
"""
    with pytest.raises(UserScriptError, match="cannot be decorated with both"):
        make_app(source)


@pytest.mark.parametrize(
    ("source", "cause"),
    [
        ("def init():\n        pass\n  x = 1\n", IndentationError),
        ("def init(:\n", SyntaxError),
        ("import module_that_does_not_exist\n", ModuleNotFoundError),
        ("import sys\nsys.exit(4)\n", SystemExit),
    ],
)
def test_import_failures_wrap_the_cause(make_app: Callable[..., Flask], source: str, cause: type) -> None:
    with pytest.raises(UserScriptImportException, match="Failed to import user script") as info:
        make_app(source)
    assert isinstance(info.value.__cause__, cause)


def test_missing_file(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserScriptImportException) as info:
        create_app(
            environ={
                "AML_APP_ROOT": str(tmp_path),
                "AZUREML_ENTRY_SCRIPT": str(tmp_path / "missing.py"),
            }
        )
    assert isinstance(info.value.__cause__, FileNotFoundError)
    assert "No such file or directory." in caplog.text


def test_init_failure_is_user_exception_and_lists_model_dir(  # type: ignore[no-untyped-def]
    make_app: Callable[..., Flask], tmp_path: Path, caplog
) -> None:
    caplog.set_level("INFO")
    model_dir = tmp_path / "models"
    (model_dir / "m1" / "1").mkdir(parents=True)
    (model_dir / "m1" / "1" / "a.pkl").write_text("x")
    with pytest.raises(UserScriptException) as info:
        make_app(
            "def init():\n    1 / 0\ndef run(data): pass\n",
            env={"AZUREML_MODEL_DIR": str(model_dir)},
        )
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    messages = [record.getMessage() for record in caplog.records]
    assert "User's init function failed" in messages
    assert "Model Directory Contents:" in messages
    assert ["models/", "    m1/", "        1/", "            a.pkl"] == [
        m for m in messages if m.strip().endswith(("/", ".pkl")) and "Contents" not in m
    ]


def test_relative_entry_script_resolves_against_app_root(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text("def init(): pass\ndef run(data): return 'ok'\n")
    app = create_app(environ={"AML_APP_ROOT": str(tmp_path), "AZUREML_ENTRY_SCRIPT": "score.py"})
    assert app.test_client().post("/score").get_json() == "ok"


def test_driver_module_run_is_used(tmp_path: Path) -> None:
    (tmp_path / "inner.py").write_text("def init(): pass\ndef run(data): return 'inner'\n")
    (tmp_path / "driver.py").write_text(
        "import importlib.util, os\n"
        "spec = importlib.util.spec_from_file_location('service_driver', os.path.join(os.path.dirname(__file__), "
        "'inner.py'))\n"
        "driver_module = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(driver_module)\n"
        "called = []\n"
        "def init():\n    called.append(1)\n"
        "def run(data): return 'outer'\n"
    )
    app = create_app(environ={"AML_APP_ROOT": str(tmp_path), "AZUREML_ENTRY_SCRIPT": "driver.py"})
    assert app.test_client().post("/score").get_json() == "inner"


def test_main_module_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "main.py").write_text("def init(): pass\ndef run(data): return 'main'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = create_app(environ={"AML_APP_ROOT": str(tmp_path)})
    assert app.test_client().post("/score").get_json() == "main"
    sys.modules.pop("main", None)


def test_no_main_module(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    sys.modules.pop("main", None)
    with pytest.raises(MissingMainModule):
        create_app(environ={"AML_APP_ROOT": str(tmp_path)})
    assert "No score script found. Expected score script main.py." in caplog.text
    assert "Current contents of AML_APP_ROOT" in caplog.text


def test_init_runs_in_background_and_readiness_follows(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    (tmp_path / "score.py").write_text(
        "import os, time\n"
        f"def init():\n    while not os.path.exists({str(gate)!r}):\n        time.sleep(0.01)\n"
        "def run(data): return 'ok'\n"
    )
    app = create_app(
        environ={"AML_APP_ROOT": str(tmp_path), "AZUREML_ENTRY_SCRIPT": "score.py"},
        background_init=True,
    )
    client = app.test_client()
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.get_json()["phase"] == "initializing"
    gate.write_text("go")
    assert app.extensions["azmlinfsrv.state"].wait_ready(5)
    assert client.get("/health/ready").status_code == 200
    assert client.post("/score").get_json() == "ok"


def test_source_directory_on_path(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "helper_mod_for_test.py").write_text("def value(): return {'key': 'value'}\n")
    (tmp_path / "score.py").write_text(
        "import helper_mod_for_test\ndef init(): pass\ndef run(data): return helper_mod_for_test.value()\n"
    )
    environ = {
        "AML_APP_ROOT": str(tmp_path),
        "AZUREML_ENTRY_SCRIPT": "score.py",
        "AZUREML_SOURCE_DIRECTORY": "src",
    }
    assert create_app(environ=environ).test_client().post("/score").get_json() == {"key": "value"}
    assert os.path.join(str(tmp_path), "src") in sys.path
