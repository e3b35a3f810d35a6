"""Where telemetry goes: the instrumentation key and ingestion endpoint, from a key or a connection string.

A connection string (``APPLICATIONINSIGHTS_CONNECTION_STRING``) wins over a bare key (``AML_APP_INSIGHTS_KEY``), so
sovereign clouds and tests can point telemetry at another ``IngestionEndpoint``. No error message here ever contains
the key (docs/guarantees.md#r16): they name the problem, never the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field

__all__ = [
    "DEFAULT_INGESTION_ENDPOINT",
    "IngestionTarget",
    "InvalidTargetError",
    "is_valid_instrumentation_key",
    "resolve_target",
]

# The endpoint the Application Insights SDKs use when a connection string names none.
DEFAULT_INGESTION_ENDPOINT = "https://dc.services.visualstudio.com"

# compat: upstream 1.5.1's CLI accepts only keys of this shape, case-insensitively (docs/compatibility.md#cli-checks).
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


class InvalidTargetError(ValueError):
    """The key or connection string cannot be used; the message never contains the key."""


@dataclass(frozen=True)
class IngestionTarget:
    """A validated destination. ``repr`` hides the key so the object can be logged safely."""

    instrumentation_key: str = field(repr=False)
    endpoint: str  # scheme://host[:port][/path], without a trailing slash
    # Every secret-bearing value we were given, so redaction also covers a differing AML_APP_INSIGHTS_KEY.
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def connection_string(self) -> str:
        return f"InstrumentationKey={self.instrumentation_key};IngestionEndpoint={self.endpoint}"


def is_valid_instrumentation_key(key: str) -> bool:
    return bool(_UUID.match(key.strip()))


def _parse(connection_string: str) -> dict[str, str]:
    """``Key=Value;...`` into a dict with lower-case keys, tolerating blanks and a trailing ``;``."""
    result: dict[str, str] = {}
    for part in connection_string.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise InvalidTargetError("the Application Insights connection string is malformed (expected Key=Value;...)")
        result[name.strip().lower()] = value.strip()
    return result


def _endpoint(settings: dict[str, str]) -> str:
    endpoint = settings.get("ingestionendpoint")
    if not endpoint and settings.get("endpointsuffix"):
        # The documented fallback: https://<location>.dc.<suffix> (or https://dc.<suffix>).
        location = settings.get("location")
        prefix = f"{location}." if location else ""
        endpoint = f"https://{prefix}dc.{settings['endpointsuffix']}"
    endpoint = (endpoint or DEFAULT_INGESTION_ENDPOINT).rstrip("/")
    if not endpoint.lower().startswith(("http://", "https://")):
        raise InvalidTargetError("the Application Insights IngestionEndpoint must be an http:// or https:// URL")
    return endpoint


def resolve_target(key: str | None, connection_string: str | None) -> IngestionTarget:
    """Combine ``AML_APP_INSIGHTS_KEY`` and ``APPLICATIONINSIGHTS_CONNECTION_STRING`` into a target.

    Raises :class:`InvalidTargetError` when there is no key, the key is not a GUID, or the connection string is
    malformed or asks for an authorization scheme other than the instrumentation key.
    """
    settings = _parse(connection_string) if connection_string and connection_string.strip() else {}
    authorization = settings.get("authorization")
    if authorization and authorization.lower() != "ikey":
        raise InvalidTargetError("only instrumentation-key authorization is supported in the connection string")
    instrumentation_key = settings.get("instrumentationkey") or (key or "").strip()
    if not instrumentation_key:
        raise InvalidTargetError("no Application Insights instrumentation key was provided")
    if not is_valid_instrumentation_key(instrumentation_key):
        raise InvalidTargetError("the Application Insights instrumentation key is not a valid GUID")
    secrets = tuple(sorted({s for s in (instrumentation_key, (key or "").strip()) if s}))
    return IngestionTarget(instrumentation_key=instrumentation_key, endpoint=_endpoint(settings), secrets=secrets)
