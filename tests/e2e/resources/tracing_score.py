"""Score script for the tracing tests: starts a span of its own inside run(), as user code instrumented with the
OpenTelemetry API does, and answers with the trace and span ids it saw; raises on {"fail": ...}."""

import json

from opentelemetry import trace

tracer = trace.get_tracer("tracing-score")


def init():
    pass


def run(data):
    payload = json.loads(data)
    with tracer.start_as_current_span("user-work", attributes={"user.marker": "inside-run"}) as span:
        if "fail" in payload:
            raise ValueError("tracing-run-failure-marker")
        context = span.get_span_context()
        return {"trace_id": format(context.trace_id, "032x"), "user_span_id": format(context.span_id, "016x")}
