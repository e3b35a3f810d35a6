"""Keeping the instrumentation key out of text: exported fields and the exporter library's log records.

docs/guarantees.md#r16 allows the key in exactly one place, the ``iKey`` routing field of each envelope, which the
ingestion service needs. Anything else that might carry it (a user's print of the environment, a library error that
repeats an envelope) goes through a :class:`Redactor` first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["REDACTED", "Redactor"]

REDACTED = "<redacted>"
# Secrets shorter than this would match ordinary text; instrumentation keys are 36 characters.
_MIN_SECRET_LENGTH = 8


class Redactor:
    """Replaces every occurrence of the given secrets, case-insensitively."""

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in unique), re.IGNORECASE) if unique else None

    def text(self, value: str) -> str:
        if self._pattern is None:
            return value
        return self._pattern.sub(REDACTED, value)

    def deep(self, value: Any) -> Any:
        """``value`` (dicts, lists, strings) with secrets replaced in keys and values; a copy only if needed."""
        if self._pattern is None:
            return value
        # Fast path: one C-speed encode and search instead of a Python walk; almost nothing contains the key.
        if not self._pattern.search(json.dumps(value, default=str, ensure_ascii=False)):
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self._walk(k): self._walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._walk(v) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        # What json.dumps(default=str) will send for anything else, so the search above and this walk agree.
        return self.text(str(value))
