"""What reaches the ingestion endpoint: request, exception, trace and model data items.

See docs/compatibility.md#telemetry.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from azmlinfsrv_appinsights import AppInsightsTelemetry
from azmlinfsrv_appinsights import ExporterOptions
from azmlinfsrv_appinsights.envelopes import format_duration
from azmlinfsrv_testing.collector import FakeIngestion
from azmlinfsrv_testing.collector import envelope_kind
from azmlinfsrv_testing.collector import envelope_properties
from azmlinfsrv_testing.timing import time_limit
from azureml_inference_server_http.server.telemetry import ModelDataRecord
from azureml_inference_server_http.server.telemetry import RequestRecord

MakeTelemetry = Callable[..., AppInsightsTelemetry]

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def request_record(**overrides: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "name": "/score",
        "url": "http://127.0.0.1:5001/score",
        "method": "POST",
        "status_code": 200,
        "start_time": 1_700_000_000.25,
        "duration_ms": 12.4,
        "request_id": "req-1",
        "client_request_id": "client-1",
        "response_value": '{"result": 1}',
    }
    values.update(overrides)
    return RequestRecord(**values)


def of_kind(kind: str) -> Any:
    return lambda envelope: envelope_kind(envelope) == kind


def test_request_item_carries_the_behavior_9_2_fields(ingestion: FakeIngestion, make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry(ingestion)
    telemetry.request(request_record(status_code=500, response_value='{"message": "boom"}'))
    [item] = ingestion.wait_for(of_kind("request"), timeout=10)
    assert item["name"] == "Microsoft.ApplicationInsights.Request"
    assert item["iKey"] == ingestion.instrumentation_key
    assert item["time"] == "2023-11-14T22:13:20.250000Z"
    base = item["data"]["baseData"]
    assert base["name"] == "/score"
    assert base["url"] == "http://127.0.0.1:5001/score"
    assert base["responseCode"] == "500"
    assert base["success"] is False
    assert base["duration"] == "00:00:00.012"
    assert base["properties"] == {
        "Container Id": "container-7",
        "Request Id": "req-1",
        "Client Request Id": "client-1",
        "Response Value": '{"message": "boom"}',
        "name": "/score",
        "url": "http://127.0.0.1:5001/score",
        "start_time": "2023-11-14T22:13:20.250000Z",
        "duration": "00:00:00.012",
        "resultCode": "500",
        "success": "False",
        "http_method": "POST",
        "Workspace Name": "ws-1",
        "Service Name": "svc-1",
    }
    assert item["tags"]["ai.operation.id"] == "req-1"
    assert item["tags"]["ai.cloud.role"] == "svc-1"
    assert item["tags"]["ai.cloud.roleInstance"] == "container-7"


def test_request_item_success_follows_the_status(ingestion: FakeIngestion, make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry(ingestion)
    for status in (200, 399, 400, 431):
        telemetry.request(request_record(status_code=status, request_id=f"status-{status}"))
    items = ingestion.wait_for(of_kind("request"), timeout=10, count=4)
    success = {e["data"]["baseData"]["responseCode"]: e["data"]["baseData"]["success"] for e in items}
    assert success == {"200": True, "399": True, "400": False, "431": False}


def test_request_item_omits_response_value_when_logging_is_off(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry
) -> None:
    telemetry = make_telemetry(ingestion, log_response=False)
    telemetry.request(request_record(response_value="secret model output"))
    [item] = ingestion.wait_for(of_kind("request"), timeout=10)
    assert "Response Value" not in envelope_properties(item)
    assert "secret model output" not in json.dumps(item)


def test_request_item_cuts_the_response_value_to_the_property_limit(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry
) -> None:
    telemetry = make_telemetry(ingestion)
    telemetry.request(request_record(response_value="x" * 100_000))
    [item] = ingestion.wait_for(of_kind("request"), timeout=10)
    assert envelope_properties(item)["Response Value"] == "x" * 8192


def test_exception_item_carries_the_ids_and_the_cause_chain(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry
) -> None:
    telemetry = make_telemetry(ingestion)
    try:
        try:
            raise ValueError("inner-failure")
        except ValueError as inner:
            raise RuntimeError("outer-failure") from inner
    except RuntimeError as exc:
        telemetry.exception(exc, "req-9", "client-9")
    [item] = ingestion.wait_for(of_kind("exception"), timeout=10)
    base = item["data"]["baseData"]
    # compat: exactly the three id properties, as upstream's test_appinsights_exception checks.
    # See docs/compatibility.md#exception-telemetry.
    assert base["properties"] == {"Container Id": "container-7", "Request Id": "req-9", "Client Request Id": "client-9"}
    assert base["severityLevel"] == 3
    outer, inner_detail = base["exceptions"]
    assert (outer["typeName"], outer["message"]) == ("RuntimeError", "outer-failure")
    assert (inner_detail["typeName"], inner_detail["message"]) == ("ValueError", "inner-failure")
    assert inner_detail["outerId"] == outer["id"]
    assert "test_exception_item_carries_the_ids_and_the_cause_chain" in outer["stack"]
    assert item["tags"]["ai.operation.id"] == "req-9"


def test_exception_item_for_init_failure_has_no_operation_id(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry
) -> None:
    telemetry = make_telemetry(ingestion)
    telemetry.exception(RuntimeError("init failed"), "Unknown", "")
    [item] = ingestion.wait_for(of_kind("exception"), timeout=10)
    expected = {"Container Id": "container-7", "Request Id": "Unknown", "Client Request Id": ""}
    assert envelope_properties(item) == expected
    assert "ai.operation.id" not in item["tags"]


def test_exception_item_survives_a_raising_str(ingestion: FakeIngestion, make_telemetry: MakeTelemetry) -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    telemetry = make_telemetry(ingestion)
    telemetry.exception(Nasty(), "req-n", "")
    [item] = ingestion.wait_for(of_kind("exception"), timeout=10)
    assert item["data"]["baseData"]["exceptions"][0]["typeName"].endswith("Nasty")


def test_trace_items_for_server_loggers_and_prints(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry, server_logger: logging.Logger
) -> None:
    make_telemetry(ingestion)
    logging.getLogger("azmlinfsrv.print").info("printed %s", "marker")
    logging.getLogger("azmlinfsrv.user_script").warning("user-script-marker")
    server_logger.info("server-marker")
    logging.getLogger("azmlinfsrv.trace").info("extra-marker", extra={"custom_dimensions": {"Answer": 42}})
    items = ingestion.wait_for(of_kind("trace"), timeout=10, count=4)
    by_message = {e["data"]["baseData"]["message"]: e for e in items}
    printed = by_message["printed marker"]["data"]["baseData"]
    assert printed["severityLevel"] == 1
    assert printed["properties"]["logger.name"] == "azmlinfsrv.print"
    assert printed["properties"]["code.function.name"] == "test_trace_items_for_server_loggers_and_prints"
    assert by_message["user-script-marker"]["data"]["baseData"]["severityLevel"] == 2
    assert "server-marker" in by_message
    assert by_message["extra-marker"]["data"]["baseData"]["properties"]["Answer"] == "42"


def test_trace_items_skip_other_loggers_and_debug(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry, server_logger: logging.Logger
) -> None:
    telemetry = make_telemetry(ingestion)
    server_logger.setLevel(logging.DEBUG)
    logging.getLogger("somebody.else").error("foreign-marker")
    server_logger.debug("debug-marker")
    server_logger.info("info-marker")
    assert telemetry.flush_and_wait(10)
    messages = [e["data"]["baseData"]["message"] for e in ingestion.items("trace")]
    assert messages == ["info-marker"]


def test_trace_item_includes_the_traceback(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry, server_logger: logging.Logger
) -> None:
    make_telemetry(ingestion)
    try:
        raise KeyError("logged-failure")
    except KeyError:
        server_logger.exception("Encountered Exception")
    [item] = ingestion.wait_for(of_kind("trace"), timeout=10)
    message = item["data"]["baseData"]["message"]
    assert message.startswith("Encountered Exception\nTraceback")
    assert "logged-failure" in message
    assert item["data"]["baseData"]["severityLevel"] == 3


def test_model_data_item_has_upstreams_eight_properties(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry
) -> None:
    telemetry = make_telemetry(ingestion, mdc_enabled=True)
    telemetry.model_data(
        ModelDataRecord(
            request_id="req-m",
            client_request_id="test-client-id",
            input='{"param1": "hello", "param2": "world"}',
            prediction={"param1": "hello", "param2": "world"},
            extra={"Models": ["model-a:1", "model-b:3"]},
        )
    )
    [item] = ingestion.wait_for(of_kind("trace"), timeout=10)
    base = item["data"]["baseData"]
    assert base["message"] == "model_data_collection"
    # compat: the input is JSON-encoded again, as upstream does in undecorated mode.
    # See docs/compatibility.md#model-data-collection.
    assert base["properties"] == {
        "Container Id": "container-7",
        "Request Id": "req-m",
        "Client Request Id": "test-client-id",
        "Workspace Name": "ws-1",
        "Service Name": "svc-1",
        "Models": '["model-a:1", "model-b:3"]',
        "Input": '"{\\"param1\\": \\"hello\\", \\"param2\\": \\"world\\"}"',
        "Prediction": '{"param1": "hello", "param2": "world"}',
    }
    assert item["tags"]["ai.operation.id"] == "req-m"


def test_model_data_with_unserializable_values_uses_a_placeholder(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry
) -> None:
    telemetry = make_telemetry(ingestion, mdc_enabled=True)
    telemetry.model_data(ModelDataRecord(request_id="r", client_request_id="", input=object(), prediction=b"\xff"))
    [item] = ingestion.wait_for(of_kind("trace"), timeout=10)
    properties = envelope_properties(item)
    assert properties["Input"] == "<not JSON serializable: object>"
    assert properties["Prediction"] == "<not JSON serializable: bytes>"
    assert properties["Models"] == "[]"


def test_model_data_is_ignored_when_collection_is_off(ingestion: FakeIngestion, make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry(ingestion, mdc_enabled=False)
    telemetry.model_data(ModelDataRecord(request_id="r", client_request_id="", input="1", prediction=1))
    assert telemetry.flush_and_wait(10)
    assert telemetry.stats().submitted == 0
    assert ingestion.items("trace") == []


def test_flush_returns_as_soon_as_items_are_delivered(ingestion: FakeIngestion, make_telemetry: MakeTelemetry) -> None:
    # The production interval (5 s) is kept: flush, not the timer, must be what sends the item.
    telemetry = make_telemetry(ingestion, options=ExporterOptions())
    telemetry.exception(RuntimeError("init failed"), "Unknown", "")
    started = time.monotonic()
    telemetry.flush(10.0)
    elapsed = time.monotonic() - started
    assert len(ingestion.items("exception")) == 1
    # The 5 s timer would send it too, but only after its interval.
    assert elapsed < time_limit(0.0, 0.0, failure=5.0, budget=2.0), f"flush took {elapsed:.2f} s"


def test_flush_is_bounded_when_the_endpoint_hangs(ingestion: FakeIngestion, make_telemetry: MakeTelemetry) -> None:
    ingestion.set_mode("hang")
    telemetry = make_telemetry(ingestion, send_timeout=30.0)
    telemetry.exception(RuntimeError("init failed"), "Unknown", "")
    started = time.monotonic()
    assert telemetry.flush_and_wait(0.5) is False
    elapsed = time.monotonic() - started
    # Bounded by its 0.5 s argument, not by the 30 s send timeout.
    assert 0.4 < elapsed < time_limit(0.5, 0.0, failure=30.0, budget=1.0), f"flush took {elapsed:.2f} s"


def test_close_is_bounded_when_the_endpoint_hangs(ingestion: FakeIngestion, make_telemetry: MakeTelemetry) -> None:
    ingestion.set_mode("hang")
    telemetry = make_telemetry(ingestion, send_timeout=30.0)
    telemetry.request(request_record())
    ingestion_wait = time.monotonic() + 5
    while ingestion.hanging == 0 and time.monotonic() < ingestion_wait:
        time.sleep(0.01)
    started = time.monotonic()
    telemetry.close(timeout=0.5)
    assert time.monotonic() - started < time_limit(0.5, 0.0, failure=30.0, budget=1.0)


def test_close_detaches_the_log_handler(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry, server_logger: logging.Logger
) -> None:
    telemetry = make_telemetry(ingestion)
    assert telemetry.handler in server_logger.handlers
    telemetry.close()
    assert telemetry.handler not in server_logger.handlers
    telemetry.request(request_record())
    assert telemetry.stats().dropped_closed == 1


def test_failed_batches_are_retried(ingestion: FakeIngestion, make_telemetry: MakeTelemetry) -> None:
    ingestion.set_mode("error")
    telemetry = make_telemetry(ingestion, options=ExporterOptions(interval=0.05, retry_backoff=0.5, max_retries=3))
    telemetry.request(request_record(request_id="retried"))
    deadline = time.monotonic() + 10
    while ingestion.posts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    ingestion.set_mode("ok")
    [item] = ingestion.wait_for(of_kind("request"), timeout=10)
    assert envelope_properties(item)["Request Id"] == "retried"
    assert telemetry.flush_and_wait(10)
    stats = telemetry.stats()
    assert stats.sent == 1 and stats.failed_attempts >= 1 and stats.dropped == 0


def test_failed_batches_are_dropped_counted_and_reported(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    ingestion.set_mode("error")
    telemetry = make_telemetry(ingestion)
    with caplog.at_level(logging.WARNING, logger="azmlinfsrv.trace"):
        telemetry.request(request_record())
        telemetry.flush(10)
        deadline = time.monotonic() + 10
        while telemetry.stats().dropped_send_failed == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        telemetry.close()
    stats = telemetry.stats()
    assert stats.dropped_send_failed == 1
    assert stats.failed_attempts == 3  # the first attempt and two retries
    assert "500" in (stats.last_error or "")
    reports = [r for r in caplog.records if "telemetry items dropped" in r.getMessage()]
    assert len(reports) == 1
    # The library's own per-attempt warnings are folded into that report, not printed one by one.
    assert not [r for r in caplog.records if r.name.startswith("opencensus")]


def test_format_duration_matches_upstream() -> None:
    assert format_duration(0) == "00:00:00.000"
    assert format_duration(1234.4) == "00:00:01.234"
    assert format_duration(3_723_004) == "01:02:03.004"
    assert format_duration(90_061_001) == "1.01:01:01.001"


@pytest.mark.posix
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_exports_with_its_own_thread(ingestion: FakeIngestion, make_telemetry: MakeTelemetry) -> None:
    # gunicorn's preload_app creates telemetry in the master and forks workers, which inherit no exporter thread.
    telemetry = make_telemetry(ingestion)
    telemetry.request(request_record(request_id="from-parent-before-fork"))
    assert telemetry.flush_and_wait(10)
    telemetry.request(request_record(request_id="queued-in-parent"))  # the child must not send this one again
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a multi-threaded process; that is exactly the situation under test.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            telemetry.request(request_record(request_id="from-child"))
            code = 0 if telemetry.flush_and_wait(10) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    status = 0
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish")
    assert os.waitstatus_to_exitcode(status) == 0
    assert telemetry.flush_and_wait(10)
    ids = [envelope_properties(e)["Request Id"] for e in ingestion.items("request")]
    assert sorted(ids) == ["from-child", "from-parent-before-fork", "queued-in-parent"]
