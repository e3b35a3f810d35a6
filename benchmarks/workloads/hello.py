"""Benchmark workload `hello`: the smallest possible run(), so the figure is the server's own overhead."""

from __future__ import annotations


def init() -> None:
    """Nothing to load: the point is to measure the server, not a model."""


def run(data: str) -> dict[str, str]:
    """Answer every request with the same tiny JSON document."""
    return {"message": "Hello, World!"}
