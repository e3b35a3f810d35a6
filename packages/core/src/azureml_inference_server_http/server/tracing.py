"""The tracing seam: which spans the server makes, and how a tracer plugs in.

Core never imports a tracing SDK. A distribution that exports traces registers a factory under the entry-point
group ``azureml_inference_server_http.tracing``; when tracing is asked for (an OTLP endpoint is configured, see
:func:`tracing_requested`), the factory is called once per process with the server configuration and returns an
object implementing :class:`Tracer` (or ``None`` to stay off). Otherwise the server keeps :data:`NO_TRACING`, no
middleware is installed and the request path pays nothing at all.

With a tracer, :class:`TracingMiddleware` wraps the WSGI app: a server span per traced request, started from the
request's ``traceparent``/``tracestate`` and current (in the tracer's own context) while the app handles it; the
score route wraps run() in a child span (:func:`traced`), and init() runs in a span of its own. The trace id of the
current request is also kept in a context variable of core's (:func:`current_trace_id`), so the per-request log
line and the telemetry plugin can show it without importing any tracing library.

Every method of a tracer must be quick, thread-safe and never raise: spans are exported in the background.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable
from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING
from typing import Any
from typing import Protocol

from .. import constants as c
from ..config import tracing_requested

if TYPE_CHECKING:
    from ..config import ServerConfig

__all__ = [
    "ENTRY_POINT_GROUP",
    "NO_TRACING",
    "NoTracing",
    "RequestSpan",
    "Tracer",
    "TracingMiddleware",
    "current_trace_id",
    "load_tracer",
    "traced",
    "tracing_requested",
]

logger = logging.getLogger("azmlinfsrv.trace")

ENTRY_POINT_GROUP = "azureml_inference_server_http.tracing"
PLUGIN_DISTRIBUTION = "azureml-inference-server-http-otel"
# The W3C Trace Context response header: the server span's id, so a client can find its trace.
HEADER_TRACEPARENT = "traceparent"
# Probes and scrapes are polled every few seconds by orchestrators; a span each would drown the real traffic.
UNTRACED_PATHS = frozenset(
    {"/", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/metrics"},
)
# Routes whose path is their template; other paths get theirs from the URL map (a span name must not hold ids).
FIXED_ROUTES = frozenset({"/score", "/swagger.json", "/openapi.json", "/v2"})

AttributeValue = str | int | float | bool
Attributes = Mapping[str, AttributeValue]

_trace_id: contextvars.ContextVar[str] = contextvars.ContextVar("azmlinfsrv_trace_id", default="")


def current_trace_id() -> str:
    """The trace id (32 lowercase hex digits) of the request being handled, or ``""`` when tracing is off."""
    return _trace_id.get()


class RequestSpan(Protocol):
    """The server span of one request, current in the thread that started it until :meth:`finish`."""

    @property
    def trace_id(self) -> str: ...  # 32 lowercase hex digits

    @property
    def traceparent(self) -> str: ...  # the W3C header value naming this span

    def finish(self, status_code: int, attributes: Attributes, error: BaseException | None) -> None:
        """Set the final attributes and status, end the span and restore the previous context."""


class Tracer(Protocol):
    """What the server calls. Implementations must be thread-safe and non-blocking."""

    def start_request(self, environ: Mapping[str, Any], name: str, attributes: Attributes) -> RequestSpan:
        """Start the server span of a request (parent: the WSGI environ's ``HTTP_TRACEPARENT``) and make it current."""
        ...

    def span(self, name: str, attributes: Attributes) -> contextlib.AbstractContextManager[object]:
        """A child of the current span, current itself inside the ``with`` block; records an escaping exception."""
        ...

    def shutdown(self, timeout: float) -> None:
        """Export what is queued, within ``timeout`` seconds, and stop."""
        ...


class NoTracing:
    """The default: tracing off."""

    enabled = False

    def start_request(self, environ: Mapping[str, Any], name: str, attributes: Attributes) -> RequestSpan:
        raise RuntimeError("tracing is off")  # never called: without a tracer no middleware is installed

    def span(self, name: str, attributes: Attributes) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def shutdown(self, timeout: float) -> None:
        return None


NO_TRACING = NoTracing()


def load_tracer(config: ServerConfig) -> Tracer | None:
    """The tracing plugin's tracer when tracing is asked for; ``None`` (tracing off) otherwise."""
    if not config.tracing_enabled:
        return None
    entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    if not entry_points:
        logger.warning(
            "An OTLP endpoint is configured but the tracing package is not installed; tracing is off. "
            "Install it with: pip install %s",
            PLUGIN_DISTRIBUTION,
        )
        return None
    for entry_point in entry_points:
        try:
            tracer = entry_point.load()(config)
        except Exception:
            logger.exception("Could not start tracing; tracing is off:")
            continue
        if tracer is not None:
            return tracer  # type: ignore[no-any-return]
    return None


def traced(tracer: Tracer, name: str, fn: Callable[..., Any], attributes: Attributes) -> Callable[..., Any]:
    """``fn`` called inside a span of its own: a child of whatever span is current in the thread that calls it.

    The scoring runner calls run() in the request's context (or a copy of it), so the span of run() is a child of
    the request's span, and spans the score script starts itself are children of run()'s.
    """

    def call(**kwargs: Any) -> Any:
        with tracer.span(name, attributes):
            return fn(**kwargs)

    return call


class _Response:
    """What the middleware learns from ``start_response``."""

    __slots__ = ("request_id", "status")

    def __init__(self) -> None:
        self.status = 500  # an app that raises before it starts a response
        self.request_id = ""


class TracingMiddleware:
    """WSGI middleware: one server span per traced request, and its ``traceparent`` on the response.

    Installed only when a tracer is loaded. The span's attributes follow OpenTelemetry's HTTP semantic conventions,
    plus the request id the server answered with (``azmlinfsrv.request_id``).
    """

    def __init__(
        self,
        app: Callable[..., Any],
        tracer: Tracer,
        route_of: Callable[[Mapping[str, Any]], str | None],
    ) -> None:
        self.app = app
        self.tracer = tracer
        self.route_of = route_of

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO") or "/"
        if path in UNTRACED_PATHS:
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        route = path if path in FIXED_ROUTES else self.route_of(environ)
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.path": path,
            "url.scheme": environ.get("wsgi.url_scheme", "http"),
            "network.protocol.version": str(environ.get("SERVER_PROTOCOL", "HTTP/1.1")).rpartition("/")[2],
        }
        if route is not None:
            attributes["http.route"] = route
        query = environ.get("QUERY_STRING")
        if query:
            attributes["url.query"] = query
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME")
        if host:
            address, _, port = str(host).rpartition(":") if ":" in str(host) else (str(host), "", "")
            attributes["server.address"] = address
            if port.isdigit():
                attributes["server.port"] = int(port)
        if "server.port" not in attributes and str(environ.get("SERVER_PORT", "")).isdigit():
            attributes["server.port"] = int(environ["SERVER_PORT"])
        agent = environ.get("HTTP_USER_AGENT")
        if agent:
            attributes["user_agent.original"] = agent
        client = environ.get("REMOTE_ADDR")
        if client:
            attributes["client.address"] = client
        span = self.tracer.start_request(environ, f"{method} {route}" if route else method, attributes)
        token = _trace_id.set(span.trace_id)
        seen = _Response()
        traceparent = (HEADER_TRACEPARENT, span.traceparent)

        def traced_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            try:
                seen.status = int(status[:3])
            except ValueError:
                pass
            for name, value in headers:
                if name.lower() == c.HEADER_REQUEST_ID:
                    seen.request_id = value
            return start_response(status, [*headers, traceparent], exc_info)

        error: BaseException | None = None
        try:
            return self.app(environ, traced_start_response)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _trace_id.reset(token)
            final: dict[str, AttributeValue] = {"http.response.status_code": seen.status}
            if seen.request_id:
                final["azmlinfsrv.request_id"] = seen.request_id
            if seen.status >= 500:
                final["error.type"] = str(seen.status) if error is None else type(error).__qualname__
            span.finish(seen.status, final, error)
