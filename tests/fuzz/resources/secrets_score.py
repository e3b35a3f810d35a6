"""A score script for the secrets sweep: it succeeds, fails on request, logs at every level, and reports whether the
instrumentation key variable reached user code (it never returns or prints the value)."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("secrets_score")


def init() -> None:
    logger.debug("secrets score script initialised")
    print("secrets score script ready")


def run(raw_data: str) -> dict[str, object]:
    logger.info("run() called with %d characters", len(raw_data))
    if "raise" in raw_data:
        raise ValueError("failure requested by the secrets sweep")
    return {"key_variable_visible": "AML_APP_INSIGHTS_KEY" in os.environ}
