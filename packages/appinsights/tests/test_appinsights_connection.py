"""Where telemetry goes: keys, connection strings and their validation."""

from __future__ import annotations

import pytest
from azmlinfsrv_appinsights import InvalidTargetError
from azmlinfsrv_appinsights import resolve_target
from azmlinfsrv_appinsights.connection import DEFAULT_INGESTION_ENDPOINT

KEY = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def test_resolve_target_key_only_uses_the_public_endpoint() -> None:
    target = resolve_target(KEY, None)
    assert target.instrumentation_key == KEY
    assert target.endpoint == DEFAULT_INGESTION_ENDPOINT


def test_resolve_target_connection_string_sets_endpoint_without_trailing_slash() -> None:
    target = resolve_target(None, f"InstrumentationKey={KEY};IngestionEndpoint=http://127.0.0.1:9/;")
    assert target.instrumentation_key == KEY
    assert target.endpoint == "http://127.0.0.1:9"
    assert target.connection_string == f"InstrumentationKey={KEY};IngestionEndpoint=http://127.0.0.1:9"


def test_resolve_target_connection_string_key_wins_over_the_bare_key() -> None:
    other = "11111111-2222-3333-4444-555555555555"
    target = resolve_target(other, f"InstrumentationKey={KEY};IngestionEndpoint=https://example.invalid")
    assert target.instrumentation_key == KEY
    # Both values are secrets: redaction must cover the one we do not send too.
    assert set(target.secrets) == {KEY, other}


def test_resolve_target_connection_string_without_key_uses_the_bare_key() -> None:
    target = resolve_target(KEY, "IngestionEndpoint=https://sovereign.example.invalid/")
    assert target.instrumentation_key == KEY
    assert target.endpoint == "https://sovereign.example.invalid"


def test_resolve_target_endpoint_suffix_and_location() -> None:
    target = resolve_target(None, f"InstrumentationKey={KEY};EndpointSuffix=applicationinsights.us;Location=usgov")
    assert target.endpoint == "https://usgov.dc.applicationinsights.us"


def test_resolve_target_accepts_upper_case_keys() -> None:
    # compat: upstream's CLI check is case-insensitive (docs/compatibility.md#cli-checks).
    assert resolve_target(KEY.upper(), None).instrumentation_key == KEY.upper()


@pytest.mark.parametrize(
    ("key", "connection_string"),
    [
        ("not-a-guid-secret-value", None),
        (None, "InstrumentationKey=not-a-guid-secret-value"),
        (None, None),
        ("", ""),
        (None, "garbage-without-equals-secret-value"),
        (None, f"InstrumentationKey={KEY};Authorization=SAS-secret-value"),
        (None, f"InstrumentationKey={KEY};IngestionEndpoint=ftp://secret-value.example"),
    ],
)
def test_resolve_target_rejects_unusable_values_without_echoing_them(
    key: str | None, connection_string: str | None
) -> None:
    with pytest.raises(InvalidTargetError) as info:
        resolve_target(key, connection_string)
    assert "secret-value" not in str(info.value)
    assert KEY not in str(info.value)


def test_ingestion_target_repr_hides_the_key() -> None:
    target = resolve_target(KEY, None)
    assert KEY not in repr(target)
    assert KEY not in str(target)
