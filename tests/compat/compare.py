"""Black-box comparison with upstream 1.5.1: the same requests to both servers, responses compared.

Run through ``nox -s compare_upstream`` (it installs upstream into its own virtual environment). Each case sends
one request to upstream's ``azmlinfsrv`` and to ours, both on 127.0.0.1, and compares status, headers and body
after removing what legitimately differs per run (dates, generated ids, timings, connection handling). Every
remaining difference must be listed in ``EXPECTED`` with the reason, which docs/migrating.md explains; an
unlisted difference fails the run. The report is written to docs/compat-report.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests
from azmlinfsrv_testing import start_server

HERE = Path(__file__).parent
SCRIPTS = HERE / "scripts"
VOLATILE_HEADERS = {"date", "server", "connection", "keep-alive", "content-length", "transfer-encoding"}
GENERATED_ID = "<generated uuid>"
# Each server reports its own installed version in x-ms-server-version (docs/migrating.md); the form is compared.
SERVER_VERSION = "azmlinfsrv/<version>"


@dataclass(frozen=True)
class Case:
    name: str
    script: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


def cases() -> list[Case]:
    json_ct = (("Content-Type", "application/json"),)
    out = [
        Case("health", "echo.py", "GET", "/"),
        Case("health with id", "echo.py", "GET", "/", (("x-request-id", "abc"),)),
        Case("health 101-char id", "echo.py", "GET", "/", (("x-request-id", "a" * 101),)),
        Case("options health", "echo.py", "OPTIONS", "/"),
        Case("unknown path", "echo.py", "GET", "/nope"),
        Case("trailing slash", "echo.py", "GET", "/score/"),
        Case("delete health", "echo.py", "DELETE", "/"),
        Case("put score", "echo.py", "PUT", "/score"),
        Case("post echo", "echo.py", "POST", "/score", json_ct, b'{"a": 1}'),
        Case("post echo empty", "echo.py", "POST", "/score"),
        Case("post echo text/plain", "echo.py", "POST", "/score", (("Content-Type", "text/plain"),), b"hi there"),
        Case("post echo invalid utf-8", "echo.py", "POST", "/score", (), b"\xff"),
        Case("get echo query", "echo.py", "GET", "/score?a=1&b=x&c=1.2&d=[1,2]&e=null&f=true&a=2&g="),
        Case("options score", "echo.py", "OPTIONS", "/score"),
        Case("head score", "echo.py", "HEAD", "/score"),
        Case("ids: legacy", "echo.py", "POST", "/score", (("x-ms-request-id", "B"),)),
        Case("ids: client", "echo.py", "POST", "/score", (("x-ms-client-request-id", "C"),)),
        Case(
            "ids: all",
            "echo.py",
            "POST",
            "/score",
            (("x-request-id", "A"), ("x-ms-request-id", "B"), ("x-ms-client-request-id", "C")),
        ),
        Case("ids: empty request id", "echo.py", "POST", "/score", (("x-request-id", ""),)),
        Case("ids: 101 client id", "echo.py", "POST", "/score", (("x-ms-client-request-id", "c" * 101),)),
        Case("trace id", "echo.py", "POST", "/score", (("TraceId", "t-1"),)),
        Case("schema post", "schema.py", "POST", "/score", json_ct, b'{"num": 5}'),
        Case("schema post extra keys", "schema.py", "POST", "/score", json_ct, b'{"num": 5, "x": 1, "color": "b"}'),
        Case("schema get", "schema.py", "GET", "/score?num=5"),
        Case("schema missing param", "schema.py", "POST", "/score", json_ct, b'{"a": 1}'),
        Case("schema not a dict", "schema.py", "POST", "/score", json_ct, b"[1, 2]"),
        Case("schema empty body", "schema.py", "POST", "/score", json_ct, b""),
        Case("schema bad json", "schema.py", "POST", "/score", json_ct, b"{"),
        Case(
            "schema wrong content type", "schema.py", "POST", "/score", (("Content-Type", "text/plain"),), b'{"num": 5}'
        ),
        Case("schema conversion error", "schema.py", "POST", "/score", json_ct, b'{"num": "x"}'),
        Case("schema NaN", "schema.py", "POST", "/score", json_ct, b'{"num": NaN}'),
        Case("schema deep nesting", "schema.py", "POST", "/score", json_ct, b"[" * 5000 + b"]" * 5000),
        Case("schema invalid utf-8", "schema.py", "POST", "/score", json_ct, b'{"num": "\xff"}'),
        Case("swagger default", "schema.py", "GET", "/swagger.json"),
        Case("swagger 3", "schema.py", "GET", "/swagger.json?version=3"),
        Case("swagger 3.1", "schema.py", "GET", "/swagger.json?version=3.1"),
        Case("swagger bad version", "schema.py", "GET", "/swagger.json?version=3.0a"),
        Case("swagger undecorated", "echo.py", "GET", "/swagger.json"),
        Case("raw get", "raw.py", "GET", "/score?x=1"),
        Case("raw post", "raw.py", "POST", "/score", (), b"payload"),
        Case("raw options", "raw.py", "OPTIONS", "/score"),
        Case("raw head", "raw.py", "HEAD", "/score"),
        Case("amlresponse none", "raw.py", "GET", "/score?kind=none"),
        Case("amlresponse text", "raw.py", "GET", "/score?kind=text"),
        Case("amlresponse json", "raw.py", "GET", "/score?kind=json"),
        Case("amlresponse headers", "raw.py", "GET", "/score?kind=headers"),
        Case("run raises", "raw.py", "GET", "/score?kind=raise"),
        Case("streaming", "raw.py", "GET", "/score?kind=stream"),
    ]
    for kind in ("none", "str", "tuple", "nested", "unicode"):
        out.append(Case(f"output {kind}", "outputs.py", "POST", "/score", (), json.dumps({"kind": kind}).encode()))
    return out


# Differences we make on purpose, by case name: each is explained in docs/migrating.md.
EXPECTED = {
    "delete health": "405 carries an Allow header (RFC 9110)",
    "put score": "405 carries an Allow header (RFC 9110)",
    "schema NaN": "NaN in JSON input is a 400 (strict JSON policy)",
    "schema deep nesting": "nesting beyond 1024 levels is a 400 (upstream: 500)",
    "schema invalid utf-8": "invalid UTF-8 inside JSON is a 400 (upstream: 500)",
}


class Server:
    """One server on 127.0.0.1 through the testing package's launcher: the same environment policy and
    process-group teardown for upstream's ``azmlinfsrv`` and ours. Upstream has no ``--host`` option; it is given
    ``AZMLINFSRV_HOST`` (which it ignores, listening on every interface) and is only ever addressed on 127.0.0.1."""

    def __init__(self, command: str, script: str, log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.server = start_server(
            ["--entry_script", script],
            cwd=SCRIPTS,
            timeout=60,
            log_dir=log.parent / log.stem,
            command=[command],
            host_flag=False,
        )
        self.port = self.server.port

    def stop(self) -> None:
        self.server.stop()


def normalise(response: requests.Response) -> dict[str, object]:
    headers: list[tuple[str, str]] = []
    for name, value in response.raw.headers.items():
        lower = name.lower()
        if lower in VOLATILE_HEADERS:
            continue
        if lower == "x-ms-run-fn-exec-ms":
            value = "<ms>"
        elif lower == "x-ms-server-version" and value.startswith("azmlinfsrv/"):
            value = SERVER_VERSION
        elif lower == "allow":  # the order of the methods varies between runs upstream
            value = ", ".join(sorted(v.strip() for v in value.split(",")))
        elif lower in ("x-request-id", "x-ms-request-id"):
            try:
                uuid.UUID(value)
                value = GENERATED_ID
            except ValueError:
                pass
        headers.append((lower, value))
    body: object = response.content.decode("utf-8", "replace")
    if response.headers.get("Content-Type", "").startswith("application/json"):
        try:
            body = json.loads(response.content)
        except ValueError:
            pass
    return {"status": response.status_code, "headers": sorted(headers), "body": body}


def run(upstream: str, ours: str, work: Path) -> list[tuple[Case, dict[str, object], dict[str, object]]]:
    results = []
    by_script: dict[str, list[Case]] = {}
    for case in cases():
        by_script.setdefault(case.script, []).append(case)
    for script, script_cases in by_script.items():
        servers = {
            "upstream": Server(upstream, script, work / f"upstream-{script}.log"),
            "ours": Server(ours, script, work / f"ours-{script}.log"),
        }
        try:
            for case in script_cases:
                answers = {}
                for side, server in servers.items():
                    response = requests.request(
                        case.method,
                        f"http://127.0.0.1:{server.port}{case.path}",
                        headers=dict(case.headers),
                        data=case.body,
                        timeout=30,
                    )
                    answers[side] = normalise(response)
                results.append((case, answers["upstream"], answers["ours"]))
        finally:
            for server in servers.values():
                server.stop()
    return results


def report(results: list[tuple[Case, dict[str, object], dict[str, object]]], output: Path) -> int:
    unexpected = 0
    lines = [
        "# Black-box comparison with upstream 1.5.1",
        "",
        "Generated by `nox -s compare_upstream` (tests/compat/compare.py): the same request to upstream's",
        "`azmlinfsrv` 1.5.1 and to ours, compared after removing dates, generated ids, timings, connection",
        "headers and the version number in `x-ms-server-version` (each server reports its own). Deliberate",
        "differences are explained in [migrating.md](migrating.md).",
        "",
        "| case | result | note |",
        "|---|---|---|",
    ]
    for case, theirs, mine in results:
        same = theirs == mine
        if same:
            verdict, note = "same", ""
        elif case.name in EXPECTED:
            verdict, note = "deliberate difference", EXPECTED[case.name]
        else:
            unexpected += 1
            verdict = "**UNEXPECTED**"
            note = f"upstream {json.dumps(theirs)[:300]} / ours {json.dumps(mine)[:300]}"
            note = note.replace("|", "\\|")
        lines.append(f"| {case.name} | {verdict} | {note} |")
    same_count = sum(1 for _, a, b in results if a == b)
    lines += [
        "",
        f"{len(results)} cases: {same_count} identical, {len(results) - same_count - unexpected} "
        f"deliberate differences, {unexpected} unexpected.",
    ]
    output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[-1:]))
    return unexpected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="upstream's azmlinfsrv executable")
    parser.add_argument("--ours", required=True, help="our azmlinfsrv executable")
    parser.add_argument("--work", default=str(HERE / ".work"), help="folder for server logs")
    parser.add_argument("--output", default=str(HERE.parent.parent / "docs" / "compat-report.md"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = run(args.upstream, args.ours, work)
    return 1 if report(results, Path(args.output)) else 0


if __name__ == "__main__":
    sys.exit(main())
