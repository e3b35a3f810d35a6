"""Fixtures for the testing package's own tests: score scripts written to a directory, strict inner pytest runs.

Test modules load this file with ``pytest_plugins = [..., "testing_fixtures"]`` rather than through a conftest.py:
other packages' tests import names ``from conftest``, and when several packages' tests run in one pytest session
the last conftest.py loaded would shadow theirs. For the same reason pytester is enabled by the modules that use it
(``pytest_plugins`` in a conftest that is not top-level is an error when pytest runs from the repository root).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

WriteFile = Callable[..., Path]

# A score script that reports what it sees: its environment at init() and at run(), and its input.
ECHO_SCRIPT = """
import json
import os

seen = {}


def init():
    seen["model_dir"] = os.environ.get("AZUREML_MODEL_DIR")
    seen["app_root"] = os.environ.get("AML_APP_ROOT")
    seen["flag"] = os.environ.get("H3_FLAG")
    os.environ["H3_SET_BY_INIT"] = "yes"
    print("echo init done")


def run(raw_data):
    return {
        "body": raw_data,
        "seen": seen,
        "flag": os.environ.get("H3_FLAG"),
        "set_by_init": os.environ.get("H3_SET_BY_INIT"),
    }
"""


@pytest.fixture
def echo_source() -> str:
    """The source of a score script that returns what it sees: its input and its environment at init() and run()."""
    return ECHO_SCRIPT


@pytest.fixture
def write_file(tmp_path: Path) -> WriteFile:
    """Write dedented text to ``name`` under ``base`` (default: a temp dir); returns the path."""

    def write(name: str, source: str, base: Path | None = None) -> Path:
        path = (base or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        return path

    return write


@pytest.fixture
def inner_ini(pytester: pytest.Pytester) -> None:
    """The inner runs treat warnings as errors too, so the plugin cannot warn in a user's strict suite."""
    pytester.makeini(
        """
        [pytest]
        filterwarnings = error
        addopts = -p no:cacheprovider
        """
    )
