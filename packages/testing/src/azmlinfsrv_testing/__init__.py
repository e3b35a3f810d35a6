"""Testing azmlinfsrv score scripts with pytest: fixtures, an in-process client, a server process helper, a fake
Application Insights ingestion endpoint and a fake OpenTelemetry collector.

The fixtures (``azmlinfsrv_client``, ``azmlinfsrv_server``, ``azmlinfsrv_collector``, ``azmlinfsrv_otlp``) are
registered through the ``pytest11`` entry point when this package is installed; the names below are for tests that
need more control, such as module-scoped servers.
"""

from __future__ import annotations

from .collector import FakeIngestion
from .collector import envelope_kind
from .collector import envelope_properties
from .factories import ClientFactory
from .factories import ServerFactory
from .inprocess import InProcessClient
from .messages import Headers
from .messages import Response
from .otlp import FakeOtlpReceiver
from .process import ServerProcess
from .process import ServerStartError
from .process import free_port
from .process import start_server
from .timing import allowance
from .timing import latency
from .timing import machine_factor
from .timing import time_budget
from .timing import time_limit

__all__ = [
    "ClientFactory",
    "FakeIngestion",
    "FakeOtlpReceiver",
    "Headers",
    "InProcessClient",
    "Response",
    "ServerFactory",
    "ServerProcess",
    "ServerStartError",
    "allowance",
    "envelope_kind",
    "envelope_properties",
    "free_port",
    "latency",
    "machine_factor",
    "start_server",
    "time_budget",
    "time_limit",
]
