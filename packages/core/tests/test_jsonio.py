"""The JSON policy: the parser raises only JSONInputError, the serializer always emits strict JSON."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from azureml_inference_server_http.server import jsonio


def strict_loads(text: str) -> object:
    def reject(constant: str) -> object:
        raise ValueError(constant)

    return json.loads(text, parse_constant=reject)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_loads_raises_only_declared_errors_on_bytes(data: bytes) -> None:
    try:
        jsonio.loads(data)
    except jsonio.JSONInputError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_loads_raises_only_declared_errors_on_text(data: str) -> None:
    try:
        jsonio.loads(data)
    except jsonio.JSONInputError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_dumps_output_is_strict_json(value: object) -> None:
    strict_loads(jsonio.dumps(value))


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_round_trip_of_finite_values(value: object) -> None:
    text = jsonio.dumps(value)
    parsed = jsonio.loads(text)
    assert jsonio.dumps(parsed) == text


def test_duplicate_keys_last_wins() -> None:
    assert jsonio.loads('{"a": 1, "a": 2}') == {"a": 2}


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "-Infinity", "1e999", "[" * 2000 + "]" * 2000])
def test_policy_rejections(text: str) -> None:
    with pytest.raises(jsonio.JSONInputError) as info:
        jsonio.loads(text)
    assert not info.value.malformed


def test_big_integers_within_python_limit_accepted() -> None:
    assert jsonio.loads("1" + "0" * 100) == 10**100
    with pytest.raises(jsonio.JSONInputError):
        jsonio.loads("9" * 5000)


def test_dumps_matches_json_dumps_format() -> None:
    assert jsonio.dumps({"a": [1, 2.5, "x"]}) == '{"a": [1, 2.5, "x"]}'
    assert jsonio.dumps({"a": math.nan}) == '{"a": null}'
