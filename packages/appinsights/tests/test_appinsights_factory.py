"""The entry point: how core finds the plugin, and when the plugin declines to start."""

from __future__ import annotations

import logging
from importlib import metadata

import azmlinfsrv_appinsights
import pytest
from azmlinfsrv_appinsights import AppInsightsTelemetry
from azmlinfsrv_appinsights import create_telemetry
from azmlinfsrv_testing.collector import FakeIngestion
from azureml_inference_server_http.config import ServerConfig
from azureml_inference_server_http.server import telemetry as seam
from azureml_inference_server_http.server.telemetry import RequestRecord

KEY = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def test_create_telemetry_is_registered_under_cores_entry_point_group() -> None:
    entry_points = metadata.entry_points(group=seam.ENTRY_POINT_GROUP)
    loaded = [entry_point.load() for entry_point in entry_points]
    assert azmlinfsrv_appinsights.create_telemetry in loaded


def test_load_telemetry_finds_the_plugin(ingestion: FakeIngestion) -> None:
    config = ServerConfig(app_insights_enabled=True, app_insights_connection_string=ingestion.connection_string)
    telemetry = seam.load_telemetry(config)
    try:
        assert isinstance(telemetry, AppInsightsTelemetry)
    finally:
        telemetry.close()


def test_create_telemetry_returns_none_when_disabled() -> None:
    assert create_telemetry(ServerConfig(app_insights_enabled=False, app_insights_key=KEY)) is None
    assert create_telemetry(ServerConfig(app_insights_enabled=True)) is None


def test_create_telemetry_uses_the_connection_string_endpoint(ingestion: FakeIngestion) -> None:
    config = ServerConfig(
        app_insights_enabled=True,
        app_insights_key=ingestion.instrumentation_key,
        app_insights_connection_string=ingestion.connection_string,
        service_name="svc-factory",
    )
    telemetry = create_telemetry(config)
    assert telemetry is not None
    try:
        logging.getLogger("azmlinfsrv").warning("factory-marker")
        assert telemetry.flush_and_wait(10)
        [item] = ingestion.wait_for(lambda e: e["data"]["baseData"]["message"] == "factory-marker", timeout=10)
        assert item["iKey"] == ingestion.instrumentation_key
        assert item["tags"]["ai.cloud.role"] == "svc-factory"
    finally:
        telemetry.close()


def test_create_telemetry_with_an_invalid_key_warns_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    secret = "definitely-not-a-guid-but-secret"
    config = ServerConfig(app_insights_enabled=True, app_insights_key=secret)
    with caplog.at_level(logging.DEBUG):
        assert create_telemetry(config) is None
    assert "Application Insights has been disabled" in caplog.text
    assert secret not in caplog.text


def test_create_telemetry_honours_log_response_switch(ingestion: FakeIngestion) -> None:
    config = ServerConfig(
        app_insights_enabled=True,
        app_insights_connection_string=ingestion.connection_string,
        app_insights_log_response_enabled=False,
    )
    telemetry = create_telemetry(config)
    assert telemetry is not None
    try:
        telemetry.request(
            RequestRecord(
                name="/score",
                url="http://127.0.0.1/score",
                method="POST",
                status_code=200,
                start_time=0.0,
                duration_ms=1.0,
                request_id="r-1",
                client_request_id="",
                response_value="the response body",
            )
        )
        telemetry.flush(10)
        [item] = ingestion.wait_for(lambda e: e["data"]["baseType"] == "RequestData", timeout=10)
        assert "Response Value" not in item["data"]["baseData"]["properties"]
    finally:
        telemetry.close()
