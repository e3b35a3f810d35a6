"""R17: schemathesis over the server's own ``/swagger.json``, with every check, against a real server.

Two score scripts (``resources/decorated_score.py`` with ``@input_schema``, ``resources/undecorated_score.py``) and
two documents each (Swagger 2, the default of ``/swagger.json``, and OpenAPI 3.0). The document is fetched from the
server, so it is exactly what clients get, with one change: its ``security`` requirements are removed. They describe
the Bearer check of Azure ML's front end; this server never authenticates (by design), so schemathesis's auth checks
would test a layer that is not in this process.

Counted from schemathesis's NDJSON report: cases, requests, 5xx answers (split into server errors and user-script
errors, told apart by ``x-ms-run-function-failed``), and failing checks, split into schema-conformance checks and the
others. The test fails on any failing check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import Budget
from .conftest import Results
from .servers import RESOURCES
from .servers import ServerProcess

SCRIPTS = {"decorated": RESOURCES / "decorated_score.py", "undecorated": RESOURCES / "undecorated_score.py"}
DOCUMENTS = ("2", "3")
CONFORMANCE_CHECKS = frozenset(
    {
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    }
)


@pytest.fixture(scope="module", params=sorted(SCRIPTS))
def schemathesis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ServerProcess]]:
    name = str(request.param)
    log_dir = tmp_path_factory.mktemp(f"schemathesis-{name}")
    with ServerProcess(SCRIPTS[name], log_dir) as server:
        yield name, server


def without_security(document: dict[str, Any]) -> dict[str, Any]:
    """The document minus its security requirements and schemes (see the module docstring)."""
    document = json.loads(json.dumps(document))
    document.pop("security", None)
    document.pop("securityDefinitions", None)
    document.get("components", {}).pop("securitySchemes", None)
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                operation.pop("security", None)
    return document


def summarize(report: Path) -> dict[str, Any]:
    """Counts from a schemathesis NDJSON report."""
    cases: set[str] = set()
    requests_made = 0
    server_errors = 0
    user_errors = 0
    failures: dict[tuple[str, str, str], str] = {}
    errors: list[str] = []
    seed = None
    for line in report.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if "Initialize" in event:
            seed = event["Initialize"].get("seed")
        if "NonFatalError" in event or "FatalError" in event:
            payload = event.get("NonFatalError") or event.get("FatalError")
            errors.append(json.dumps(payload)[:500])
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished.get("recorder") or {}
        cases.update(recorder.get("cases", {}))
        for interaction in recorder.get("interactions", {}).values():
            response = interaction.get("response") or {}
            status = int(response.get("status_code", 0))
            requests_made += 1
            if status >= 500 and status != 501:
                headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
                if headers.get("x-ms-run-function-failed") == ["True"]:
                    user_errors += 1
                else:
                    server_errors += 1
        for checks in recorder.get("checks", {}).values():
            for check in checks:
                if check.get("status") != "failure":
                    continue
                failure = (check.get("failure_info") or {}).get("failure") or {}
                key = (check["name"], failure.get("operation", ""), failure.get("title", ""))
                failures.setdefault(key, f"{failure.get('code', '')} {failure.get('message', '')}".strip()[:300])
    conformance = {k: v for k, v in failures.items() if k[0] in CONFORMANCE_CHECKS}
    return {
        "cases": len(cases),
        "requests": requests_made,
        "server_errors": server_errors,
        "user_errors": user_errors,
        "conformance_failures": len(conformance),
        "other_failures": len(failures) - len(conformance),
        "failing_checks": sorted({f"{name} ({operation})" for name, operation, _ in failures}),
        "details": [
            f"{name} {operation}: {title}: {message}" for (name, operation, title), message in failures.items()
        ],
        "errors": errors,
        "seed": seed,
    }


@pytest.mark.schemathesis
@pytest.mark.parametrize("version", DOCUMENTS)
def test_schemathesis_all_checks(
    schemathesis_server: tuple[str, ServerProcess],
    version: str,
    fuzz_budget: Budget,
    fuzz_results: Results,
    tmp_path: Path,
) -> None:
    script, server = schemathesis_server
    document = requests.get(f"{server.url}/swagger.json?version={version}", timeout=10).json()
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(without_security(document)), encoding="utf-8")
    report_dir = tmp_path / "report"
    argv = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        str(spec),
        "--url",
        server.url,
        "--checks",
        "all",
        "--max-examples",
        str(fuzz_budget.examples),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--continue-on-failure",
        "--generation-database",
        "none",
        "--report",
        "ndjson",
        "--report-dir",
        str(report_dir),
        "--no-color",
    ]
    if fuzz_budget.seed is not None:
        argv += ["--seed", str(fuzz_budget.seed)]
    completed = subprocess.run(
        argv,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=600 if fuzz_budget.long else 240,
    )
    reports = sorted(report_dir.glob("*.ndjson"))
    assert reports, f"schemathesis wrote no report (exit {completed.returncode}):\n{completed.stdout[-3000:]}"
    summary = summarize(reports[-1])
    fuzz_results.add(
        "schemathesis",
        {
            "script": script,
            "document": "Swagger 2.0" if version == "2" else "OpenAPI 3.0",
            **{k: v for k, v in summary.items() if k not in ("details", "errors")},
            "details": summary["details"],
        },
    )
    assert summary["cases"] > 0, f"schemathesis generated no case:\n{completed.stdout[-3000:]}"
    assert not summary["errors"], "schemathesis could not run some operations:\n" + "\n".join(summary["errors"])
    assert summary["server_errors"] == 0 and summary["user_errors"] == 0 and not summary["details"], (
        f"{script} script, document v{version}: {summary['server_errors']} server errors, "
        f"{summary['user_errors']} user-script errors, failing checks:\n"
        + "\n".join(summary["details"])
        + f"\n\nschemathesis output (tail):\n{completed.stdout[-4000:]}"
    )
