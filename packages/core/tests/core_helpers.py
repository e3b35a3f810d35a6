"""Shared values for core's unit tests (a module of its own: several packages' tests run in one pytest)."""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient

MakeClient = Callable[..., FlaskClient]

ECHO = """
def init():
    pass

def run(data):
    return data
"""
