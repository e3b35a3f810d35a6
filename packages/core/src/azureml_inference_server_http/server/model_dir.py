"""The model directory: model ids for telemetry and the listing logged when init() fails.

See docs/compatibility.md#model-ids and docs/compatibility.md#startup-failures.
"""

from __future__ import annotations

import logging
import os

from ..paths import model_dir_problem

logger = logging.getLogger("azmlinfsrv")
trace_logger = logging.getLogger("azmlinfsrv.trace")

MAX_LISTING_LINES = 200


def model_ids(model_dir: str) -> list[str]:
    """``name:version`` ids from ``<dir>/<name>/<version>`` layouts; [] for a plain model folder.

    Upstream logs an ERROR traceback at every boot for a folder that is not in that layout (a folder holding
    model.pkl); that is the common local case, so we return [] quietly instead.
    """
    problem = model_dir_problem(model_dir)
    if problem is not None:
        # Upstream logs "Model directory is not set or does not exist: " with the value, empty when unset;
        # we say which of the two it is, and name the path.
        trace_logger.warning("%s", problem)
        return []
    directory = os.path.normpath(model_dir)
    base = os.path.basename(directory)
    if base.isdigit():
        return [f"{os.path.basename(os.path.dirname(directory))}:{base}"]
    ids: list[str] = []
    try:
        for name in sorted(os.listdir(directory)):
            model_path = os.path.join(directory, name)
            if not os.path.isdir(model_path):
                return []
            for version in sorted(os.listdir(model_path)):
                if not version.isdigit():
                    return []
                ids.append(f"{name}:{int(version)}")
    except OSError:
        return []
    return ids


def listing(model_dir: str) -> list[str]:
    """The directory tree: sorted, directories with a trailing separator, 4 spaces per level, 200 lines at most."""
    root = os.path.normpath(model_dir)
    lines = [os.path.basename(root) + os.sep]

    def walk(path: str, depth: int) -> bool:
        try:
            entries = sorted(os.listdir(path))
        except OSError:
            return True
        for entry in entries:
            if len(lines) >= MAX_LISTING_LINES:
                return False
            full = os.path.join(path, entry)
            if os.path.isdir(full):
                lines.append("    " * depth + entry + os.sep)
                if not walk(full, depth + 1):
                    return False
            else:
                lines.append("    " * depth + entry)
        return True

    complete = walk(root, 1)
    if not complete:
        lines = lines[:MAX_LISTING_LINES]
        lines.append(f"Output Truncated. First {MAX_LISTING_LINES} lines shown.")
    return lines


def log_listing(model_dir: str) -> None:
    if model_dir and os.path.isdir(model_dir):
        logger.info("Model Directory Contents:")
        for line in listing(model_dir):
            logger.info("%s", line)
