"""The server: app factory, routes, input parsing, user-script loader, swagger and the telemetry seam.

Importing this package registers the legacy import names ``azureml.contrib.services.aml_request`` and
``azureml.contrib.services.aml_response`` (compat: upstream 1.5.1 does the same), so old score scripts load.
"""

from __future__ import annotations

import sys

from ..api import aml_request
from ..api import aml_response

# compat: upstream registers exactly these two module aliases, not the parent packages.
sys.modules.setdefault("azureml.contrib.services.aml_request", aml_request)
sys.modules.setdefault("azureml.contrib.services.aml_response", aml_response)

from .app import create_app  # noqa: E402 - the aliases must exist before the app modules load scripts
from .app import get_state  # noqa: E402

__all__ = ["create_app", "get_state"]
