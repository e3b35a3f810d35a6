"""Benchmark workload `echo_small`: parse a ~1 KB JSON request and send it back."""

from __future__ import annotations

import json
from typing import Any


def init() -> None:
    """Nothing to load."""


def run(data: str) -> Any:
    """Decode the body ourselves (as most score scripts do) and return the decoded document."""
    return json.loads(data)
