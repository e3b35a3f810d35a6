"""Turning snapshots into Application Insights envelopes (the JSON the ``/v2.1/track`` endpoint takes).

Field names and values follow upstream (docs/compatibility.md#telemetry): request items carry upstream's span
attributes as custom properties (``Request Id``, ``Client Request Id``, ``Container Id``, ``Response Value``,
``http_method``, ...), exception items exactly the three id properties, model data collection items the eight
upstream keys. This runs on the exporter's thread, never on the request path.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from .items import MAX_NAME_LENGTH
from .items import MAX_PROPERTY_LENGTH
from .items import MAX_URL_LENGTH
from .items import ExceptionItem
from .items import Item
from .items import ModelDataItem
from .items import RequestItem
from .items import TraceItem
from .items import limit
from .redaction import Redactor

__all__ = ["EnvelopeBuilder", "ServiceContext", "format_duration", "format_time"]

REQUEST = "Microsoft.ApplicationInsights.Request"
EXCEPTION = "Microsoft.ApplicationInsights.Exception"
MESSAGE = "Microsoft.ApplicationInsights.Message"

# compat: upstream 1.5.1 logs model data collection as a trace with this message.
# See docs/compatibility.md#model-data-collection.
MODEL_DATA_MESSAGE = "model_data_collection"
# compat: upstream's request ids for init() failures; not a useful operation id.
# See docs/compatibility.md#exception-telemetry.
UNKNOWN_REQUEST_ID = "Unknown"

# The custom property that carries the request's OpenTelemetry trace id when tracing is on (docs/tracing.md).
TRACE_ID_PROPERTY = "Trace Id"

# Application Insights severity levels: Verbose, Information, Warning, Error, Critical.
_SEVERITY = ((logging.CRITICAL, 4), (logging.ERROR, 3), (logging.WARNING, 2), (logging.INFO, 1))


def severity(level: int) -> int:
    for threshold, value in _SEVERITY:
        if level >= threshold:
            return value
    return 0


def format_time(epoch_seconds: float) -> str:
    """UTC ISO-8601 with microseconds and ``Z``, as upstream's ``start_time`` attribute."""
    moment = datetime.datetime.fromtimestamp(epoch_seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_duration(milliseconds: float) -> str:
    """``HH:MM:SS.mmm``, with a ``D.`` day prefix from one day on (docs/compatibility.md#request-telemetry)."""
    total_ms = max(0, int(round(milliseconds)))
    seconds, ms = divmod(total_ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}.{ms:03d}"
    return f"{days}.{text}" if days else text


@dataclass(frozen=True)
class ServiceContext:
    """The per-process values every item carries."""

    container_id: str
    workspace_name: str
    service_name: str
    tags: Mapping[str, str] = field(default_factory=dict)


class EnvelopeBuilder:
    """Builds envelopes for one instrumentation key; every string except ``iKey`` passes through the redactor."""

    def __init__(self, instrumentation_key: str, context: ServiceContext, redactor: Redactor) -> None:
        self._ikey = instrumentation_key
        self._context = context
        self._redactor = redactor
        tags = dict(context.tags)
        tags["ai.cloud.role"] = context.service_name
        tags["ai.cloud.roleInstance"] = context.container_id
        self._tags: dict[str, str] = redactor.deep(tags)  # constant: redacted once

    def build(self, item: Item) -> dict[str, Any]:
        if isinstance(item, RequestItem):
            return self.request(item)
        if isinstance(item, ExceptionItem):
            return self.exception(item)
        if isinstance(item, ModelDataItem):
            return self.model_data(item)
        return self.trace(item)

    def _envelope(
        self, name: str, time: float, base_type: str, base_data: dict[str, Any], operation_id: str
    ) -> dict[str, Any]:
        tags = dict(self._tags)
        if operation_id and operation_id != UNKNOWN_REQUEST_ID:
            # The request id ties a request to its exception and model-data items in the portal's transaction view.
            tags["ai.operation.id"] = self._redactor.text(operation_id)
        return {
            "ver": 1,
            "name": name,
            "time": format_time(time),
            "iKey": self._ikey,
            "tags": tags,
            "data": {"baseType": base_type, "baseData": self._redactor.deep(base_data)},
        }

    def _ids(self, request_id: str, client_request_id: str, trace_id: str) -> dict[str, str]:
        ids = {
            "Container Id": self._context.container_id,
            "Request Id": request_id,
            "Client Request Id": client_request_id,
        }
        if trace_id:
            ids[TRACE_ID_PROPERTY] = trace_id
        return ids

    def request(self, item: RequestItem) -> dict[str, Any]:
        duration = format_duration(item.duration_ms)
        success = item.status_code < 400
        properties = self._ids(item.request_id, item.client_request_id, item.trace_id)
        if item.response_value is not None:
            properties["Response Value"] = item.response_value
        # compat: upstream exported these span attributes as custom dimensions too; users' queries name them.
        properties.update(
            {
                "name": item.name,
                "url": limit(item.url, MAX_URL_LENGTH),
                "start_time": format_time(item.start_time),
                "duration": duration,
                "resultCode": str(item.status_code),
                "success": str(success),
                "http_method": item.method,
                "Workspace Name": self._context.workspace_name,
                "Service Name": self._context.service_name,
            }
        )
        base_data = {
            "ver": 2,
            "id": uuid.uuid4().hex[:16],
            "name": limit(item.name, MAX_NAME_LENGTH),
            "duration": duration,
            "responseCode": str(item.status_code),
            "success": success,
            "url": limit(item.url, MAX_URL_LENGTH),
            "properties": {key: limit(value, MAX_PROPERTY_LENGTH) for key, value in properties.items()},
        }
        return self._envelope(REQUEST, item.start_time, "RequestData", base_data, item.request_id)

    def exception(self, item: ExceptionItem) -> dict[str, Any]:
        exceptions = [
            {
                "id": index + 1,
                "outerId": index,  # 0 for the outermost: it has no outer exception
                "typeName": detail.type_name,
                "message": detail.message,
                "hasFullStack": True,
                "stack": detail.stack,
            }
            for index, detail in enumerate(item.details)
        ]
        base_data = {
            "ver": 2,
            "exceptions": exceptions,
            "severityLevel": 3,
            "properties": self._ids(item.request_id, item.client_request_id, item.trace_id),
        }
        return self._envelope(EXCEPTION, item.time, "ExceptionData", base_data, item.request_id)

    def trace(self, item: TraceItem) -> dict[str, Any]:
        properties = dict(item.properties)
        if item.trace_id:
            properties[TRACE_ID_PROPERTY] = item.trace_id
        base_data = {
            "ver": 2,
            "message": item.message,
            "severityLevel": severity(item.level),
            "properties": properties,
        }
        return self._envelope(MESSAGE, item.time, "MessageData", base_data, "")

    def model_data(self, item: ModelDataItem) -> dict[str, Any]:
        properties = self._ids(item.request_id, item.client_request_id, item.trace_id)
        properties.update(
            {
                "Workspace Name": self._context.workspace_name,
                "Service Name": self._context.service_name,
                "Models": item.models,
                "Input": item.input,
                "Prediction": item.prediction,
            }
        )
        base_data = {"ver": 2, "message": MODEL_DATA_MESSAGE, "severityLevel": 1, "properties": properties}
        return self._envelope(MESSAGE, item.time, "MessageData", base_data, item.request_id)
