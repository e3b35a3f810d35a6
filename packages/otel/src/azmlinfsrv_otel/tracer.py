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
import os
import threading
import time
import traceback
from collections.abc import Iterable
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from azureml_inference_server_http.server.tracing import Attributes
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan
from opentelemetry.trace import SpanContext
from opentelemetry.trace import SpanKind
from opentelemetry.trace import Status
from opentelemetry.trace import StatusCode
from opentelemetry.trace import TraceFlags
from opentelemetry.trace import TraceState

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
    """Counts spans dropped from a full queue and reports them as one WARNING per interval, with the count.

    As a filter on the SDK's loggers it replaces their per-span "Queue full" warnings; the server's own spans are
    counted by :class:`_Recorder` without reaching the SDK at all.
    """

    def __init__(self, interval: float = DROP_REPORT_INTERVAL) -> None:
        super().__init__()
        self._interval = interval
        self._dropped = 0
        self._next_report = 0.0
        self._lock = threading.Lock()

    def dropped(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._dropped += 1
            if now < self._next_report:
                return
            dropped, self._dropped = self._dropped, 0
            self._next_report = now + self._interval
        logger.warning("The span export queue is full (is the OTLP collector reachable?): %d span(s) dropped", dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Queue full"):
            return True
        self.dropped()
        return False


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


class _Recorder:
    """Records the server's own spans: ids, times and attributes on the request path, the SDK's objects at the end.

    The SDK's ``Span`` validates and copies every attribute under a lock and takes tens of microseconds per span,
    about a tenth of a small model's whole request; the server's spans have a fixed shape with clean values, so
    they are built as ``ReadableSpan`` objects directly and handed to the same span processors (one bounded queue,
    one export thread) that the SDK's spans go through. The context made current is the API's own, holding a
    non-recording span with the same ids, so the score script's spans nest under them as usual.
    """

    __slots__ = ("_batches", "_id_generator", "_processors", "_resource", "_scope")

    def __init__(self, provider: TracerProvider, processors: list[SpanProcessor]) -> None:
        self._id_generator = provider.id_generator
        self._processors = processors
        self._resource = provider.resource
        self._scope = InstrumentationScope(INSTRUMENTATION_NAME)
        # The SDK's batch queues, where this SDK release exposes them: a span for a full queue is counted and
        # dropped here, before it is built, instead of costing the SDK's logging call per span during an outage.
        batches: list[Any] = [getattr(processor, "_batch_processor", None) for processor in processors]
        usable = all(hasattr(batch, "_queue") and hasattr(batch, "_max_queue_size") for batch in batches)
        self._batches: list[Any] = batches if processors and usable else []

    def full(self) -> bool:
        """Whether every processor's queue is full, so that a span now would only be dropped."""
        for batch in self._batches:
            if len(batch._queue) < batch._max_queue_size:
                return False
        if self._batches:
            _DROP_REPORTS.dropped()
            return True
        return False

    def new_span_id(self) -> int:
        return int(self._id_generator.generate_span_id())

    def new_trace_id(self) -> int:
        return int(self._id_generator.generate_trace_id())

    def end(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        start_time: int,
        error: BaseException | None,
        failed: bool,
    ) -> None:
        if self.full():
            return
        end_time = time.time_ns()
        events: tuple[Event, ...] = ()
        if error is not None:
            events = (_exception_event(error, end_time),)
        status = _ERROR if failed or error is not None else _UNSET
        span = ReadableSpan(
            name=name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            events=events,
            kind=kind,
            status=status,
            start_time=start_time,
            end_time=end_time,
            instrumentation_scope=self._scope,
        )
        for processor in self._processors:
            processor.on_end(span)


_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


def _is_default_sampler(sampler: object) -> bool:
    """Whether ``sampler`` is ``parentbased_always_on``, whose decision needs no call: the parent's, else sample."""
    if not isinstance(sampler, ParentBased):
        return False
    parts = (
        getattr(sampler, "_root", None),
        getattr(sampler, "_remote_parent_sampled", None),
        getattr(sampler, "_remote_parent_not_sampled", None),
        getattr(sampler, "_local_parent_sampled", None),
        getattr(sampler, "_local_parent_not_sampled", None),
    )
    return parts == (ALWAYS_ON, ALWAYS_ON, ALWAYS_OFF, ALWAYS_ON, ALWAYS_OFF)


_UNSET = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)


def _exception_event(error: BaseException, timestamp: int) -> Event:
    """The semantic conventions' ``exception`` event."""
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        message = str(error)
    except Exception:  # a user's __str__ may raise; the type still says what happened
        message = ""
    attributes = {
        "exception.type": type(error).__qualname__,
        "exception.message": message,
        "exception.stacktrace": stack,
        "exception.escaped": "True",
    }
    return Event("exception", attributes, timestamp)


class RequestSpan:
    """The server span of one request; see core's ``RequestSpan`` protocol."""

    __slots__ = (
        "_attributes",
        "_context",
        "_name",
        "_parent",
        "_recorder",
        "_start",
        "_token",
        "trace_id",
        "traceparent",
    )

    def __init__(
        self,
        recorder: _Recorder | None,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        token: object,
    ) -> None:
        self._recorder = recorder  # None when the span is not sampled: nothing is recorded
        self._name = name
        self._context = context
        self._parent = parent
        self._attributes = attributes
        self._token = token
        self._start = time.time_ns()
        self.trace_id = format(context.trace_id, "032x")
        self.traceparent = f"00-{self.trace_id}-{context.span_id:016x}-{int(context.trace_flags):02x}"

    def finish(self, status_code: int, attributes: Attributes, error: BaseException | None) -> None:
        try:
            recorder = self._recorder
            if recorder is not None:
                final = self._attributes
                final.update(attributes)
                # Semantic conventions: a server span is an error for 5xx only; 4xx are the client's.
                recorder.end(
                    self._name,
                    self._context,
                    self._parent,
                    SpanKind.SERVER,
                    final,
                    self._start,
                    error,
                    status_code >= 500,
                )
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]


