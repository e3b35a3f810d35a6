"""Settings from the environment and config.json (docs/compatibility.md#configuration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from azureml_inference_server_http.config import ServerConfig
from azureml_inference_server_http.config import format_config_error
from azureml_inference_server_http.exceptions import ConfigError
from azureml_inference_server_http.exceptions import ConfigFileError


def test_defaults() -> None:
    config = ServerConfig.from_env({"AML_APP_ROOT": "/nonexistent-app-root"})
    assert config.scoring_timeout_ms == 3_600_000
    assert config.service_name == "ML service"
    assert config.service_version == "1.0"
    assert config.hostname == "Unknown"
    assert config.max_request_body_bytes == 100 * 1024 * 1024
    assert not config.telemetry_enabled


def test_env_names_case_insensitive_and_lax_ints() -> None:
    assert ServerConfig.from_env({"scoring_timeout_ms": "5"}).scoring_timeout_ms == 5
    assert ServerConfig.from_env({"SCORING_TIMEOUT_MS": "2.0"}).scoring_timeout_ms == 2


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "SCORING_TIMEOUT_MS",
            "string",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            "SCORING_TIMEOUT_MS",
            "1.5",
            "Input should be a valid integer, got a number with a fractional part",
        ),
        (
            "APP_INSIGHTS_LOG_RESPONSE_ENABLED",
            "maybe",
            "Input should be a valid boolean, unable to interpret input",
        ),
        (
            "AZUREML_DEBUG_PORT",
            "x",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
    ],
)
def test_invalid_values(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServerConfig.from_env({name: value})
    assert info.value.errors == [(name, message)]
    block = format_config_error(info.value)
    assert block == (
        "\n===============Configuration Error=================\n"
        f"{name}: {message} (environment variable: {name})\n" + "=" * 51
    )


@pytest.mark.parametrize("text", ["1", "true", "T", "yes", "Y", "on", "TRUE"])
def test_lax_booleans(text: str) -> None:
    assert ServerConfig.from_env({"AML_APP_INSIGHTS_ENABLED": text}).app_insights_enabled


def test_config_file_precedence_and_ignored_keys(tmp_path: Path) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(
        json.dumps(
            {
                "SCORING_TIMEOUT_MS": 1234,
                "SERVICE_NAME": "from-file",
                "AML_CORS_ORIGINS": "https://ignored.example",
                "AML_APP_INSIGHTS_ENABLED": True,
                "EXTRA_KEY": False,
                "AZUREML_MODEL_DIR": None,
            }
        )
    )
    config = ServerConfig.from_env({"AML_APP_ROOT": str(tmp_path), "SCORING_TIMEOUT_MS": "99"})
    assert config.scoring_timeout_ms == 99
    assert config.service_name == "from-file"
    assert config.cors_origins is None
    assert config.app_insights_enabled is None  # not given: config.json cannot set it
    assert config.model_dir == ""
    # Keys that config.json cannot set are reported with the unknown ones.
    assert config.unknown_config_keys == (
        "AML_CORS_ORIGINS",
        "AML_APP_INSIGHTS_ENABLED",
        "EXTRA_KEY",
    )
    assert config.config_file == str(config_file)


def test_config_file_discovery_order(tmp_path: Path) -> None:
    app_root = tmp_path / "root"
    script_dir = tmp_path / "scripts"
    app_root.mkdir()
    script_dir.mkdir()
    (script_dir / "config.json").write_text(json.dumps({"SERVICE_NAME": "beside-script"}))
    env = {
        "AML_APP_ROOT": str(app_root),
        "AZUREML_ENTRY_SCRIPT": str(script_dir / "score.py"),
    }
    assert ServerConfig.from_env(env).service_name == "beside-script"
    (app_root / "config.json").write_text(json.dumps({"SERVICE_NAME": "app-root"}))
    assert ServerConfig.from_env(env).service_name == "app-root"
    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps({"SERVICE_NAME": "explicit"}))
    assert ServerConfig.from_env({**env, "AZUREML_CONFIG_FILE": str(explicit)}).service_name == "explicit"
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert ServerConfig.from_env({**env, "AZUREML_CONFIG_FILE": str(empty)}).service_name == "app-root"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_bad_config_file(tmp_path: Path, content: str) -> None:
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigFileError):
        ServerConfig.from_env({"AML_APP_ROOT": str(tmp_path)})


def test_model_data_collection_accepts_both_names() -> None:
    assert ServerConfig.from_env({"AML_MDC_STORAGE_ENABLED": "true"}).mdc_storage_enabled
    assert ServerConfig.from_env({"AML_MODEL_DC_STORAGE_ENABLED": "true"}).mdc_storage_enabled


def test_key_not_in_repr() -> None:
    config = ServerConfig.from_env({"AML_APP_INSIGHTS_KEY": "00000000-1111-2222-3333-444444444444"})
    assert "00000000-1111" not in repr(config)
