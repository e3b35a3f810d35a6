"""The server: app factory, routes, input parsing, user-script loader, swagger and the telemetry seam.

Importing this package registers the legacy import names ``azureml.contrib.services.aml_request`` and
``azureml.contrib.services.aml_response`` (compat: upstream 1.5.1 does the same), so old score scripts load.
``create_app`` and ``get_state`` are imported on first use: a launcher that only needs a helper module from
here (and forks workers afterwards) does not carry Flask in its own memory.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING
from typing import Any

from ..api import aml_request
from ..api import aml_response

# compat: upstream registers exactly these two module aliases, not the parent packages.
sys.modules.setdefault("azureml.contrib.services.aml_request", aml_request)
sys.modules.setdefault("azureml.contrib.services.aml_response", aml_response)

if TYPE_CHECKING:
    from .app import create_app
    from .app import get_state

__all__ = ["create_app", "get_state"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
