"""Fixtures for the Application Insights plugin's tests: a fake ingestion endpoint and telemetry pointed at it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest
from azmlinfsrv_appinsights import AppInsightsTelemetry
from azmlinfsrv_appinsights import ExporterOptions
from azmlinfsrv_appinsights import ServiceContext
from azmlinfsrv_appinsights import resolve_target
from azmlinfsrv_testing.collector import FakeIngestion

# Short intervals so tests see items quickly; the production defaults are covered by test_exporter_defaults.
FAST = ExporterOptions(interval=0.05, retry_backoff=0.05, drop_report_interval=0.0)

MakeTelemetry = Callable[..., AppInsightsTelemetry]


@pytest.fixture
def ingestion() -> Iterator[FakeIngestion]:
    with FakeIngestion() as endpoint:
        yield endpoint


@pytest.fixture
def server_logger() -> Iterator[logging.Logger]:
    """The ``azmlinfsrv`` logger at INFO, as the server's logging config sets it; restored afterwards."""
    log = logging.getLogger("azmlinfsrv")
    previous = log.level
    log.setLevel(logging.INFO)
    yield log
    log.setLevel(previous)


@pytest.fixture
def make_telemetry(server_logger: logging.Logger) -> Iterator[MakeTelemetry]:
    """Build telemetry for a FakeIngestion (or a connection string); every instance is closed at teardown."""
    created: list[AppInsightsTelemetry] = []

    def make(endpoint: FakeIngestion | str, **kwargs: Any) -> AppInsightsTelemetry:
        connection_string = endpoint if isinstance(endpoint, str) else endpoint.connection_string
        context = kwargs.pop(
            "context",
            ServiceContext(container_id="container-7", workspace_name="ws-1", service_name="svc-1", tags={}),
        )
        kwargs.setdefault("options", FAST)
        kwargs.setdefault("send_timeout", 1.0)
        telemetry = AppInsightsTelemetry(resolve_target(None, connection_string), context, **kwargs)
        created.append(telemetry)
        return telemetry

    yield make
    # Long enough for a send to a hanging endpoint to time out, so that no exporter thread outlives its test and
    # logs its drop report into the output of another (close returns as soon as the thread has ended).
    for telemetry in created:
        telemetry.close(timeout=10.0)
