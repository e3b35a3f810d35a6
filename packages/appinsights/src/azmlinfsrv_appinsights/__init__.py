"""Application Insights telemetry for azmlinfsrv, exported with opencensus-ext-azure.

Core finds :func:`create_telemetry` through the ``azureml_inference_server_http.telemetry`` entry point and calls it
once per worker; core itself never imports this package.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .connection import IngestionTarget
from .connection import InvalidTargetError
from .connection import resolve_target
from .envelopes import ServiceContext
from .exporter import ExporterOptions
from .exporter import ExportStats
from .telemetry import AppInsightsTelemetry
from .transport import default_tags

if TYPE_CHECKING:
    from azureml_inference_server_http.config import ServerConfig

__all__ = [
    "AppInsightsTelemetry",
    "ExportStats",
    "ExporterOptions",
    "IngestionTarget",
    "InvalidTargetError",
    "ServiceContext",
    "create_telemetry",
    "resolve_target",
]

logger = logging.getLogger("azmlinfsrv.trace")


def create_telemetry(config: ServerConfig) -> AppInsightsTelemetry | None:
    """The entry point: an exporter for ``config``, or None (telemetry off) when it is disabled or unusable."""
    if not config.telemetry_enabled:
        return None
    try:
        target = resolve_target(config.app_insights_key, config.app_insights_connection_string)
    except InvalidTargetError as exc:
        # The message names the problem, never the key (docs/guarantees.md#r16).
        logger.warning("Application Insights has been disabled: %s", exc)
        return None
    context = ServiceContext(
        container_id=config.hostname,
        workspace_name=config.workspace_name,
        service_name=config.service_name,
        tags=default_tags(),
    )
    telemetry = AppInsightsTelemetry(
        target,
        context,
        log_response=config.app_insights_log_response_enabled,
        mdc_enabled=config.mdc_storage_enabled,
    )
    logger.info("Application Insights telemetry is sent to %s", target.endpoint)
    return telemetry
