"""OpenTelemetry tracing for azmlinfsrv: W3C trace context in, spans out over OTLP/HTTP.

Core finds :func:`create_tracer` through the ``azureml_inference_server_http.tracing`` entry point and calls it once
per process when an OTLP endpoint is configured; core itself never imports this package. Everything else is the
OpenTelemetry SDK's standard configuration (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_EXPORTER_OTLP_TIMEOUT``, ``OTEL_BSP_*``...).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .tracer import DEFAULT_EXIT_TIMEOUT
from .tracer import OtelTracer
from .tracer import RequestSpan
from .tracer import make_resource

if TYPE_CHECKING:
    from azureml_inference_server_http.config import ServerConfig

__all__ = ["DEFAULT_EXIT_TIMEOUT", "OtelTracer", "RequestSpan", "create_tracer", "make_resource"]

logger = logging.getLogger("azmlinfsrv.trace")

# The only wire protocol this package speaks; OTLP over gRPC needs another exporter.
SUPPORTED_PROTOCOL = "http/protobuf"
TRACES_EXPORTER_ENV = "OTEL_TRACES_EXPORTER"
PROTOCOL_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def create_tracer(config: ServerConfig) -> OtelTracer | None:
    """The entry point: a tracer exporting over OTLP/HTTP, or None (tracing off) when it is disabled."""
    if not config.tracing_enabled:
        return None
    exporter_name = os.environ.get(TRACES_EXPORTER_ENV, "otlp").strip().lower()
    if exporter_name == "none":
        logger.info("Tracing is off: %s=none", TRACES_EXPORTER_ENV)
        return None
    if exporter_name != "otlp":
        logger.warning("%s=%s is not supported; spans are exported over OTLP/HTTP", TRACES_EXPORTER_ENV, exporter_name)
    for name in PROTOCOL_ENVS:
        protocol = os.environ.get(name, "").strip().lower()
        if protocol:
            if protocol != SUPPORTED_PROTOCOL:
                logger.warning("%s=%s is not supported; spans are exported as %s", name, protocol, SUPPORTED_PROTOCOL)
            break
    # Imported here: the exporter pulls in requests and protobuf, which a process with tracing off never needs.
    from .encoding import FastOTLPSpanExporter

    exporter = (
        FastOTLPSpanExporter()
    )  # endpoint, headers, timeout, compression and certificates from OTEL_EXPORTER_OTLP_*
    tracer = OtelTracer(make_resource(config.service_name), exporter=exporter)
    logger.info("OpenTelemetry traces are sent to %s", _endpoint_description(exporter))
    return tracer


def _endpoint_description(exporter: object) -> str:
    # The endpoint's scheme, host and path only: a URL may carry credentials in its user info or query.
    endpoint = str(getattr(exporter, "_endpoint", ""))
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else "the OTLP endpoint"
