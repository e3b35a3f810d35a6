"""What the request path hands to the exporter: small, immutable snapshots taken at call time.

Snapshots are cut to Application Insights' field limits before they are queued, so the queue's memory is bounded by
its length, and they hold no traceback, frame or request object that could keep user data alive.
"""

from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass
from typing import Any

from azureml_inference_server_http.server.tracing import current_trace_id

__all__ = [
    "MAX_EXCEPTION_CHAIN",
    "MAX_MESSAGE_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PROPERTY_LENGTH",
    "MAX_URL_LENGTH",
    "ExceptionDetail",
    "ExceptionItem",
    "Item",
    "ModelDataItem",
    "RequestItem",
    "TraceItem",
    "exception_details",
    "limit",
    "to_json_text",
    "trace_item",
]

# Application Insights' data-model limits: longer values are cut by the service anyway.
MAX_PROPERTY_LENGTH = 8192
MAX_MESSAGE_LENGTH = 32768
MAX_NAME_LENGTH = 1024
MAX_URL_LENGTH = 2048
# A wrapper and the user's exception, plus causes; deeper chains are cut rather than walked without bound.
MAX_EXCEPTION_CHAIN = 8

NON_SERIALIZABLE = "<not JSON serializable: {}>"


def limit(value: str, length: int) -> str:
    return value if len(value) <= length else value[:length]


def to_json_text(value: Any) -> str:
    """``json.dumps(value)`` cut to the property limit; a placeholder naming the type if it cannot be encoded."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return NON_SERIALIZABLE.format(type(value).__name__)
    return limit(text, MAX_PROPERTY_LENGTH)


@dataclass(frozen=True)
class RequestItem:
    name: str
    url: str
    method: str
    status_code: int
    start_time: float
    duration_ms: float
    request_id: str
    client_request_id: str
    response_value: str | None
    trace_id: str = ""  # the request's trace when tracing is on (docs/tracing.md#logs-and-telemetry)


@dataclass(frozen=True)
class ExceptionDetail:
    type_name: str
    message: str
    stack: str


@dataclass(frozen=True)
class ExceptionItem:
    time: float
    details: tuple[ExceptionDetail, ...]
    request_id: str
    client_request_id: str
    trace_id: str = ""  # the request's trace when tracing is on (docs/tracing.md#logs-and-telemetry)


@dataclass(frozen=True)
class TraceItem:
    time: float
    level: int
    message: str
    logger_name: str
    properties: tuple[tuple[str, str], ...]
    trace_id: str = ""  # the request's trace when tracing is on (docs/tracing.md#logs-and-telemetry)


@dataclass(frozen=True)
class ModelDataItem:
    time: float
    request_id: str
    client_request_id: str
    input: str
    prediction: str
    models: str  # a JSON list of "name:version" ids
    trace_id: str = ""  # the request's trace when tracing is on (docs/tracing.md#logs-and-telemetry)


Item = RequestItem | ExceptionItem | TraceItem | ModelDataItem


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def exception_details(exc: BaseException) -> tuple[ExceptionDetail, ...]:
    """The exception and its causes, outermost first, each with its own formatted stack."""
    details: list[ExceptionDetail] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(details) < MAX_EXCEPTION_CHAIN:
        seen.add(id(current))
        stack = "".join(traceback.format_exception(type(current), current, current.__traceback__, chain=False))
        try:
            message = str(current)
        except Exception:  # a user's __str__ may raise; the type name still identifies it
            message = ""
        details.append(
            ExceptionDetail(_type_name(current), limit(message, MAX_MESSAGE_LENGTH), limit(stack, MAX_MESSAGE_LENGTH))
        )
        if current.__cause__ is not None:
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            current = current.__context__
        else:
            current = None
    return tuple(details)


_FORMATTER = logging.Formatter()


def trace_item(record: logging.LogRecord) -> TraceItem:
    """A snapshot of a log record: its message (with the traceback, if any) and where it came from."""
    try:
        message = record.getMessage()
    except Exception:  # bad %-args in someone's logging call; keep the template rather than lose the record
        message = str(record.msg)
    if record.exc_info:
        exc_text = record.exc_text or _FORMATTER.formatException(record.exc_info)
        message = f"{message}\n{exc_text}"
    elif record.exc_text:
        message = f"{message}\n{record.exc_text}"
    properties: list[tuple[str, str]] = [
        ("code.function.name", str(record.funcName)),
        ("code.filepath", str(record.pathname)),
        ("code.lineno", str(record.lineno)),
        ("logger.name", record.name),
    ]
    custom = getattr(record, "custom_dimensions", None)
    if isinstance(custom, dict):
        properties.extend(
            (limit(str(key), 150), limit(value if isinstance(value, str) else str(value), MAX_PROPERTY_LENGTH))
            for key, value in custom.items()
        )
    return TraceItem(
        time=record.created,
        level=record.levelno,
        message=limit(message, MAX_MESSAGE_LENGTH),
        logger_name=record.name,
        properties=tuple(properties),
        trace_id=current_trace_id(),
    )
