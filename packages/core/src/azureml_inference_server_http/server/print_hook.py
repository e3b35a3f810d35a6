"""Redirecting ``print()`` to the ``azmlinfsrv.print`` logger (docs/compatibility.md#print-redirection).

Score scripts print; in a container stdout is the log, so each print becomes one formatted INFO record (and
reaches telemetry as a trace). Prints to any other file go to the real print unchanged.
"""

from __future__ import annotations

import builtins
import logging
import sys
from typing import Any

print_logger = logging.getLogger("azmlinfsrv.print")
_original_print = builtins.print


def _print_to_logger(
    *objects: Any,
    sep: str | None = " ",
    end: str | None = "\n",
    file: Any = None,
    flush: bool = False,
) -> None:
    if file is None or file is sys.stdout:
        # compat: upstream drops `end` and `flush`; one print is one record.
        print_logger.info((" " if sep is None else sep).join(map(str, objects)))
    else:
        _original_print(*objects, sep=sep, end=end, file=file, flush=flush)


def install() -> None:
    """Replace ``builtins.print`` for the whole process. Idempotent."""
    if builtins.print is not _print_to_logger:
        # compat: upstream prints this line with the real print just before installing the hook.
        _original_print("Initializing logger", flush=True)
        builtins.print = _print_to_logger


def uninstall() -> None:
    builtins.print = _original_print


def real_print(*objects: Any, **kwargs: Any) -> None:
    """Print to the real stdout, bypassing the hook (for the banner and debugger messages)."""
    _original_print(*objects, **kwargs)
