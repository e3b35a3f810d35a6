"""R16: the instrumentation key never appears in output, logs, responses or exported telemetry.

A fresh sentinel key is given to a real server in each supported way (CLI flag, environment, connection string,
config.json, which cannot set it by design, and an invalid key). The server runs at DEBUG level with telemetry
exported to a fake ingestion endpoint on 127.0.0.1; every route and failure is exercised; then stdout, stderr, every
response (status line, headers, body) and every exported envelope (except its ``iKey`` field, which the protocol
requires) are searched for the key in any letter case, with or without hyphens.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from azmlinfsrv_testing.collector import FakeIngestion

from .conftest import Results
from .servers import RESOURCES
from .servers import ServerProcess

SCRIPT = RESOURCES / "secrets_score.py"
# AZUREML_LOG_LEVEL is validated but has no effect (as upstream); DEBUG output is turned on with a logging.json.
DEBUG_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"aml": {"()": "azureml_inference_server_http.log_config.AMLLogFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "aml"}},
    "root": {"level": "DEBUG", "handlers": ["stdout"]},
}


@dataclass(frozen=True)
class Source:
    name: str
    server: str = "gunicorn"
    valid_key: bool = True


SOURCES = (
    Source("cli-flag"),
    Source("environment"),
    Source("environment", server="waitress"),
    Source("connection-string"),
    Source("config-json"),
    Source("cli-flag-invalid-key", valid_key=False),
)


def _needles(key: str) -> list[str]:
    compact = key.replace("-", "")
    return sorted({key.lower(), compact.lower()})


def _occurrences(text: str, key: str) -> int:
    lowered = text.lower()
    return sum(lowered.count(needle) for needle in _needles(key))


def _exercise(server: ServerProcess) -> tuple[int, list[str]]:
    """Every route and failure; returns the request count and everything the server sent back."""
    url = server.url
    seen: list[str] = []
    calls: list[tuple[str, str, dict[str, str], bytes]] = [
        ("GET", "/", {}, b""),
        ("GET", "/swagger.json", {}, b""),
        ("GET", "/swagger.json?version=3", {}, b""),
        ("GET", "/swagger.json?version=9", {}, b""),
        ("POST", "/score", {"Content-Type": "application/json"}, b'{"a": 1}'),
        ("POST", "/score", {"Content-Type": "application/json"}, b'"raise"'),
        ("GET", "/score?x=1&y=%22raise%22", {}, b""),
        ("POST", "/score", {"Content-Type": "application/json"}, b"\xff\xfe"),
        ("POST", "/score", {"x-request-id": "r" * 101}, b"{}"),
        ("POST", "/score", {"x-ms-client-request-id": "c" * 101}, b"{}"),
        ("POST", "/score", {"x-ms-request-id": "legacy"}, b"{}"),
        ("OPTIONS", "/score", {"Origin": "https://example.com", "Access-Control-Request-Method": "POST"}, b""),
        ("HEAD", "/score", {}, b""),
        ("PUT", "/score", {}, b""),
        ("GET", "/nope", {}, b""),
        ("POST", "/", {}, b""),
        ("GET", "/health/live", {}, b""),
        ("GET", "/health/ready", {}, b""),
        ("GET", "/metrics", {}, b""),
        ("POST", "/score", {"Content-Type": "application/json"}, b"x" * (2 * 1024 * 1024)),
    ]
    for method, path, headers, body in calls:
        response = requests.request(method, url + path, headers=headers, data=body, timeout=30)
        seen.append(f"{response.status_code} {response.reason}\n{response.headers!r}\n{response.text}")
    # A malformed request answered by the HTTP server itself.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        try:
            seen.append(sock.recv(65536).decode("latin-1"))
        except OSError:
            pass
    return len(calls) + 1, seen


@pytest.mark.parametrize("source", SOURCES, ids=[f"{s.name}-{s.server}" for s in SOURCES])
def test_secrets_sweep(source: Source, fuzz_results: Results, tmp_path: Path) -> None:
    key = str(uuid.uuid4()) if source.valid_key else f"not-a-guid-{uuid.uuid4().hex}"
    env = {"AZUREML_LOG_LEVEL": "DEBUG", "MAX_REQUEST_BODY_MB": "1", "AML_MDC_STORAGE_ENABLED": "true"}
    args: tuple[str, ...] = ()
    app_root = tmp_path / "app"
    app_root.mkdir()
    (app_root / "logging.json").write_text(json.dumps(DEBUG_LOGGING), encoding="utf-8")
    with FakeIngestion() as ingestion:
        endpoint = f"IngestionEndpoint={ingestion.url}/"
        if source.name.startswith("cli-flag"):
            args = ("--appinsights_instrumentation_key", key)
            env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = endpoint
        elif source.name == "environment":
            env.update({"AML_APP_INSIGHTS_KEY": key, "AML_APP_INSIGHTS_ENABLED": "true"})
            env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = endpoint
        elif source.name == "connection-string":
            env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = f"InstrumentationKey={key};{endpoint}"
            env["AML_APP_INSIGHTS_ENABLED"] = "true"
        elif source.name == "config-json":
            config = {"AML_APP_INSIGHTS_KEY": key, "AML_APP_INSIGHTS_ENABLED": True, "SCORING_TIMEOUT_MS": 60000}
            (app_root / "config.json").write_text(json.dumps(config), encoding="utf-8")
            env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = endpoint
        env["AML_APP_ROOT"] = str(app_root)
        server = ServerProcess(SCRIPT, tmp_path / "server", server=source.server, env=env, args=args)
        with server:
            requests_sent, seen = _exercise(server)
            exporting = source.name in ("cli-flag", "environment", "connection-string")
            if exporting:
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and len(ingestion.envelopes) < requests_sent // 2:
                    time.sleep(0.2)
        # Stopped (SIGTERM to the group): shutdown messages and the last telemetry flush are included.
        time.sleep(0.5)
        envelopes = ingestion.envelopes
    telemetry = [json.dumps({k: v for k, v in envelope.items() if k != "iKey"}) for envelope in envelopes]
    places = {
        "stdout": server.stdout(),
        "stderr": server.stderr(),
        "responses": "\n".join(seen),
        "telemetry": "\n".join(telemetry),
    }
    found = {where: _occurrences(text, key) for where, text in places.items()}
    occurrences = sum(found.values())
    fuzz_results.add(
        "secrets",
        {
            "source": source.name,
            "server": source.server,
            "requests": requests_sent,
            "envelopes": len(envelopes),
            "bytes_scanned": sum(len(text.encode("utf-8", "replace")) for text in places.values()),
            "occurrences": occurrences,
            "where": sorted(where for where, count in found.items() if count),
        },
    )
    assert " D [" in places["stdout"], "no DEBUG output: the sweep must run at DEBUG level"
    if exporting:
        assert envelopes, "no telemetry was exported, so the telemetry sweep proved nothing"
        # Positive control: the search does find the key where the protocol requires it (the envelope's iKey).
        assert _occurrences(json.dumps(envelopes), key) >= len(envelopes), "the key search is broken"
    assert occurrences == 0, f"the key appeared {found} (key given by {source.name} on {source.server})"
