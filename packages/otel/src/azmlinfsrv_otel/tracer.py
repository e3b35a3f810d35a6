"""The OpenTelemetry implementation of core's ``Tracer`` seam.

One :class:`OtelTracer` per process owns a ``TracerProvider`` with a ``BatchSpanProcessor``: ending a span appends it
to a bounded queue, and one background thread exports batches over OTLP/HTTP. A hanging or refusing collector
therefore never blocks a request, and the queue's bound keeps memory flat (spans past it are dropped). The SDK
restarts the export thread in a forked child, so a provider made before gunicorn forks its workers still exports
from each of them.

Spans are made current with the OpenTelemetry API's context (a context variable), in the thread that handles the
request; the scoring runner calls run() in that context, so spans the score script starts with
``opentelemetry.trace.get_tracer(...).start_as_current_span(...)`` are children of run()'s span.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from azureml_inference_server_http.server.tracing import Attributes
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace import Status
from opentelemetry.trace import StatusCode

__all__ = ["DEFAULT_EXIT_TIMEOUT", "INSTRUMENTATION_NAME", "OtelTracer", "RequestSpan", "make_resource"]

logger = logging.getLogger("azmlinfsrv.trace")

INSTRUMENTATION_NAME = "azmlinfsrv"
# At interpreter exit, what is still queued gets this long; a hanging collector must not hold up a worker's exit.
DEFAULT_EXIT_TIMEOUT = 2.0
# The SDK warns once per span it drops from a full queue: during an outage, a line per request. One line per
# interval, with the count, says the same.
DROP_REPORT_INTERVAL = 60.0
# Where the SDK's batch processor logs (its module moved between SDK versions).
SDK_PROCESSOR_LOGGERS = ("opentelemetry.sdk._shared_internal", "opentelemetry.sdk.trace.export")


class _DropReports(logging.Filter):
    """Turns the SDK's per-span "Queue full" warnings into one line per interval with the count."""

    def __init__(self, interval: float = DROP_REPORT_INTERVAL) -> None:
        super().__init__()
        self._interval = interval
        self._dropped = 0
        self._next_report = 0.0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Queue full"):
            return True
        now = time.monotonic()
        with self._lock:
            self._dropped += 1
            if now < self._next_report:
                return False
            dropped, self._dropped = self._dropped, 0
            self._next_report = now + self._interval
        record.msg = "The span export queue is full (is the OTLP collector reachable?): %d span(s) dropped"
        record.args = (dropped,)
        return True


_DROP_REPORTS = _DropReports()
for _name in SDK_PROCESSOR_LOGGERS:
    logging.getLogger(_name).addFilter(_DROP_REPORTS)


class _EnvironGetter(Getter[Mapping[str, Any]]):
    """Reads request headers from a WSGI environ (``traceparent`` is ``HTTP_TRACEPARENT``)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [key[5:].lower().replace("_", "-") for key in carrier if key.startswith("HTTP_")]


_GETTER = _EnvironGetter()


def make_resource(default_service_name: str) -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` as the SDK reads them; the server's ``SERVICE_NAME``
    names the service when neither does (as upstream's own OpenTelemetry export named it)."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    return resource


class RequestSpan:
    """The server span of one request; see core's ``RequestSpan`` protocol."""

    __slots__ = ("_span", "_token", "trace_id", "traceparent")

    def __init__(self, span: trace.Span, token: object) -> None:
        self._span = span
        self._token = token
        context = span.get_span_context()
        self.trace_id = format(context.trace_id, "032x")
        self.traceparent = f"00-{self.trace_id}-{context.span_id:016x}-{int(context.trace_flags):02x}"

    def finish(self, status_code: int, attributes: Attributes, error: BaseException | None) -> None:
        span = self._span
        try:
            if span.is_recording():
                span.set_attributes(attributes)
                if error is not None:
                    span.record_exception(error)
                if status_code >= 500 or error is not None:
                    # Semantic conventions: a server span is an error for 5xx only; 4xx are the client's.
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]


class OtelTracer:
    """Thread-safe and non-blocking; see core's ``Tracer`` protocol for when each method is called."""

    enabled = True

    def __init__(
        self,
        resource: Resource,
        processors: Iterable[SpanProcessor] = (),
        *,
        exporter: SpanExporter | None = None,
        set_global: bool = True,
    ) -> None:
        """``exporter`` gets a ``BatchSpanProcessor`` (its queue and batch sizes from the ``OTEL_BSP_*`` variables);
        ``processors`` are added as they are (tests pass a ``SimpleSpanProcessor``). With ``set_global`` the provider
        becomes the process's global one, so the score script's own spans are exported too, unless the script's
        process already has one."""
        # The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default: parent-based, always on).
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        for processor in processors:
            self.provider.add_span_processor(processor)
        if set_global:
            if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                trace.set_tracer_provider(self.provider)
            else:
                logger.warning(
                    "An OpenTelemetry tracer provider was already set in this process; the server's spans go to "
                    "its own provider and the other one keeps the spans of code that uses the global provider"
                )
        self._tracer = self.provider.get_tracer(INSTRUMENTATION_NAME)
        self._closed = False
        self._lock = threading.Lock()
        atexit.register(self._shutdown_at_exit)

    # -- the Tracer protocol ------------------------------------------------------------------------------------

    def start_request(self, environ: Mapping[str, Any], name: str, attributes: Attributes) -> RequestSpan:
        parent = propagate.extract(environ, getter=_GETTER)
        span = self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return RequestSpan(span, token)

    def span(self, name: str, attributes: Attributes) -> contextlib.AbstractContextManager[object]:
        # record_exception and set_status_on_exception default to True: an exception escaping run() or init()
        # marks their span as failed, with the exception as an event.
        return self._tracer.start_as_current_span(name, attributes=attributes)

    def shutdown(self, timeout: float) -> None:
        """Export what is queued and stop, giving up after ``timeout`` seconds (a hanging collector)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self._shutdown_at_exit)
        provider = self.provider

        def stop() -> None:
            try:
                provider.force_flush(int(timeout * 1000))
                provider.shutdown()
            except Exception:
                logger.debug("Could not shut the tracer provider down", exc_info=True)

        # The SDK's shutdown waits for an export in progress, which a hanging collector holds for its whole
        # timeout; a daemon thread bounds the wait here.
        worker = threading.Thread(target=stop, name="azmlinfsrv-otel-shutdown", daemon=True)
        worker.start()
        worker.join(timeout)

    # -- extras ---------------------------------------------------------------------------------------------------

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Export every ended span now; True when that finished within ``timeout`` seconds."""
        return bool(self.provider.force_flush(int(timeout * 1000)))

    def _shutdown_at_exit(self) -> None:
        self.shutdown(DEFAULT_EXIT_TIMEOUT)
