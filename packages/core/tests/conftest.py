"""Fixtures for core's unit tests: score scripts written to a temp dir and served in-process."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from core_helpers import MakeClient
from flask import Flask
from flask.testing import FlaskClient

from azureml_inference_server_http.server import create_app
from azureml_inference_server_http.server import print_hook


@pytest.fixture(autouse=True)
def _restore_print() -> Iterator[None]:
    """Every app installs the process-wide print hook; take it away after each test."""
    yield
    print_hook.uninstall()


@pytest.fixture
def write_script(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(source: str, name: str = "score.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        return path

    return write


@pytest.fixture
def make_app(tmp_path: Path, write_script: Callable[[str, str], Path]) -> Iterator[Callable[..., Flask]]:
    """Build an app from script source; environment values given as keyword ``env``."""

    def make(source: str, env: dict[str, str] | None = None, name: str = "score.py") -> Flask:
        path = write_script(source, name)
        environ = {"AML_APP_ROOT": str(tmp_path), "AZUREML_ENTRY_SCRIPT": str(path)}
        environ.update(env or {})
        return create_app(environ=environ)

    yield make
    print_hook.uninstall()


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> MakeClient:
    def make(source: str, env: dict[str, str] | None = None) -> FlaskClient:
        return make_app(source, env).test_client()

    return make