class _ChildSpan:
    """A span around run() or init(): a child of the current span, current itself while the block runs."""

    __slots__ = ("_attributes", "_context", "_name", "_parent", "_recorder", "_start", "_token")

    def __init__(self, recorder: _Recorder, name: str, attributes: Attributes) -> None:
        self._recorder = recorder
        self._name = name
        self._attributes = attributes
        self._parent: SpanContext | None = None
        self._token: object = None
        self._start = 0

    def __enter__(self) -> _ChildSpan:
        recorder = self._recorder
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid:
            self._parent = parent
            trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
        else:
            # A root (init() at start-up): sampled, as the default sampler samples new traces.
            trace_id, flags, state = recorder.new_trace_id(), _SAMPLED, TraceState()
        self._context = SpanContext(trace_id, recorder.new_span_id(), False, flags, state)
        self._token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(self._context)))
        self._start = time.time_ns()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._context.trace_flags.sampled:
                self._recorder.end(
                    self._name,
                    self._context,
                    self._parent,
                    SpanKind.INTERNAL,
                    dict(self._attributes),
                    self._start,
                    exc,
                    False,
                )
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]


# Without a traceparent (or baggage) header there is nothing to extract: the default propagators would find nothing.
_DEFAULT_PROPAGATORS = ("", "tracecontext,baggage")
_CONTEXT_HEADERS = ("HTTP_TRACEPARENT", "HTTP_BAGGAGE")


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
        added: list[SpanProcessor] = []
        if exporter is not None:
            added.append(BatchSpanProcessor(exporter))
        added.extend(processors)
        for processor in added:
            self.provider.add_span_processor(processor)
        if set_global:
            if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                trace.set_tracer_provider(self.provider)
            else:
                logger.warning(
                    "An OpenTelemetry tracer provider was already set in this process; the server's spans go to "
                    "its own provider and the other one keeps the spans of code that uses the global provider"
                )
        self._sampler = self.provider.sampler
        self._default_sampler = _is_default_sampler(self._sampler)
        self._recorder = _Recorder(self.provider, added)
        propagators = os.environ.get("OTEL_PROPAGATORS", "").replace(" ", "").lower()
        self._always_extract = propagators not in _DEFAULT_PROPAGATORS
        self._closed = False
        self._lock = threading.Lock()
        atexit.register(self._shutdown_at_exit)

    # -- the Tracer protocol ------------------------------------------------------------------------------------

    def start_request(self, environ: Mapping[str, Any], name: str, attributes: Attributes) -> RequestSpan:
        recorder = self._recorder
        if self._always_extract or any(header in environ for header in _CONTEXT_HEADERS):
            parent_context: otel_context.Context | None = propagate.extract(environ, getter=_GETTER)
            parent = trace.get_current_span(parent_context).get_span_context()
        else:
            parent_context, parent = None, trace.INVALID_SPAN_CONTEXT
        trace_id = parent.trace_id if parent.is_valid else recorder.new_trace_id()
        # Core hands over a fresh dict per request: it becomes the span's own.
        values = attributes if isinstance(attributes, dict) else dict(attributes)
        if self._default_sampler:
            # parentbased_always_on, the default: follow the caller's decision, sample new traces.
            sampled = parent.trace_flags.sampled if parent.is_valid else True
            state = parent.trace_state
        else:
            sampling = self._sampler.should_sample(
                parent_context, trace_id, name, SpanKind.SERVER, attributes, None, parent.trace_state
            )
            sampled = sampling.decision.is_sampled()  # type: ignore[no-untyped-call]
            state = sampling.trace_state if sampling.trace_state is not None else parent.trace_state
            if sampling.attributes:
                values.update(sampling.attributes)
        context = SpanContext(trace_id, recorder.new_span_id(), False, _SAMPLED if sampled else _NOT_SAMPLED, state)
        token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(context), parent_context))
        return RequestSpan(
            recorder if sampled else None, name, context, parent if parent.is_valid else None, values, token
        )

    def span(self, name: str, attributes: Attributes) -> contextlib.AbstractContextManager[object]:
        # An exception escaping run() or init() marks the span as failed, with the exception as an event.
        return _ChildSpan(self._recorder, name, attributes)

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
