"""The instrumentation key appears only in each envelope's ``iKey`` field, never in logs (docs/guarantees.md#r16)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from azmlinfsrv_appinsights import AppInsightsTelemetry
from azmlinfsrv_appinsights.redaction import REDACTED
from azmlinfsrv_appinsights.redaction import Redactor
from azmlinfsrv_appinsights.transport import TRANSPORT_LOGGER
from azmlinfsrv_testing.collector import FakeIngestion
from azureml_inference_server_http.server.telemetry import ModelDataRecord
from azureml_inference_server_http.server.telemetry import RequestRecord

MakeTelemetry = Callable[..., AppInsightsTelemetry]


def without_ikey(envelope: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in envelope.items() if k != "iKey"}).lower()


def exercise(telemetry: AppInsightsTelemetry, key: str) -> None:
    """Every kind of item, each carrying the key in a user-controlled field."""
    telemetry.request(
        RequestRecord(
            name="/score",
            url=f"http://127.0.0.1/score?k={key}",
            method="POST",
            status_code=200,
            start_time=time.time(),
            duration_ms=1.0,
            request_id=key,
            client_request_id=key.upper(),
            response_value=f"response {key}",
        )
    )
    telemetry.exception(RuntimeError(f"failed with {key}"), "req", "")
    telemetry.model_data(ModelDataRecord(request_id="req", client_request_id="", input=key, prediction=[key]))
    logging.getLogger("azmlinfsrv.print").info("AML_APP_INSIGHTS_KEY:%s", key)


def test_redactor_replaces_every_case() -> None:
    redactor = Redactor(["0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"])
    text = "a 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 b 0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"
    assert redactor.text(text) == f"a {REDACTED} b {REDACTED}"
    assert redactor.deep({"x": [text]}) == {"x": [f"a {REDACTED} b {REDACTED}"]}


def test_key_appears_only_in_ikey(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry, server_logger: logging.Logger
) -> None:
    key = ingestion.instrumentation_key
    telemetry = make_telemetry(ingestion, mdc_enabled=True)
    exercise(telemetry, key)
    envelopes = ingestion.wait_for(lambda e: True, timeout=10, count=4)
    assert {e["iKey"] for e in envelopes} == {key}
    for envelope in envelopes:
        assert key.lower() not in without_ikey(envelope)
    assert any(REDACTED in without_ikey(e) for e in envelopes)


@pytest.mark.parametrize("mode", ["ok", "error", "partial", "hang", "refuse"])
def test_key_never_logged_at_any_level(
    mode: str,
    ingestion: FakeIngestion,
    make_telemetry: MakeTelemetry,
    server_logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = ingestion.instrumentation_key
    ingestion.set_mode(mode)
    with caplog.at_level(logging.DEBUG):
        telemetry = make_telemetry(ingestion, mdc_enabled=True, send_timeout=0.5)
        # Not exercise(): its print record carries the key on purpose, and caplog shows records as logged.
        telemetry.request(
            RequestRecord("/score", "http://127.0.0.1/score", "GET", 200, time.time(), 1.0, "r", "", "ok")
        )
        telemetry.exception(RuntimeError("boom"), "r", "")
        telemetry.flush(3)
        telemetry.close(timeout=1)
    assert caplog.records, "expected some log records to inspect"
    assert key.lower() not in caplog.text.lower()
    assert key.lower() not in (telemetry.stats().last_error or "").lower()


def test_partial_rejection_is_counted_and_its_envelope_dump_redacted(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    # On a 206 the library logs each rejected envelope, iKey included; that message must be captured and redacted.
    key = ingestion.instrumentation_key
    ingestion.set_mode("partial")
    telemetry = make_telemetry(ingestion)
    with caplog.at_level(logging.DEBUG):
        telemetry.exception(RuntimeError("rejected"), "r", "")
        telemetry.flush(5)
    stats = telemetry.stats()
    assert stats.dropped_send_failed == 1
    assert stats.last_error is not None and "Data drop" in stats.last_error
    assert REDACTED in stats.last_error and key not in stats.last_error
    assert key not in caplog.text


def test_library_records_from_other_threads_are_redacted(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    key = ingestion.instrumentation_key
    make_telemetry(ingestion)
    with caplog.at_level(logging.DEBUG, logger=TRANSPORT_LOGGER):
        worker = threading.Thread(target=logging.getLogger(TRANSPORT_LOGGER).warning, args=("dump %s", key))
        worker.start()
        worker.join(5)
    assert [r.getMessage() for r in caplog.records if r.name == TRANSPORT_LOGGER] == [f"dump {REDACTED}"]
