"""Benchmark workload `numeric_1mb`: column sums of a ~1 MB `{"data": [[16 floats], ...]}` in pure Python."""

from __future__ import annotations

import json


def init() -> None:
    """Nothing to load."""


def run(data: str) -> list[float]:
    """Sum each of the 16 columns; pure Python so the cost is JSON handling plus interpreter work."""
    rows = json.loads(data)["data"]
    return [sum(column) for column in zip(*rows, strict=True)]
