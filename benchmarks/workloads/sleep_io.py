"""Benchmark workload `sleep_io`: a 20 ms model call that releases the GIL (like a remote or native call)."""

from __future__ import annotations

import time

SLEEP_SECONDS = 0.02


def init() -> None:
    """Nothing to load."""


def run(data: str) -> dict[str, int]:
    """Sleep, then answer: throughput is bounded by how many requests the server runs at once."""
    time.sleep(SLEEP_SECONDS)
    return {"slept_ms": int(SLEEP_SECONDS * 1000)}
