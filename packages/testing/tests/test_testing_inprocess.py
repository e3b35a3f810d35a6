"""The in-process client used directly: scoring, and what it keeps away from the test process."""

from __future__ import annotations

import builtins
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from azmlinfsrv_testing import InProcessClient
from azureml_inference_server_http.exceptions import UserScriptException
from azureml_inference_server_http.exceptions import UserScriptImportException

pytest_plugins = ["testing_fixtures"]
WriteFile = Callable[..., Path]

HELPER_SCRIPT = """
import h3_helper


def init():
    pass


def run(raw_data):
    import h3_helper_lazy  # imported while a request runs

    return {"value": h3_helper.VALUE, "lazy": h3_helper_lazy.VALUE}
"""


def test_inprocess_scores_with_model_dir_and_env(write_file: WriteFile, echo_source: str, tmp_path: Path) -> None:
    script = write_file("app/score.py", echo_source)
    models = tmp_path / "models"
    models.mkdir()
    with InProcessClient(script, model_dir=models, env={"H3_FLAG": "on"}) as client:
        response = client.score(json={"data": [1, 2, 3]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["body"] == '{"data": [1, 2, 3]}'
        assert body["seen"] == {"model_dir": str(models), "app_root": str(script.parent.resolve()), "flag": "on"}
        assert body["flag"] == "on"
        assert body["set_by_init"] == "yes"  # the script's own change survives from init() to run()
        assert response.headers["X-MS-RUN-FUNCTION-FAILED"] == "False"
        assert client.health().text == "Healthy"
        swagger = client.swagger()
        assert swagger.status_code == 200 and swagger.json()["swagger"] == "2.0"
        assert client.swagger(version="3").json()["openapi"].startswith("3.0")
        ready = client.request("GET", "/health/ready")
        assert ready.json()["ready"] is True


def test_inprocess_get_sends_the_query_as_json(write_file: WriteFile, echo_source: str) -> None:
    with InProcessClient(write_file("score.py", echo_source)) as client:
        response = client.score(method="GET", params={"a": "1", "b": "x"})
        assert response.json()["body"] == '{"a": 1, "b": "x"}'
        assert client.score(data="plain text").json()["body"] == "plain text"


def test_inprocess_keeps_the_environment_print_and_path_of_the_caller(
    write_file: WriteFile, echo_source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("H3_FLAG", "outer")
    monkeypatch.delenv("H3_SET_BY_INIT", raising=False)
    environ_before = dict(os.environ)
    path_before = list(sys.path)
    print_before = builtins.print
    script = write_file("score.py", echo_source)
    with InProcessClient(script, env={"H3_FLAG": "inner"}) as client:
        assert dict(os.environ) == environ_before
        assert sys.path == path_before
        assert builtins.print is print_before
        assert client.score(json={}).json()["flag"] == "inner"
        assert dict(os.environ) == environ_before
        assert builtins.print is print_before


def test_inprocess_hides_inherited_server_settings(
    write_file: WriteFile, echo_source: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path / "from-the-shell"))
    monkeypatch.setenv("AML_APP_ROOT", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("scoring_timeout_ms", "1")  # the server reads names case-insensitively
    script = write_file("app/score.py", echo_source)
    with InProcessClient(script) as client:
        seen = client.score(json={}).json()["seen"]
        assert seen["model_dir"] is None
        assert seen["app_root"] == str(script.parent.resolve())
        assert client.request("GET", "/health/ready").status_code == 200
    with InProcessClient(script, env={"AZUREML_MODEL_DIR": "given"}) as client:
        assert client.score(json={}).json()["seen"]["model_dir"] == "given"
    assert os.environ["AZUREML_MODEL_DIR"] == str(tmp_path / "from-the-shell")


def test_inprocess_clients_do_not_see_each_others_env(
    write_file: WriteFile, echo_source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("H3_FLAG", "outer")
    script = write_file("score.py", echo_source)
    with (
        InProcessClient(script, env={"H3_FLAG": "a"}) as first,
        InProcessClient(script, env={"H3_FLAG": None}) as removed,
        InProcessClient(script) as inherited,
    ):
        assert first.score(json={}).json()["flag"] == "a"
        assert removed.score(json={}).json()["flag"] is None
        monkeypatch.setenv("H3_FLAG", "changed later")
        assert inherited.score(json={}).json()["flag"] == "changed later"  # the caller's environment shows through
        assert first.score(json={}).json()["flag"] == "a"


def test_inprocess_print_goes_to_the_print_logger_only_while_the_script_runs(
    write_file: WriteFile, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    printed_by_test: list[str] = []

    def test_print(*objects: object, **kwargs: object) -> None:
        printed_by_test.append(" ".join(map(str, objects)))

    # The test's own print() is whatever it was (another library may have replaced it): here a recorder.
    monkeypatch.setattr(builtins, "print", test_print)
    script = write_file(
        "score.py",
        """
        def init():
            pass

        def run(raw_data):
            print("h3 printed in run")
            return {}
        """,
    )
    with caplog.at_level(logging.INFO, logger="azmlinfsrv.print"), InProcessClient(script) as client:
        client.score(json={})
        print("printed by the test")
        assert builtins.print is test_print
    messages = [record.getMessage() for record in caplog.records if record.name == "azmlinfsrv.print"]
    assert "h3 printed in run" in messages
    assert "printed by the test" not in messages
    assert "printed by the test" in printed_by_test
    assert "h3 printed in run" not in printed_by_test


def test_inprocess_sibling_modules_belong_to_their_script(write_file: WriteFile, tmp_path: Path) -> None:
    scripts = []
    for value in ("one", "two"):
        write_file(f"{value}/h3_helper.py", f"VALUE = {value!r}\n")
        write_file(f"{value}/h3_helper_lazy.py", f"VALUE = {value!r}\n")
        scripts.append(write_file(f"{value}/score.py", HELPER_SCRIPT))
    with InProcessClient(scripts[0]) as one, InProcessClient(scripts[1]) as two:
        assert "h3_helper" not in sys.modules
        assert one.score(json={}).json() == {"value": "one", "lazy": "one"}
        assert two.score(json={}).json() == {"value": "two", "lazy": "two"}
        assert one.score(json={}).json() == {"value": "one", "lazy": "one"}
        assert "h3_helper" not in sys.modules and "h3_helper_lazy" not in sys.modules
        assert str(tmp_path / "one") not in sys.path


def test_inprocess_init_failure_raises_with_the_scripts_exception(write_file: WriteFile) -> None:
    script = write_file(
        "score.py",
        """
        import os

        def init():
            os.environ["H3_LEAK"] = "1"
            raise ValueError("h3 init failed")

        def run(raw_data):
            return {}
        """,
    )
    print_before = builtins.print
    with pytest.raises(UserScriptException) as info:
        InProcessClient(script)
    assert isinstance(info.value.__cause__, ValueError)
    assert str(info.value.__cause__) == "h3 init failed"
    assert "H3_LEAK" not in os.environ
    assert builtins.print is print_before


def test_inprocess_syntax_error_raises(write_file: WriteFile) -> None:
    script = write_file("score.py", "def init(:\n    pass\n")
    with pytest.raises(UserScriptImportException) as info:
        InProcessClient(script)
    assert isinstance(info.value.__cause__, SyntaxError)


def test_inprocess_run_failure_is_a_500(write_file: WriteFile, caplog: pytest.LogCaptureFixture) -> None:
    script = write_file(
        "score.py",
        """
        def init():
            pass

        def run(raw_data):
            raise KeyError("h3 run failed")
        """,
    )
    with InProcessClient(script) as client:
        response = client.score(json={})
    assert response.status_code == 500
    assert response.headers["x-ms-run-function-failed"] == "True"
    assert "h3 run failed" in caplog.text


def test_inprocess_missing_script_and_closed_client(write_file: WriteFile, echo_source: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="score script not found"):
        InProcessClient(tmp_path / "missing.py")
    client = InProcessClient(write_file("score.py", echo_source))
    client.close()
    client.close()  # idempotent
    assert "closed" in repr(client)
    with pytest.raises(RuntimeError, match="closed"):
        client.score(json={})
