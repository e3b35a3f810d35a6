"""``rawhttp`` and ``AMLRequest`` for score scripts that want the HTTP request itself.

A ``@rawhttp`` run() is called with Flask's request object for every method (docs/compatibility.md#raw-mode).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import TypeVar

from flask import Request

_F = TypeVar("_F", bound=Callable[..., Any])

# compat: upstream 1.5.1 keeps one process-wide flag, so decorating any function with @rawhttp switches run()
# to raw mode. Scripts rely on decorating a helper that run() delegates to; we record the flag the same way.
_rawhttp_requested = False


def rawhttp(func: _F) -> _F:
    """Mark run() as wanting the raw request. Returns ``func`` unchanged."""
    global _rawhttp_requested
    _rawhttp_requested = True
    return func


def is_rawhttp_requested() -> bool:
    return _rawhttp_requested


def reset_rawhttp_flag() -> None:
    """Forget earlier ``@rawhttp`` uses (when a script is reloaded or another one is loaded in-process)."""
    global _rawhttp_requested
    _rawhttp_requested = False


class AMLRequest(Request):
    """A type for annotations: raw run() receives Flask's request, which is an instance of ``flask.Request``."""

    def __init__(
        self,
    ) -> None:  # compat: upstream's signature; not meant to be instantiated
        super().__init__()  # type: ignore[call-arg]
