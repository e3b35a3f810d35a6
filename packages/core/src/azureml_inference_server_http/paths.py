"""Plain-language checks of the two paths a start needs: the entry script and the model directory.

The launcher runs them before its banner and the worker logs the model-directory one at boot, so both speak of
a wrong path in the same words. Standard library only: the launcher imports this without Flask.
"""

from __future__ import annotations

import os
import stat

from . import constants as c


def entry_script_error(path: str) -> OSError | None:
    """The error that reading the entry script would raise, or None when it is a readable file.

    Only regular files are opened (to see a permission error as the loader would): opening a FIFO would block.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return exc
    if stat.S_ISDIR(mode):
        return IsADirectoryError(21, "Is a directory", path)
    if not stat.S_ISREG(mode):
        return None  # a device or a pipe: left to the loader
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return exc
    return None


def describe_entry_script_error(path: str, error: OSError) -> str:
    """One line naming the path and what is wrong with it."""
    if isinstance(error, FileNotFoundError):
        return f"Entry script not found: {path}"
    if isinstance(error, IsADirectoryError):
        return f"Entry script is a directory, not a Python file: {path}"
    if isinstance(error, PermissionError):
        return f"Entry script is not readable (permission denied): {path}"
    return f"Entry script cannot be read: {path} ({error.strerror or error})"


def model_dir_problem(model_dir: str | None) -> str | None:
    """What is wrong with the model directory, in one line naming it; None when it is a readable directory."""
    if not model_dir:
        return f"{c.ENV_MODEL_DIR} is not set: the score script has no model directory"
    shown = os.path.abspath(model_dir)
    if shown != model_dir:
        shown += f" ({c.ENV_MODEL_DIR}={model_dir})"
    if not os.path.exists(model_dir):
        return f"Model directory does not exist: {shown}"
    if not os.path.isdir(model_dir):
        return f"Model directory is not a directory: {shown}"
    if not os.access(model_dir, os.R_OK | os.X_OK):
        return f"Model directory is not readable (permission denied): {shown}"
    return None
