"""With tracing on, every item of a request carries its trace id; the existing fields stay as they are."""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Iterator

import pytest
from azmlinfsrv_appinsights import AppInsightsTelemetry
from azmlinfsrv_appinsights.envelopes import TRACE_ID_PROPERTY
from azmlinfsrv_testing.collector import FakeIngestion
from azmlinfsrv_testing.collector import envelope_kind
from azmlinfsrv_testing.collector import envelope_properties
from azureml_inference_server_http.server import tracing
from azureml_inference_server_http.server.telemetry import ModelDataRecord
from azureml_inference_server_http.server.telemetry import RequestRecord

MakeTelemetry = Callable[..., AppInsightsTelemetry]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def in_a_traced_request() -> Iterator[None]:
    """What core's tracing middleware does around a request: the trace id in core's context variable."""
    token = tracing._trace_id.set(TRACE_ID)
    yield
    tracing._trace_id.reset(token)


def request_record(request_id: str) -> RequestRecord:
    return RequestRecord("/score", "http://127.0.0.1/score", "POST", 200, 1_700_000_000.0, 1.5, request_id, "", None)


def _emit_all(telemetry: AppInsightsTelemetry, record: RequestRecord) -> None:
    telemetry.request(record)
    telemetry.exception(ValueError("traced-failure"), "req-t", "client-t")
    telemetry.model_data(ModelDataRecord("req-t", "client-t", input=[1], prediction=[2], extra={"Models": []}))
    logging.getLogger("azmlinfsrv.print").info("traced-print")


@pytest.mark.usefixtures("in_a_traced_request")
def test_every_item_of_a_traced_request_carries_the_trace_id(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry
) -> None:
    telemetry = make_telemetry(ingestion, mdc_enabled=True)
    _emit_all(telemetry, request_record(request_id="req-t"))
    items = ingestion.wait_for(lambda e: TRACE_ID_PROPERTY in envelope_properties(e), timeout=10, count=4)
    assert sorted(envelope_kind(item) for item in items) == ["exception", "request", "trace", "trace"]
    assert {envelope_properties(item)[TRACE_ID_PROPERTY] for item in items} == {TRACE_ID}
    [request] = [item for item in items if envelope_kind(item) == "request"]
    # The fields items had before stay unchanged: the operation id is still the request id.
    assert request["tags"]["ai.operation.id"] == "req-t"
    assert envelope_properties(request)["Request Id"] == "req-t"


def test_untraced_items_have_no_trace_id_property(ingestion: FakeIngestion, make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry(ingestion, mdc_enabled=True)
    _emit_all(telemetry, request_record(request_id="req-t"))
    items = ingestion.wait_for(lambda e: True, timeout=10, count=4)
    assert not [item for item in items if TRACE_ID_PROPERTY in envelope_properties(item)]
