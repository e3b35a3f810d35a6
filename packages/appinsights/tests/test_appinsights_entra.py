"""Microsoft Entra ID for ingestion: the bearer token on the wire, its renewal, and the credential's choice."""

from __future__ import annotations

import importlib
import logging
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from azmlinfsrv_appinsights import create_telemetry
from azmlinfsrv_appinsights import credentials
from azmlinfsrv_appinsights import resolve_target
from azmlinfsrv_appinsights.credentials import MONITOR_SCOPE
from azmlinfsrv_appinsights.credentials import AccessToken
from azmlinfsrv_appinsights.credentials import CredentialUnavailable
from azmlinfsrv_appinsights.credentials import RefreshingToken
from azmlinfsrv_appinsights.credentials import TokenUnavailable
from azmlinfsrv_appinsights.credentials import make_credential
from azmlinfsrv_testing.collector import FakeIngestion
from azureml_inference_server_http.config import ServerConfig
from conftest import MakeTelemetry

KEY = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


class CountingCredential:
    """A credential that needs no network: numbered tokens valid for ``lifetime`` seconds."""

    def __init__(self, lifetime: float = 3600.0, fail_first: int = 0) -> None:
        self.lifetime = lifetime
        self.fail_first = fail_first
        self.calls: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append(scopes)
        if len(self.calls) <= self.fail_first:
            raise RuntimeError("identity endpoint unavailable")
        return AccessToken(f"token-{len(self.calls)}", int(time.time() + self.lifetime))


def aad(ingestion: FakeIngestion) -> str:
    return f"{ingestion.connection_string};Authorization=AAD"


def log_marker(marker: str) -> None:
    logging.getLogger("azmlinfsrv").warning(marker)


def test_aad_connection_string_resolves_to_an_entra_target() -> None:
    target = resolve_target(None, f"InstrumentationKey={KEY};IngestionEndpoint=https://x.example/;Authorization=aad")
    assert target.entra
    assert target.describe() == "https://x.example (instrumentation key 0f1e2d3c..., Microsoft Entra ID)"
    assert not resolve_target(KEY, None).entra


def test_batches_carry_the_bearer_token_for_the_monitor_scope(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry
) -> None:
    credential = CountingCredential()
    telemetry = make_telemetry(aad(ingestion), credential=credential)
    log_marker("entra-marker-1")
    assert telemetry.flush_and_wait(10)
    log_marker("entra-marker-2")
    assert telemetry.flush_and_wait(10)
    ingestion.wait_for(lambda e: e["data"]["baseData"]["message"] == "entra-marker-2", timeout=10)
    assert ingestion.posts >= 2
    assert set(ingestion.authorizations()) == {"Bearer token-1"}  # one token, reused while it is valid
    assert credential.calls == [(MONITOR_SCOPE,)]
    assert MONITOR_SCOPE == "https://monitor.azure.com//.default"


def test_without_aad_no_authorization_header_is_sent(ingestion: FakeIngestion, make_telemetry: MakeTelemetry) -> None:
    credential = CountingCredential()
    telemetry = make_telemetry(ingestion, credential=credential)
    log_marker("ikey-marker")
    assert telemetry.flush_and_wait(10)
    ingestion.wait_for(lambda e: e["data"]["baseData"]["message"] == "ikey-marker", timeout=10)
    assert set(ingestion.authorizations()) == {None}
    assert credential.calls == []


def test_an_entra_target_without_a_credential_is_refused(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry
) -> None:
    with pytest.raises(ValueError, match="Authorization=AAD"):
        make_telemetry(aad(ingestion))


def test_a_failing_credential_delays_the_batch_instead_of_losing_it(
    ingestion: FakeIngestion, make_telemetry: MakeTelemetry
) -> None:
    credential = CountingCredential(fail_first=1)
    telemetry = make_telemetry(aad(ingestion), credential=credential)
    log_marker("retried-marker")
    assert telemetry.flush_and_wait(10)
    ingestion.wait_for(lambda e: e["data"]["baseData"]["message"] == "retried-marker", timeout=10)
    assert ingestion.authorizations() == ["Bearer token-2"]
    assert telemetry.stats().dropped == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_refreshing_token_renews_before_expiry_not_on_every_call() -> None:
    clock = Clock()
    credential = CountingCredential(lifetime=0)  # expiry comes from the clock below, not from time.time()
    tokens = iter([AccessToken("a", int(clock.now + 3600)), AccessToken("b", int(clock.now + 7200))])
    credential.get_token = lambda *scopes, **kwargs: next(tokens)  # type: ignore[method-assign]
    token = RefreshingToken(credential, margin=300, clock=clock)
    assert token.get_token(MONITOR_SCOPE).token == "a"
    clock.now += 3600 - 301  # still more than the margin left: reused
    assert token.get_token(MONITOR_SCOPE).token == "a"
    assert token.renewals == 1
    clock.now += 2  # within the margin, before expiry: renewed now
    assert token.get_token(MONITOR_SCOPE).token == "b"
    assert token.renewals == 2


