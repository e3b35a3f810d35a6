"""Prometheus metrics for ``GET /metrics``.

Under gunicorn every worker is its own process, so the front-end sets ``PROMETHEUS_MULTIPROC_DIR`` before any
worker starts; prometheus-client then keeps values in shared files and ``/metrics`` aggregates all workers,
whichever worker answers the scrape. Without it (a custom single-process host) values live in memory.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram
from prometheus_client import generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Metrics:
    """The server's metrics; a disabled instance does nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.multiprocess = enabled and bool(os.environ.get(MULTIPROC_ENV))
        if not enabled:
            return
        if self.multiprocess:
            # prometheus-client picks its value store when it is first imported; if that happened before the
            # launcher set PROMETHEUS_MULTIPROC_DIR, pick again so that values go to the shared files.
            from prometheus_client import values

            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        registry = CollectorRegistry()
        self.registry = registry
        self.requests = Counter(
            "azmlinfsrv_requests",
            "Requests to /score and to Open Inference Protocol infer routes.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "azmlinfsrv_request_duration_seconds",
            "Time from request start to response, /score and infer routes.",
            buckets=_BUCKETS,
            registry=registry,
        )
        self.run_seconds = Histogram(
            "azmlinfsrv_run_duration_seconds",
            "Time spent in run().",
            buckets=_BUCKETS,
            registry=registry,
        )
        self.failures = Counter("azmlinfsrv_run_failures", "run() calls that raised.", registry=registry)
        self.timeouts = Counter(
            "azmlinfsrv_scoring_timeouts",
            "run() calls stopped by SCORING_TIMEOUT_MS.",
            registry=registry,
        )
        # Across gunicorn workers: in-flight requests add up, init durations report the slowest worker.
        if self.multiprocess:
            self.init_seconds = Gauge(
                "azmlinfsrv_init_duration_seconds",
                "How long init() took in this worker.",
                registry=registry,
                multiprocess_mode="max",
            )
            self.in_flight = Gauge(
                "azmlinfsrv_requests_in_flight",
                "Requests being scored.",
                registry=registry,
                multiprocess_mode="livesum",
            )
        else:
            self.init_seconds = Gauge(
                "azmlinfsrv_init_duration_seconds", "How long init() took in this worker.", registry=registry
            )
            self.in_flight = Gauge("azmlinfsrv_requests_in_flight", "Requests being scored.", registry=registry)
        self._labelled: dict[tuple[str, str, int], Counter] = {}

    @classmethod
    def create(cls, enabled: bool) -> Metrics:
        return cls(enabled)

    def started(self) -> None:
        if self.enabled:
            self.in_flight.inc()

    def observe_score(self, method: str, status: int, ms: float, run_ms: float | None, route: str = "/score") -> None:
        if not self.enabled:
            return
        self.in_flight.dec()
        key = (route, method, status)
        child = self._labelled.get(key)
        if child is None:
            child = self.requests.labels(route, method, str(status))
            self._labelled[key] = child
        child.inc()
        self.request_seconds.observe(ms / 1000.0)
        if run_ms is not None:
            self.run_seconds.observe(run_ms / 1000.0)

    def observe_failure(self, timeout: bool) -> None:
        if self.enabled:
            (self.timeouts if timeout else self.failures).inc()

    def set_init_seconds(self, seconds: float) -> None:
        if self.enabled:
            self.init_seconds.set(seconds)

    def render(self) -> tuple[bytes, str]:
        if not self.enabled:
            return b"", CONTENT_TYPE_LATEST
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
