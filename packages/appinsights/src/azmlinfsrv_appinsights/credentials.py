"""Microsoft Entra ID for ingestion: choosing the credential, and keeping its token fresh.

An Application Insights resource with local authentication disabled accepts only batches that carry
``Authorization: Bearer <token>`` for the scope ``https://monitor.azure.com//.default``. The connection string asks for
that with ``Authorization=AAD``; ``AZMLINFSRV_APPINSIGHTS_CREDENTIAL`` chooses who signs:

* ``default`` (or unset): azure-identity's ``DefaultAzureCredential`` (environment, workload identity, managed
  identity, ...; a user-assigned managed identity through ``AZURE_CLIENT_ID``);
* ``managed_identity``: ``ManagedIdentityCredential``, user-assigned when ``AZURE_CLIENT_ID`` is set;
* ``package.module:name``: your own credential, ``name()`` returning an object with azure-core's
  ``get_token(*scopes)``.

azure-identity is the optional extra ``azureml-inference-server-http-appinsights[entra]``; it is imported only here
and only when a built-in credential is chosen.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import NamedTuple
from typing import Protocol

__all__ = [
    "CREDENTIAL_DEFAULT",
    "CREDENTIAL_MANAGED_IDENTITY",
    "INSTALL_HINT",
    "MONITOR_SCOPE",
    "CredentialUnavailable",
    "RefreshingToken",
    "TokenCredential",
    "TokenUnavailable",
    "make_credential",
]

logger = logging.getLogger("azmlinfsrv.trace")

MONITOR_SCOPE = "https://monitor.azure.com//.default"
CREDENTIAL_DEFAULT = "default"
CREDENTIAL_MANAGED_IDENTITY = "managed_identity"
CLIENT_ID_ENV = "AZURE_CLIENT_ID"
INSTALL_HINT = "pip install 'azureml-inference-server-http-appinsights[entra]'"
# A token is renewed this long before it expires, so a batch never goes out with one that lapses in flight.
REFRESH_MARGIN_SECONDS = 300.0


class AccessToken(NamedTuple):
    """azure-core's ``AccessToken`` shape: the token and its expiry in epoch seconds."""

    token: str
    expires_on: int


class TokenCredential(Protocol):
    """azure-core's ``TokenCredential``: all the transport needs."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...


class CredentialUnavailable(Exception):
    """No credential can be built; the message says what to install or set."""


class TokenUnavailable(Exception):
    """The credential could not produce a token for this batch (the batch is retried)."""


def make_credential(choice: str | None, environ: Mapping[str, str] | None = None) -> TokenCredential:
    """The credential named by ``AZMLINFSRV_APPINSIGHTS_CREDENTIAL`` (see the module docstring)."""
    env = os.environ if environ is None else environ
    name = (choice or CREDENTIAL_DEFAULT).strip()
    if ":" in name:
        return _import_credential(name)
    lowered = name.lower()
    if lowered not in (CREDENTIAL_DEFAULT, CREDENTIAL_MANAGED_IDENTITY):
        raise CredentialUnavailable(
            f"AZMLINFSRV_APPINSIGHTS_CREDENTIAL must be '{CREDENTIAL_DEFAULT}', '{CREDENTIAL_MANAGED_IDENTITY}' or "
            f"'package.module:name', not {name[:60]!r}"
        )
    try:
        identity = importlib.import_module("azure.identity")
    except ImportError:
        raise CredentialUnavailable(
            "Microsoft Entra ID authentication (Authorization=AAD in the connection string) needs azure-identity, "
            f"which is not installed. Install it with: {INSTALL_HINT}"
        ) from None
    if lowered == CREDENTIAL_MANAGED_IDENTITY:
        client_id = env.get(CLIENT_ID_ENV) or None
        return identity.ManagedIdentityCredential(client_id=client_id)  # type: ignore[no-any-return]
    return identity.DefaultAzureCredential()  # type: ignore[no-any-return]


def _import_credential(path: str) -> TokenCredential:
    module_name, _, attribute = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name.strip()), attribute.strip())
        credential = factory()
    except Exception as exc:
        raise CredentialUnavailable(
            f"the credential {path[:120]!r} (AZMLINFSRV_APPINSIGHTS_CREDENTIAL) could not be created: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not callable(getattr(credential, "get_token", None)):
        raise CredentialUnavailable(
            f"the credential {path[:120]!r} (AZMLINFSRV_APPINSIGHTS_CREDENTIAL) has no get_token(*scopes) method"
        )
    return credential  # type: ignore[no-any-return]


class RefreshingToken:
    """Wraps a credential for the transport: one token, reused until shortly before it expires, then renewed.

    azure-identity's credentials cache too, but a custom one need not; and renewing early means a renewal that fails
    (an instance-metadata hiccup) still leaves a valid token to send with while it is retried on the next batch.
    """

    def __init__(
        self,
        credential: TokenCredential,
        *,
        margin: float = REFRESH_MARGIN_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._margin = margin
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_on = 0.0
        self.renewals = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with self._lock:
            now = self._clock()
            if self._token is not None and self._expires_on - now > self._margin:
                return AccessToken(self._token, int(self._expires_on))
            try:
                fresh = self._credential.get_token(*(scopes or (MONITOR_SCOPE,)))
                token, expires_on = str(fresh.token), float(fresh.expires_on)
            except Exception as exc:
                if self._token is not None and self._expires_on > now:
                    logger.debug("Renewing the Entra ID token failed; using the current one until it expires")
                    return AccessToken(self._token, int(self._expires_on))
                raise TokenUnavailable(
                    f"could not get a Microsoft Entra ID token: {type(exc).__name__}: {_first_line(exc)}"
                ) from None
            self._token, self._expires_on = token, expires_on
            self.renewals += 1
            return AccessToken(token, int(expires_on))


def _first_line(exc: BaseException) -> str:
    # azure-identity's messages run to many lines of troubleshooting links; the drop report needs the first.
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