def test_refreshing_token_keeps_a_valid_token_when_renewal_fails() -> None:
    clock = Clock()
    calls = {"n": 0}

    class Flaky:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            calls["n"] += 1
            if calls["n"] == 1:
                return AccessToken("first", int(clock.now + 600))
            raise RuntimeError("renewal failed\nsecond line of troubleshooting text")

    token = RefreshingToken(Flaky(), margin=300, clock=clock)
    assert token.get_token(MONITOR_SCOPE).token == "first"
    clock.now += 400  # inside the margin: renewal is tried, fails, the current token is still good
    assert token.get_token(MONITOR_SCOPE).token == "first"
    clock.now += 300  # expired: nothing left to send with
    with pytest.raises(TokenUnavailable, match=r"RuntimeError: renewal failed$"):
        token.get_token(MONITOR_SCOPE)


# -- choosing the credential -------------------------------------------------------------------------------------


@pytest.fixture
def credential_module() -> Iterator[str]:
    module = types.ModuleType("azmlinfsrv_test_credentials")
    module.Good = CountingCredential  # type: ignore[attr-defined]
    module.NoToken = object  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module.__name__
    del sys.modules[module.__name__]


def test_make_credential_imports_a_named_factory(credential_module: str) -> None:
    assert isinstance(make_credential(f"{credential_module}:Good"), CountingCredential)
    with pytest.raises(CredentialUnavailable, match="no get_token"):
        make_credential(f"{credential_module}:NoToken")
    with pytest.raises(CredentialUnavailable, match="could not be created: AttributeError"):
        make_credential(f"{credential_module}:Missing")
    with pytest.raises(CredentialUnavailable, match="must be 'default', 'managed_identity'"):
        make_credential("certificate")


def test_make_credential_builds_azure_identity_credentials() -> None:
    identity = importlib.import_module("azure.identity")
    assert isinstance(make_credential(None, {}), identity.DefaultAzureCredential)
    assert isinstance(make_credential("default", {}), identity.DefaultAzureCredential)
    managed = make_credential("Managed_Identity", {"AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555"})
    assert isinstance(managed, identity.ManagedIdentityCredential)


def test_missing_azure_identity_disables_telemetry_once_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, ingestion: FakeIngestion
) -> None:
    real_import = importlib.import_module

    def no_azure_identity(name: str, package: str | None = None) -> types.ModuleType:
        if name == "azure.identity":
            raise ImportError("No module named 'azure.identity'")
        return real_import(name, package)

    monkeypatch.setattr(credentials.importlib, "import_module", no_azure_identity)
    config = ServerConfig(app_insights_enabled=True, app_insights_connection_string=aad(ingestion))
    with caplog.at_level(logging.INFO, logger="azmlinfsrv.trace"):
        assert create_telemetry(config) is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "pip install 'azureml-inference-server-http-appinsights[entra]'" in errors[0].getMessage()
    assert ingestion.instrumentation_key not in caplog.text


def test_create_telemetry_uses_the_named_credential(credential_module: str, ingestion: FakeIngestion) -> None:
    config = ServerConfig(
        app_insights_enabled=True,
        app_insights_connection_string=aad(ingestion),
        app_insights_credential=f"{credential_module}:Good",
    )
    telemetry = create_telemetry(config)
    assert telemetry is not None
    try:
        log_marker("named-credential-marker")
        assert telemetry.flush_and_wait(10)
        ingestion.wait_for(lambda e: e["data"]["baseData"]["message"] == "named-credential-marker", timeout=10)
        assert ingestion.authorizations()[0] == "Bearer token-1"
    finally:
        telemetry.close()


def test_a_credential_setting_without_aad_is_reported_as_ignored(
    caplog: pytest.LogCaptureFixture, ingestion: FakeIngestion
) -> None:
    config = ServerConfig(
        app_insights_enabled=True,
        app_insights_connection_string=ingestion.connection_string,
        app_insights_credential="managed_identity",
    )
    with caplog.at_level(logging.INFO, logger="azmlinfsrv.trace"):
        telemetry = create_telemetry(config)
    assert telemetry is not None
    telemetry.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "AZMLINFSRV_APPINSIGHTS_CREDENTIAL is ignored: the Application Insights connection string does not say "
        "Authorization=AAD, so telemetry is authorized by the instrumentation key alone"
    ]
