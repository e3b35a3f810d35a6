"""Where Application Insights telemetry goes: connection strings, the effective target, and how it is shown.

Both the launcher (to validate settings and print the banner) and the telemetry plugin (to send) read connection
strings, so the parsing lives here, in the one package both depend on. Nothing here does network I/O, and no error
message ever contains a key or a connection string: they name the problem, never the value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field

__all__ = [
    "DEFAULT_INGESTION_ENDPOINT",
    "IngestionSettingsError",
    "Target",
    "is_valid_instrumentation_key",
    "looks_like_connection_string",
    "mask",
    "resolve",
]

# The endpoint the Application Insights SDKs use when a connection string names none.
DEFAULT_INGESTION_ENDPOINT = "https://dc.services.visualstudio.com"

# compat: upstream 1.5.1's CLI accepts only keys of this shape, case-insensitively (docs/compatibility.md#cli-checks).
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)

# The values of a connection string's Authorization setting: the instrumentation key alone, or Microsoft Entra ID.
AUTHORIZATION_KEY = "ikey"
AUTHORIZATION_ENTRA = "aad"

MASK_VISIBLE = 8


class IngestionSettingsError(ValueError):
    """The key or connection string cannot be used; the message never contains either."""


@dataclass(frozen=True)
class Target:
    """A validated destination. ``repr`` hides the key so the object can be logged safely."""

    instrumentation_key: str = field(repr=False)
    endpoint: str  # scheme://host[:port][/path], without a trailing slash
    entra: bool = False  # authenticate with a Microsoft Entra ID token (Authorization=AAD)

    def describe(self) -> str:
        """``<endpoint> (instrumentation key 0a1b2c3d...[, Microsoft Entra ID])``: safe for logs and the banner."""
        auth = ", Microsoft Entra ID" if self.entra else ""
        return f"{self.endpoint} (instrumentation key {mask(self.instrumentation_key)}{auth})"


def is_valid_instrumentation_key(key: str) -> bool:
    return bool(_UUID.match(key.strip()))


def looks_like_connection_string(value: str) -> bool:
    """An instrumentation key is a GUID; a connection string is ``Name=Value;...``."""
    return "=" in value


def mask(secret: str) -> str:
    """The first characters and ``...``: enough to tell resources apart, too little to use."""
    secret = secret.strip()
    return f"{secret[:MASK_VISIBLE]}..." if len(secret) > MASK_VISIBLE else "..."


def parse_connection_string(connection_string: str) -> dict[str, str]:
    """``Name=Value;...`` into a dict with lower-case names, tolerating blanks and a trailing ``;``."""
    result: dict[str, str] = {}
    for part in connection_string.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise IngestionSettingsError(
                "the Application Insights connection string is malformed (expected Name=Value;...)"
            )
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
        raise IngestionSettingsError("the Application Insights IngestionEndpoint must be an http:// or https:// URL")
    return endpoint


def resolve(key: str | None, connection_string: str | None) -> Target:
    """Combine ``AML_APP_INSIGHTS_KEY`` and ``APPLICATIONINSIGHTS_CONNECTION_STRING`` into a target.

    The connection string's ``InstrumentationKey`` wins over the bare key. Raises :class:`IngestionSettingsError`
    when there is no key, the key is not a GUID, or the connection string is malformed or names an authorization
    other than the instrumentation key (``ikey``) or Microsoft Entra ID (``AAD``).
    """
    settings = parse_connection_string(connection_string) if connection_string and connection_string.strip() else {}
    authorization = (settings.get("authorization") or AUTHORIZATION_KEY).lower()
    if authorization not in (AUTHORIZATION_KEY, AUTHORIZATION_ENTRA):
        raise IngestionSettingsError("the connection string's Authorization must be ikey or AAD (Microsoft Entra ID)")
    instrumentation_key = settings.get("instrumentationkey") or (key or "").strip()
    if not instrumentation_key:
        raise IngestionSettingsError("no Application Insights instrumentation key was provided")
    if not is_valid_instrumentation_key(instrumentation_key):
        raise IngestionSettingsError("the Application Insights instrumentation key is not a valid GUID")
    return Target(
        instrumentation_key=instrumentation_key,
        endpoint=_endpoint(settings),
        entra=authorization == AUTHORIZATION_ENTRA,
    )
