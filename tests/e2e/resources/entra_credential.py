"""A Microsoft Entra ID credential for the telemetry tests: a fixed token for the Azure Monitor scope, no network.

Named by ``AZMLINFSRV_APPINSIGHTS_CREDENTIAL=entra_credential:FakeCredential``; importable because the app root (this
folder) is on the server's ``sys.path``.
"""

from __future__ import annotations

import time
from typing import Any
from typing import NamedTuple

TOKEN = "e2e-entra-token"
SCOPE = "https://monitor.azure.com//.default"


class AccessToken(NamedTuple):
    token: str
    expires_on: int


class FakeCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if scopes != (SCOPE,):
            raise ValueError(f"unexpected scopes {scopes!r}")
        return AccessToken(TOKEN, int(time.time()) + 3600)
