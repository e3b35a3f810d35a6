"""The telemetry seam: what the server reports, and how an exporter plugs in.

Core never imports an exporter. A distribution that wants to receive telemetry registers a factory under the
entry-point group ``azureml_inference_server_http.telemetry``; the factory is called once per worker with the
server configuration and returns an object implementing :class:`Telemetry` (or ``None`` to stay off). With no
plugin the server uses :class:`NoTelemetry`, whose methods do nothing, so the request path pays nothing.

Every method of a real implementation must return quickly and never raise: export happens in the background.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from dataclasses import field
from importlib import metadata
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol

if TYPE_CHECKING:
    from ..config import ServerConfig

logger = logging.getLogger("azmlinfsrv.trace")

ENTRY_POINT_GROUP = "azureml_inference_server_http.telemetry"
PLUGIN_DISTRIBUTION = "azureml-inference-server-http-appinsights"


@dataclass(frozen=True)
class RequestRecord:
    """One handled request on /score or /swagger.json (docs/compatibility.md#request-telemetry)."""

    name: str  # the request path
    url: str
    method: str
    status_code: int
    start_time: float  # epoch seconds
    duration_ms: float
    request_id: str
    client_request_id: str
    response_value: str | None  # None when response logging is off


@dataclass(frozen=True)
class ModelDataRecord:
    """Model data collection for one successful run() (docs/compatibility.md#model-data-collection)."""

    request_id: str
    client_request_id: str
    input: Any
    prediction: Any
    extra: dict[str, Any] = field(default_factory=dict)


class Telemetry(Protocol):
    """What the server calls. Implementations must be thread-safe and non-blocking."""

    def request(self, record: RequestRecord) -> None: ...

    def exception(self, exc: BaseException, request_id: str, client_request_id: str) -> None: ...

    def model_data(self, record: ModelDataRecord) -> None: ...

    def flush(self, timeout: float) -> None: ...

    def close(self) -> None: ...


class NoTelemetry:
    """The default: telemetry off."""

    enabled = False

    def request(self, record: RequestRecord) -> None:
        return None

    def exception(self, exc: BaseException, request_id: str, client_request_id: str) -> None:
        return None

    def model_data(self, record: ModelDataRecord) -> None:
        return None

    def flush(self, timeout: float) -> None:
        return None

    def close(self) -> None:
        return None


def load_telemetry(config: ServerConfig) -> Telemetry:
    """Find the telemetry plugin when telemetry is enabled; fall back to :class:`NoTelemetry`."""
    if not config.telemetry_enabled:
        return NoTelemetry()
    entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    if not entry_points:
        logger.warning(
            "Application Insights is enabled but the telemetry package is not installed; telemetry is off. "
            "Install it with: pip install %s",
            PLUGIN_DISTRIBUTION,
        )
        return NoTelemetry()
    for entry_point in entry_points:
        try:
            factory = entry_point.load()
            telemetry = factory(config)
        except Exception:
            logger.exception("Error logging to Application Insights:")
            continue
        if telemetry is not None:
            return telemetry  # type: ignore[no-any-return]
    return NoTelemetry()
