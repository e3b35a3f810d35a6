"""The launcher's pure parts: merging flags into the environment, the banner, launch settings, prefixes."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest
import typer
from azmlinfsrv import banner
from azmlinfsrv import environment
from azmlinfsrv.launch import LaunchError
from azmlinfsrv.launch import resolve
from azmlinfsrv.main import _expand_prefixes
from azmlinfsrv.main import app
from azmlinfsrv.main import main

INSTALLED = metadata.version("azureml-inference-server-http-core")


def merged(options: environment.CliOptions, env: dict[str, str] | None = None, cwd: str = "/srv") -> dict[str, str]:
    target = dict(env or {})
    environment.merge(options, target, cwd=cwd)
    return target


def test_merge_requires_entry_script_or_config() -> None:
    with pytest.raises(environment.MissingEntryScript):
        merged(environment.CliOptions())


def test_merge_upstream_rules(tmp_path: Path) -> None:
    env = merged(
        environment.CliOptions(entry_script="score.py", model_dir="./my/dir", port=8080),
        {"SERVER_PORT": "3535", "AZUREML_MODEL_DIR": "./not/good"},
        cwd=str(tmp_path),
    )
    assert env["AML_APP_ROOT"] == str(tmp_path)
    assert env["AZUREML_ENTRY_SCRIPT"] == os.path.realpath(tmp_path / "score.py")
    assert env["AZUREML_MODEL_DIR"] == "./my/dir"  # verbatim, the flag beats the environment
    assert env["SERVER_PORT"] == "8080"
    assert env["HEALTH_PORT"] == "8080"
    assert env["TRANSPORT_PROTOCOL"] == "grpc"
    assert env["WORKER_COUNT"] == "1"
    assert env["HTTP_X_MS_SERVER_VERSION"] == f"azmlinfsrv/{INSTALLED}"


def test_merge_port_defaults_and_separate_health_port() -> None:
    assert merged(environment.CliOptions(entry_script="s.py"), {"SERVER_PORT": "3535"})["SERVER_PORT"] == "5001"
    separate = merged(
        environment.CliOptions(entry_script="s.py", health_port=8346), {"SEPERATE_HEALTH_ENDPOINT": "true"}
    )
    assert separate["HEALTH_PORT"] == "8346"
    ignored = merged(environment.CliOptions(entry_script="s.py", health_port=8346), {"HEALTH_PORT": "9999"})
    assert ignored["HEALTH_PORT"] == "9999"  # compat: kept without --port, --health_port ignored


def test_server_version_switch() -> None:
    off = merged(environment.CliOptions(entry_script="s.py"), {"SERVER_VERSION_LOG_RESPONSE_ENABLED": "false"})
    assert "HTTP_X_MS_SERVER_VERSION" not in off


def test_validate_app_insights_key() -> None:
    good = {"AML_APP_INSIGHTS_ENABLED": "true", "AML_APP_INSIGHTS_KEY": "0A1B2C3D-1111-2222-3333-444444444444"}
    assert environment.validate(good) == [
        "The environment variable 'AZUREML_MODEL_DIR' has not been set.",
        "Use the --model_dir command line argument to set it.",
        "Valid Application Insights instrumentation key provided.",
    ]
    assert good["AML_APP_INSIGHTS_ENABLED"] == "true"
    bad = {"AML_APP_INSIGHTS_ENABLED": "true", "AML_APP_INSIGHTS_KEY": "my-key", "AZUREML_MODEL_DIR": "m"}
    assert environment.validate(bad) == [
        "Invalid Application Insights instrumentation key provided.",
        "Application Insights has been disabled.",
    ]
    assert bad["AML_APP_INSIGHTS_ENABLED"] == "false"
    odd = {"AML_APP_INSIGHTS_ENABLED": "True", "AML_APP_INSIGHTS_KEY": "x", "AZUREML_MODEL_DIR": "m"}
    environment.validate(odd)
    assert odd["AML_APP_INSIGHTS_ENABLED"] == "false"


def test_banner_hides_the_key_and_keeps_upstream_layout() -> None:
    text = banner.render(
        {"AML_APP_INSIGHTS_KEY": "secret-key", "AML_CORS_ORIGINS": "*", "SERVER_PORT": "5001", "HEALTH_PORT": "5001"}
    )
    assert "secret-key" not in text
    assert "Application Insights Key: AppInsights key provided" in text
    assert "CORS for the specified origins: Enabling CORS for *" in text
    assert "Worker Timeout (seconds): None" in text
    assert "Liveness Probe: GET   127.0.0.1:5001/" in text
    assert "Score:          POST  127.0.0.1:5001/score" in text
    assert text.startswith(f"\nAzure ML Inferencing HTTP server v{INSTALLED}\n")


def test_resolve_reconciles_worker_timeout_with_scoring_timeout(tmp_path: Path) -> None:
    env = {"AML_APP_ROOT": str(tmp_path), "SCORING_TIMEOUT_MS": "10000", "WORKER_TIMEOUT": "1"}
    assert resolve(env).worker_timeout == 15
    (tmp_path / "config.json").write_text('{"SCORING_TIMEOUT_MS": 60000, "WORKER_THREADS": 3}')
    from_file = resolve({"AML_APP_ROOT": str(tmp_path)})
    assert from_file.worker_timeout == 300  # the default already covers 60 s + 5
    assert from_file.threads == 3


def test_resolve_rejects_bad_values() -> None:
    with pytest.raises(LaunchError, match="WORKER_COUNT"):
        resolve({"WORKER_COUNT": "two", "AML_APP_ROOT": "/nonexistent-root"})
    with pytest.raises(LaunchError, match="Unknown server"):
        resolve({"AML_APP_ROOT": "/nonexistent-root"}, server="nginx")


def test_unambiguous_prefixes_expand() -> None:
    command = typer.main.get_command(app)
    assert _expand_prefixes(["--entry", "s.py", "--model_d=m"], command) == ["--entry_script", "s.py", "--model_dir=m"]
    # "--po" can only be --port.
    assert _expand_prefixes(["--po", "1"], command) == ["--port", "1"]


def test_version_option_prints_the_installed_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"azmlinfsrv {INSTALLED}\n"


def test_help_lists_version_and_names_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert f"Azure ML Inferencing HTTP server v{INSTALLED}" in out
    assert "--version" in out


def test_package_version_is_the_one_version_of_every_distribution() -> None:
    import azureml_inference_server_http

    # The build writes __version__ from pyproject.toml; a stale or hand-edited copy would disagree with metadata.
    assert azureml_inference_server_http.__version__ == INSTALLED
    for distribution in (
        "azureml-inference-server-http-cli",
        "azureml-inference-server-http-appinsights",
        "azureml-inference-server-http-testing",
    ):
        assert metadata.version(distribution) == INSTALLED
