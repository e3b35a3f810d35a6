"""The server state's handling of the heap once a score script is loaded (state.py ``_freeze_heap``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from core_helpers import ECHO
from flask import Flask

from azureml_inference_server_http.server import get_state


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_loaded_script_is_frozen_out_of_the_collector(make_app: Callable[..., Flask]) -> None:
    """Once init() has run, what is alive (modules, app, model) leaves the cyclic collector's full passes, which
    otherwise walk all of it and stall every request meanwhile."""
    assert gc.get_freeze_count() == 0
    make_app(ECHO)
    assert gc.get_freeze_count() > 1000


def test_reload_lets_the_replaced_model_be_collected(
    make_app: Callable[..., Flask], write_script: Callable[[str, str], Path]
) -> None:
    """A model in reference cycles, frozen with the first load, is collected once a reload replaced it."""
    source = """
    class Model:
        pass
    model = None
    def init():
        global model
        model = Model()
        model.me = model  # a reference cycle: only the collector frees it
    def run(data):
        return data
    """
    app = make_app(source)
    state = get_state(app)
    assert state.script is not None
    ref = weakref.ref(state.script.module.model)
    write_script(source.replace("pass", "version = 2"))
    assert state.reload()
    gc.collect()
    assert ref() is None
    assert gc.get_freeze_count() > 1000  # the new version is frozen in turn


def test_a_failed_reload_leaves_the_heap_frozen(
    make_app: Callable[..., Flask], write_script: Callable[[str, str], Path]
) -> None:
    state = get_state(make_app(ECHO))
    write_script("def init():\n    raise RuntimeError('broken edit')\ndef run(data):\n    return data\n")
    assert not state.reload()
    assert gc.get_freeze_count() > 1000
