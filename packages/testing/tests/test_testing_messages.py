"""The request encoding and the response type both clients share."""

from __future__ import annotations

import json

import pytest
from azmlinfsrv_testing import Headers
from azmlinfsrv_testing import Response
from azmlinfsrv_testing.messages import encode_request


def test_headers_are_case_insensitive_and_join_repeats() -> None:
    headers = Headers([("Content-Type", "application/json"), ("TraceId", "a"), ("traceid", "b")])
    assert headers["content-type"] == "application/json"
    assert headers["TRACEID"] == "a, b"
    assert headers.get_all("TraceId") == ["a", "b"]
    assert "CONTENT-TYPE" in headers
    assert "missing" not in headers
    assert len(headers) == 2
    assert list(headers) == ["Content-Type", "TraceId"]
    with pytest.raises(KeyError):
        headers["missing"]


def test_response_text_json_and_repr() -> None:
    response = Response(200, Headers(), json.dumps({"a": [1, 2]}).encode())
    assert response.json() == {"a": [1, 2]}
    assert response.text == '{"a": [1, 2]}'
    assert response.ok
    assert "200" in repr(response) and '"a"' in repr(response)


def test_response_json_error_shows_the_body() -> None:
    response = Response(502, Headers(), b"<html>bad gateway</html>")
    with pytest.raises(ValueError, match="bad gateway"):
        response.json()
    assert not response.ok


def test_encode_request_json_sets_content_type() -> None:
    target, body, headers = encode_request("/score", json={"data": [1]})
    assert target == "/score"
    assert body == b'{"data": [1]}'
    assert headers == {"Content-Type": "application/json"}


def test_encode_request_keeps_a_given_content_type() -> None:
    _, _, headers = encode_request("/score", json=[1], headers={"content-type": "application/vnd+json"})
    assert headers == {"content-type": "application/vnd+json"}


def test_encode_request_data_is_sent_as_is() -> None:
    assert encode_request("/score", data="héllo")[1:] == ("héllo".encode(), {})
    assert encode_request("/score", data=b"\x00\x01")[1] == b"\x00\x01"
    assert encode_request("/score")[1] is None


def test_encode_request_params_form_the_query() -> None:
    target, _, _ = encode_request("/score", params={"a": "1", "b": ["x", "y"]})
    assert target == "/score?a=1&b=x&b=y"
    assert encode_request("/swagger.json?x=1", params=[("version", "3")])[0] == "/swagger.json?x=1&version=3"


def test_encode_request_rejects_json_and_data_together() -> None:
    with pytest.raises(ValueError, match="not both"):
        encode_request("/score", json={}, data="{}")
