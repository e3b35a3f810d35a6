"""Where telemetry goes: key, ingestion endpoint and authentication, from a key or a connection string.

A connection string (``APPLICATIONINSIGHTS_CONNECTION_STRING``) wins over a bare key (``AML_APP_INSIGHTS_KEY``), so
sovereign clouds and tests can point telemetry at another ``IngestionEndpoint``, and ``Authorization=AAD`` asks for
Microsoft Entra ID tokens. The parsing is core's (the launcher shows the same target in its banner). No error message
here ever contains the key (docs/guarantees.md#r16): they name the problem, never the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field

from azureml_inference_server_http import ingestion
from azureml_inference_server_http.ingestion import DEFAULT_INGESTION_ENDPOINT
from azureml_inference_server_http.ingestion import is_valid_instrumentation_key

__all__ = [
    "DEFAULT_INGESTION_ENDPOINT",
    "IngestionTarget",
    "InvalidTargetError",
    "is_valid_instrumentation_key",
    "resolve_target",
]


class InvalidTargetError(ValueError):
    """The key or connection string cannot be used; the message never contains the key."""


@dataclass(frozen=True)
class IngestionTarget:
    """A validated destination. ``repr`` hides the key so the object can be logged safely."""

    instrumentation_key: str = field(repr=False)
    endpoint: str  # scheme://host[:port][/path], without a trailing slash
    # Every secret-bearing value we were given, so redaction also covers a differing AML_APP_INSIGHTS_KEY.
    secrets: tuple[str, ...] = field(default=(), repr=False)
    entra: bool = False  # send a Microsoft Entra ID bearer token with each batch (Authorization=AAD)

    @property
    def connection_string(self) -> str:
        return f"InstrumentationKey={self.instrumentation_key};IngestionEndpoint={self.endpoint}"

    def describe(self) -> str:
        """The endpoint, the masked key and the authentication: safe to log."""
        return ingestion.Target(self.instrumentation_key, self.endpoint, self.entra).describe()


def resolve_target(key: str | None, connection_string: str | None) -> IngestionTarget:
    """Combine ``AML_APP_INSIGHTS_KEY`` and ``APPLICATIONINSIGHTS_CONNECTION_STRING`` into a target.

    Raises :class:`InvalidTargetError` when there is no key, the key is not a GUID, or the connection string is
    malformed or asks for an authorization other than the instrumentation key or Microsoft Entra ID (``AAD``).
    """
    try:
        target = ingestion.resolve(key, connection_string)
    except ingestion.IngestionSettingsError as exc:
        raise InvalidTargetError(str(exc)) from None
    secrets = tuple(sorted({s for s in (target.instrumentation_key, (key or "").strip()) if s}))
    return IngestionTarget(
        instrumentation_key=target.instrumentation_key,
        endpoint=target.endpoint,
        secrets=secrets,
        entra=target.entra,
    )
