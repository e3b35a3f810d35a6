"""``azmlinfsrv validate``: a one-shot check of a score script for CI gates.

It imports the script, checks init()/run() and their decorators, runs init() within a time budget, builds the
swagger documents and scores each sample through the real request path (in-process, no socket). Exit 0 only when
every check passed.

A script that cannot load or whose init() raises is reported by what the user needs first: the exception, the
missing module for an import error, and the line of the script; then one traceback of the user's own frames.

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
from azureml_inference_server_http.exceptions import AzmlinfsrvError

_REQUEST_KEYS = {"method", "json", "body", "headers", "query", "expect_status"}


# The server's own code, left out of the traceback shown for a failing script.
_SERVER_DIRS = tuple(
    os.path.join(os.path.dirname(os.path.abspath(path)), "")
    for path in (__file__, c.__file__)  # azmlinfsrv, azureml_inference_server_http
)
_MAX_FRAMES = 6  # of the user's own, the innermost; a report in a CI log stays short
_MAX_LOG_LINES = 8


@dataclass
class ScriptError:
    """What a failing load or init() comes down to, for each report format."""

    type: str
    message: str
    file: str | None = None
    line: int | None = None
    module: str | None = None  # the module an import could not find
    traceback: str = ""

    @property
    def headline(self) -> str:
        where = f" at {self.file}:{self.line}" if self.file and self.line else ""
        return f"{self.type}: {self.message}{where}"


@dataclass
class Check:
    name: str
    passed: bool
    seconds: float
    detail: str = ""
    error: ScriptError | None = None


@dataclass
class Report:
    entry_script: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def add(self, name: str, passed: bool, started: float, detail: str = "", error: ScriptError | None = None) -> Check:
        check = Check(name, passed, round(time.monotonic() - started, 3), detail, error)
        self.checks.append(check)
        return check


def _is_users(filename: str) -> bool:
    return not (filename.startswith("<frozen ") or os.path.abspath(filename).startswith(_SERVER_DIRS))


def _same_file(a: str, b: str) -> bool:
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def script_error(exc: BaseException, entry_script: str) -> ScriptError:
    """The user's exception under the server's wrappers, where it happened in the script, and its own frames."""
    while isinstance(exc, AzmlinfsrvError) and exc.__cause__ is not None:
        exc = exc.__cause__
    frames = traceback.extract_tb(exc.__traceback__)
    users = [frame for frame in frames if _is_users(frame.filename)]
    error = ScriptError(type=type(exc).__name__, message=str(exc))
    if isinstance(exc, AzmlinfsrvError):
        # The server's own verdict on the script (no init(), a bad run() signature): its frames say nothing more.
        error.file, shown = entry_script, []
    elif isinstance(exc, SyntaxError) and exc.filename:
        # Raised while compiling the file: the place is the error's own, and no frame is in the script.
        error.message = exc.msg
        error.file, error.line, shown = exc.filename, exc.lineno, users[-_MAX_FRAMES:]
    else:
        in_script = [frame for frame in users if _same_file(frame.filename, entry_script)]
        places = in_script or users
        if places:
            error.file, error.line = places[-1].filename, places[-1].lineno
        shown = (users or frames[-1:])[-_MAX_FRAMES:]
    if isinstance(exc, ImportError) and exc.name:
        error.module = exc.name
    lines = ["Traceback (most recent call last):"] if shown else []
    if shown and len(shown) < len(users):
        lines.append(f"  [{len(users) - len(shown)} earlier frames of your code left out]")
    lines += [text.rstrip("\n") for text in traceback.format_list(shown)]
    if not isinstance(exc, AzmlinfsrvError):
        lines += [text.rstrip("\n") for text in traceback.format_exception_only(type(exc), exc)]
    error.traceback = "\n".join(lines)
    return error


def _error_detail(error: ScriptError, logs: str) -> str:
    lines = [error.headline]
    if error.module:
        lines.append(f"Missing module: {error.module} (install the package that provides it, or fix the import)")
    if error.traceback:
        lines.append(error.traceback)
    log_lines = logs.splitlines()
    if log_lines:
        lines.append("Server log:")
        if len(log_lines) > _MAX_LOG_LINES:
            lines.append(f"[{len(log_lines) - _MAX_LOG_LINES} earlier lines left out]")
        lines += log_lines[-_MAX_LOG_LINES:]
    return "\n".join(lines)


class _WithoutTraceback(logging.Formatter):
    """Formats a record as ``inner`` would, leaving its traceback out: the report carries it, once."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        plain = logging.makeLogRecord(record.__dict__)
        plain.exc_info = None
        plain.exc_text = None
        plain.stack_info = None
        return self.inner.format(plain)


def _captured_logs() -> tuple[io.StringIO, logging.Handler]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(_WithoutTraceback(logging.Formatter("%(levelname)s %(name)s - %(message)s")))
    # A record with a traceback is the failure itself, which the report states first.
    handler.addFilter(lambda record: record.exc_info is None)
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
        error = script_error(exc, report.entry_script)
        report.add("load", False, started, _error_detail(error, logs.getvalue()), error)
        return
    if not settled:
        report.add("init", False, started, f"init() did not finish within {init_timeout:g} s")
        return
    if failure:
        error = script_error(failure[0], report.entry_script)
        report.add("load and init", False, started, _error_detail(error, logs.getvalue()), error)
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
            "checks": [
                {**check.__dict__, "error": check.error.__dict__ if check.error else None} for check in report.checks
            ],
        },
        indent=2,
    )


def render_junit(report: Report) -> str:
    # Imported here: xml.sax.saxutils pulls in urllib.request and http.client, 25 ms of the launcher's start-up.
    from xml.sax.saxutils import escape

    attribute = {'"': "&quot;", "\n": "&#10;"}
    failures = sum(not check.passed for check in report.checks)
    total = sum(check.seconds for check in report.checks)
    cases = []
    for check in report.checks:
        name = escape(check.name, attribute)
        error = check.error
        where = ""
        if error and error.file and error.line:
            # The attributes pytest writes; CI systems link the failure to the line.
            where = f' file="{escape(error.file, attribute)}" line="{error.line}"'
        case = f'  <testcase classname="azmlinfsrv.validate" name="{name}" time="{check.seconds}"{where}>'
        if error:
            message = escape(error.headline, attribute)
            kind = escape(error.type, attribute)
            case += f'<failure message="{message}" type="{kind}">{escape(check.detail)}</failure>'
        elif not check.passed:
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
    # Their tracebacks are left out: the report states the failure once, with the user's frames only.
    server_logger = logging.getLogger("azmlinfsrv")
    for existing in list(server_logger.handlers):
        if isinstance(existing, logging.StreamHandler) and getattr(existing, "stream", None) is sys.stdout:
            existing.setStream(sys.stderr)
        existing.setFormatter(_WithoutTraceback(existing.formatter))
    report = run_validation(entry_script, model_dir, sample, init_timeout)
    text = renderers[output_format](report)
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    else:
        from azureml_inference_server_http.server.print_hook import real_print

        real_print(text)
    raise typer.Exit(0 if report.passed else 1)
