"""R15: the CORS matrix. Every origin setting against every kind of Origin, on every route, in-process and over HTTP.

The rules checked (docs/guarantees.md#w12, docs/guarantees.md#r15, docs/compatibility.md#cors):

* CORS is off when the setting is unset or empty;
* an origin is allowed only when it equals a configured entry, ignoring ASCII case and a trailing ``/``; ``*``
  allows every origin. Look-alikes (suffix, prefix, subdomain, other scheme or port) are refused;
* an allowed origin is echoed in ``Access-Control-Allow-Origin`` (never a literal ``*``) with ``Vary: Origin``;
  ``Access-Control-Allow-Credentials`` is never sent;
* a preflight (OPTIONS with ``Access-Control-Request-Method``) gets ``Access-Control-Allow-Methods`` and echoes the
  requested headers, and never calls run();
* a refused origin gets no CORS header and the same status as a request without ``Origin``;
* CORS headers appear on upstream's three routes only (not on routing errors or the extra health routes).

All cases run even after a failure, so the count of failures is meaningful.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from .conftest import Results
from .servers import RESOURCES
from .servers import ServerProcess

SCRIPT = RESOURCES / "undecorated_score.py"

CONFIGS: dict[str, str | None] = {
    "unset": None,
    "empty": "",
    "blank": " , ",
    "exact": "https://example.com",
    "list": "https://example.com, http://localhost:3000",
    "star": "*",
    "star-in-list": "https://example.com,*",
    "scheme-less": "www.microsoft.com",
    "with-port": "https://example.com:8443",
    "trailing-slash": "https://example.com/",
    "upper-case": "HTTPS://EXAMPLE.COM",
    "regex-looking": "https://.*\\.example\\.com",
}

ORIGINS: tuple[str | None, ...] = (
    None,
    "",
    "https://example.com",
    "https://EXAMPLE.com",
    "HTTPS://example.com",
    "http://example.com",
    "https://example.com:443",
    "https://example.com:8443",
    "https://example.com.evil.net",
    "https://evil-example.com",
    "https://evilexample.com",
    "https://a.example.com",
    "https://example.co",
    "https://example.com/path",
    "https://user@example.com",
    "null",
    "*",
    "http://localhost:3000",
    "http://localhost:30000",
    "http://localhost",
    "www.microsoft.com",
    "https://www.microsoft.com",
    "https://x.example.com",
)


@dataclass(frozen=True)
class Call:
    name: str
    method: str
    path: str
    preflight: bool = False
    cors_route: bool = True


CALLS = (
    Call("health", "GET", "/"),
    Call("score", "POST", "/score"),
    Call("swagger", "GET", "/swagger.json"),
    Call("preflight", "OPTIONS", "/score", preflight=True),
    Call("options", "OPTIONS", "/score"),
    Call("not-found", "GET", "/nope", cors_route=False),
    Call("live", "GET", "/health/live", cors_route=False),
)
PREFLIGHT_HEADERS = "content-type, x-custom"


def _ascii_lower(text: str) -> str:
    return "".join(chr(ord(ch) + 32) if "A" <= ch <= "Z" else ch for ch in text)


def expected_allowed(config: str | None, origin: str | None) -> bool:
    if not config or not origin:
        return False
    entries = [entry.strip() for entry in config.split(",") if entry.strip()]
    if "*" in entries:
        return True
    wanted = _ascii_lower(origin).rstrip("/")
    return any(wanted == _ascii_lower(entry).rstrip("/") for entry in entries)


@dataclass
class Seen:
    status: int
    headers: Mapping[str, str]
    body: bytes


Send = Callable[[Call, str | None], Seen]


def check_case(config: str | None, origin: str | None, call: Call, seen: Seen, baseline: Seen) -> list[str]:
    """Every rule that this response breaks."""
    problems: list[str] = []
    headers = {k.lower(): v for k, v in seen.headers.items()}
    allowed = call.cors_route and expected_allowed(config, origin)
    acao = headers.get("access-control-allow-origin")
    if "access-control-allow-credentials" in headers:
        problems.append("sent Access-Control-Allow-Credentials")
    if allowed:
        if acao != origin:
            problems.append(f"Access-Control-Allow-Origin is {acao!r}, expected the origin echoed")
        if "origin" not in [v.strip().lower() for v in headers.get("vary", "").split(",")]:
            problems.append("Vary: Origin missing")
        if call.preflight:
            if headers.get("access-control-allow-methods") != "GET, POST":
                problems.append(f"Access-Control-Allow-Methods is {headers.get('access-control-allow-methods')!r}")
            if headers.get("access-control-allow-headers") != PREFLIGHT_HEADERS:
                problems.append(f"Access-Control-Allow-Headers is {headers.get('access-control-allow-headers')!r}")
        elif "access-control-allow-methods" in headers:
            problems.append("Access-Control-Allow-Methods on a request that is not a preflight")
    else:
        leaked = sorted(name for name in headers if name.startswith("access-control-"))
        if leaked:
            problems.append(f"CORS headers {leaked} for an origin that is not allowed")
    if seen.status != baseline.status:
        problems.append(f"status {seen.status}, but {baseline.status} without Origin")
    if call.method == "OPTIONS" and call.path == "/score":
        if seen.status != 200 or seen.body or "x-ms-run-fn-exec-ms" in headers:
            problems.append(f"OPTIONS /score reached run() or failed: {seen.status} {seen.body[:80]!r}")
    return problems


def run_matrix(
    configs: Mapping[str, str | None], origins: tuple[str | None, ...], sender_for: Callable[[str | None], Send]
) -> tuple[int, list[str]]:
    cases = 0
    failures: list[str] = []
    for config_name, config in configs.items():
        send = sender_for(config)
        baselines = {call.name: send(call, None) for call in CALLS}
        for origin in origins:
            for call in CALLS:
                seen = send(call, origin)
                cases += 1
                for problem in check_case(config, origin, call, seen, baselines[call.name]):
                    failures.append(f"config {config_name}={config!r}, Origin {origin!r}, {call.name}: {problem}")
    return cases, failures


def _request_headers(call: Call, origin: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if origin is not None:
        headers["Origin"] = origin
    if call.preflight:
        headers["Access-Control-Request-Method"] = "POST"
        headers["Access-Control-Request-Headers"] = PREFLIGHT_HEADERS
    return headers


def _in_process_sender(config: str | None) -> Send:
    from azureml_inference_server_http.server import create_app

    environ = {"AML_APP_ROOT": str(RESOURCES)}
    if config is not None:
        environ["AML_CORS_ORIGINS"] = config
    client = create_app(entry_script=str(SCRIPT), environ=environ).test_client()

    def send(call: Call, origin: str | None) -> Seen:
        response = client.open(call.path, method=call.method, headers=_request_headers(call, origin), data=b"{}")
        return Seen(response.status_code, dict(response.headers), response.get_data())

    return send


def _http_sender(server: ServerProcess) -> Send:
    session = requests.Session()

    def send(call: Call, origin: str | None) -> Seen:
        response = session.request(
            call.method, server.url + call.path, headers=_request_headers(call, origin), data=b"{}", timeout=10
        )
        return Seen(response.status_code, dict(response.headers), response.content)

    return send


def test_cors_matrix_in_process(fuzz_results: Results) -> None:
    cases, failures = run_matrix(CONFIGS, ORIGINS, _in_process_sender)
    fuzz_results.add(
        "cors",
        {
            "where": "in-process (every setting)",
            "cases": cases,
            "failures": len(failures),
            "first_failure": (failures or [""])[0],
        },
    )
    assert not failures, f"{len(failures)} of {cases} CORS cases wrong:\n" + "\n".join(failures[:40])


@pytest.mark.parametrize(
    ("server_kind", "config_name", "via_flag"),
    [("gunicorn", "list", True), ("waitress", "star", False)],
)
def test_cors_matrix_over_http(
    server_kind: str, config_name: str, via_flag: bool, fuzz_results: Results, tmp_path: Path
) -> None:
    """The same rules through a real server; the setting given by the CLI flag or by the environment."""
    config = CONFIGS[config_name]
    assert config is not None
    args = ("--access_control_allow_origins", config) if via_flag else ()
    env = {} if via_flag else {"AML_CORS_ORIGINS": config}
    with ServerProcess(SCRIPT, tmp_path / "server", server=server_kind, env=env, args=args) as server:
        sender = _http_sender(server)
        cases, failures = run_matrix({config_name: config}, ORIGINS, lambda _config: sender)
    fuzz_results.add(
        "cors",
        {
            "where": f"{server_kind}, {config_name} via {'flag' if via_flag else 'environment'}",
            "cases": cases,
            "failures": len(failures),
            "first_failure": (failures or [""])[0],
        },
    )
    assert not failures, f"{len(failures)} of {cases} CORS cases wrong:\n" + "\n".join(failures[:40])
