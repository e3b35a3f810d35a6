"""``azmlinfsrv validate``: a one-shot check of a score script for CI gates.

It imports the script, checks init()/run() and their decorators, runs init() within a time budget, builds the
swagger documents and scores each sample through the real request path (in-process, no socket). Exit 0 only when
every check passed.

A sample file is either a request description ``{"method": "POST", "json": {...} | "body": "...",
"headers": {...}, "query": "a=1", "expect_status": 200}`` or, when it has no such keys, the JSON body to POST.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import typer
from azureml_inference_server_http import constants as c

_REQUEST_KEYS = {"method", "json", "body", "headers", "query", "expect_status"}


@dataclass
class Check:
    name: str
    passed: bool
    seconds: float
    detail: str = ""


@dataclass
class Report:
    entry_script: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def add(self, name: str, passed: bool, started: float, detail: str = "") -> Check:
        check = Check(name, passed, round(time.monotonic() - started, 3), detail)
        self.checks.append(check)
        return check


def _captured_logs() -> tuple[io.StringIO, logging.Handler]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s - %(message)s"))
    logging.getLogger("azmlinfsrv").addHandler(handler)
    return buffer, handler


def run_validation(entry_script: str, model_dir: str | None, samples: list[str], init_timeout: float) -> Report:
    report = Report(entry_script=os.path.abspath(entry_script))
    env = dict(os.environ)
    env.setdefault(c.ENV_APP_ROOT, os.getcwd())
    env[c.ENV_ENTRY_SCRIPT] = report.entry_script
    if model_dir is not None:
        env[c.ENV_MODEL_DIR] = model_dir
        os.environ[c.ENV_MODEL_DIR] = model_dir  # the script reads it from its environment
    env[c.ENV_METRICS_ENABLED] = "false"
    buffer, handler = _captured_logs()
    try:
        _check(report, env, samples, init_timeout, buffer)
    finally:
        logging.getLogger("azmlinfsrv").removeHandler(handler)
    return report


def _check(report: Report, env: dict[str, str], samples: list[str], init_timeout: float, logs: io.StringIO) -> None:
    from azureml_inference_server_http.server import create_app
    from azureml_inference_server_http.server import get_state

    started = time.monotonic()
    failure: list[BaseException] = []
    try:
        # The report owns stdout (it may be JSON or JUnit); the server's own prints go to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            app = create_app(environ=env, background_init=True, on_init_failure=failure.append)
            state = get_state(app)
            settled = state.settled.wait(init_timeout)
    except Exception as exc:
        report.add("load", False, started, "".join(traceback.format_exception(exc)))
        return
    if not settled:
        report.add("init", False, started, f"init() did not finish within {init_timeout:g} s")
        return
    if failure:
        detail = "".join(traceback.format_exception(failure[0])) + "\n" + logs.getvalue()
        report.add("load and init", False, started, detail)
        return
    script = state.script
    assert script is not None
    init_detail = f"run() input mode: {script.mode.value}; init took {state.init_seconds or 0.0:.3f} s"
    report.add("load and init", True, started, init_detail)
    swagger_started = time.monotonic()
    versions = state.swagger.versions
    report.add("swagger", bool(versions), swagger_started, f"versions: {', '.join(versions) or 'none'}")
    client = app.test_client()
    for sample in samples:
        sample_started = time.monotonic()
        try:
            with open(sample, encoding="utf-8") as handle:
                spec = json.load(handle)
        except (OSError, ValueError) as exc:
            report.add(f"sample {sample}", False, sample_started, f"cannot read the sample: {exc}")
            continue
        if not (isinstance(spec, dict) and spec.keys() & _REQUEST_KEYS and spec.keys() <= _REQUEST_KEYS):
            spec = {"json": spec}
        method = str(spec.get("method", "POST")).upper()
        kwargs: dict[str, Any] = {"headers": spec.get("headers") or {}}
        if "json" in spec:
            kwargs["json"] = spec["json"]
        elif "body" in spec:
            kwargs["data"] = spec["body"]
        path = "/score" + (f"?{spec['query']}" if spec.get("query") else "")
        response = client.open(path, method=method, **kwargs)
        expected = int(spec.get("expect_status", 200))
        body = response.get_data(as_text=True)
        detail = f"{method} {path} -> {response.status_code}: {body[:500]}"
        report.add(f"sample {sample}", response.status_code == expected, sample_started, detail)


def render_text(report: Report) -> str:
    lines = [f"Validating {report.entry_script}"]
    for check in report.checks:
        mark = "PASS" if check.passed else "FAIL"
        lines.append(f"  {mark} {check.name} ({check.seconds:.3f} s)")
        for detail_line in check.detail.splitlines():
            lines.append(f"       {detail_line}")
    passed = sum(check.passed for check in report.checks)
    lines.append(f"{passed} passed, {len(report.checks) - passed} failed")
    return "\n".join(lines)


def render_json(report: Report) -> str:
    return json.dumps(
        {
            "entry_script": report.entry_script,
            "passed": report.passed,
            "checks": [check.__dict__ for check in report.checks],
        },
        indent=2,
    )


def render_junit(report: Report) -> str:
    # Imported here: xml.sax.saxutils pulls in urllib.request and http.client, 25 ms of the launcher's start-up.
    from xml.sax.saxutils import escape

    failures = sum(not check.passed for check in report.checks)
    total = sum(check.seconds for check in report.checks)
    cases = []
    for check in report.checks:
        name = escape(check.name, {'"': "&quot;"})
        case = f'  <testcase classname="azmlinfsrv.validate" name="{name}" time="{check.seconds}">'
        if not check.passed:
            case += f'<failure message="{name} failed">{escape(check.detail)}</failure>'
        else:
            case += f"<system-out>{escape(check.detail)}</system-out>"
        cases.append(case + "</testcase>")
    return "\n".join(
        [
            '<?xml version="1.0" encoding="utf-8"?>',
            f'<testsuite name="azmlinfsrv validate" tests="{len(report.checks)}" failures="{failures}" '
            f'time="{total:.3f}">',
            *cases,
            "</testsuite>",
        ]
    )


def validate_command(
    entry_script: str = typer.Option(..., "--entry_script", help="The score script to check."),
    model_dir: str | None = typer.Option(None, "--model_dir", help="The model directory (AZUREML_MODEL_DIR)."),
    sample: list[str] = typer.Option([], "--sample", help="A request JSON file to score; repeat for several."),
    output_format: str = typer.Option("text", "--format", help="text, json or junit."),
    output: str | None = typer.Option(None, "--output", help="Write the report to this file instead of stdout."),
    init_timeout: float = typer.Option(600.0, "--init_timeout", help="Seconds init() may take."),
) -> None:
    """Check a score script: import, init(), swagger and sample requests. Exit 0 only if all pass."""
    renderers = {"text": render_text, "json": render_json, "junit": render_junit}
    if output_format not in renderers:
        raise typer.BadParameter(f"--format must be one of {', '.join(renderers)}")
    # Server logs go to stderr: stdout carries only the report.
    server_logger = logging.getLogger("azmlinfsrv")
    for existing in list(server_logger.handlers):
        if isinstance(existing, logging.StreamHandler) and getattr(existing, "stream", None) is sys.stdout:
            existing.setStream(sys.stderr)
    report = run_validation(entry_script, model_dir, sample, init_timeout)
    text = renderers[output_format](report)
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    else:
        from azureml_inference_server_http.server.print_hook import real_print

        real_print(text)
    raise typer.Exit(0 if report.passed else 1)
