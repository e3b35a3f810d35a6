"""When telemetry is asked for, what a connection string means, and what is logged about it."""

from __future__ import annotations

import logging

import pytest

from azureml_inference_server_http import ingestion
from azureml_inference_server_http.config import ServerConfig
from azureml_inference_server_http.server import state as state_module
from azureml_inference_server_http.server.state import ServerState
from azureml_inference_server_http.server.telemetry import NoTelemetry

KEY = "0a1b2c3d-1111-2222-3333-444444444444"
CS = f"InstrumentationKey={KEY};IngestionEndpoint=http://127.0.0.1:9/"


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": CS}, True),  # the connection string alone asks for telemetry
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "   "}, False),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": CS, "AML_APP_INSIGHTS_ENABLED": "false"}, False),
        ({"APPLICATIONINSIGHTS_CONNECTION_STRING": CS, "AML_APP_INSIGHTS_ENABLED": "true"}, True),
        # compat: upstream 1.5.1 needs the switch for a bare key.
        ({"AML_APP_INSIGHTS_KEY": KEY}, False),
        ({"AML_APP_INSIGHTS_KEY": KEY, "AML_APP_INSIGHTS_ENABLED": "true"}, True),
        ({"AML_APP_INSIGHTS_ENABLED": "true"}, False),
    ],
)
def test_telemetry_enabled_rule(environ: dict[str, str], enabled: bool) -> None:
    config = ServerConfig.from_env({"AML_APP_ROOT": "/nonexistent-app-root", **environ})
    assert config.telemetry_enabled is enabled


def test_credential_setting_is_read_from_the_environment_only() -> None:
    config = ServerConfig.from_env({"AML_APP_ROOT": "/nonexistent", "AZMLINFSRV_APPINSIGHTS_CREDENTIAL": "default"})
    assert config.app_insights_credential == "default"


@pytest.mark.parametrize(
    ("config", "logged"), [(ServerConfig(), False), (ServerConfig(app_insights_connection_string=CS), True)]
)
def test_starting_up_line_only_when_telemetry_is_asked_for(
    config: ServerConfig, logged: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(state_module, "load_telemetry", lambda config: NoTelemetry())
    with caplog.at_level(logging.INFO, logger="azmlinfsrv"):
        ServerState(config).prepare()
    assert ("Starting up app insights client" in caplog.messages) is logged


def test_resolve_reads_entra_and_masks_the_key() -> None:
    target = ingestion.resolve(None, f"{CS};Authorization=AAD")
    assert target.entra
    assert target.endpoint == "http://127.0.0.1:9"
    assert target.describe() == "http://127.0.0.1:9 (instrumentation key 0a1b2c3d..., Microsoft Entra ID)"
    assert KEY not in repr(target)
    assert ingestion.mask("short") == "..."


def test_a_guid_is_not_mistaken_for_a_connection_string() -> None:
    assert ingestion.looks_like_connection_string(CS)
    assert not ingestion.looks_like_connection_string(KEY)
