"""The fake Application Insights ingestion endpoint behaves like the service, and its outage modes work."""

from __future__ import annotations

import gzip
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from azmlinfsrv_testing.collector import FakeIngestion
from azmlinfsrv_testing.collector import envelope_kind
from azmlinfsrv_testing.collector import envelope_properties
from azmlinfsrv_testing.timing import time_limit


def envelope(kind: str = "MessageData", **properties: str) -> dict[str, Any]:
    return {
        "name": "Microsoft.ApplicationInsights.Message",
        "iKey": "k",
        "data": {"baseType": kind, "baseData": {"message": "m", "properties": properties}},
    }


def post(
    url: str, body: bytes, path: str = "/v2.1/track", headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url + path, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_fake_ingestion_accepts_a_json_array_and_answers_like_the_service() -> None:
    with FakeIngestion() as ingestion:
        status, answer = post(ingestion.url, json.dumps([envelope(a="1"), envelope(a="2")]).encode())
        assert status == 200
        assert answer == {"itemsReceived": 2, "itemsAccepted": 2, "errors": []}
        assert [envelope_properties(e)["a"] for e in ingestion.envelopes] == ["1", "2"]
        assert ingestion.posts == 1


def test_fake_ingestion_accepts_gzip_ndjson_single_objects_and_v2() -> None:
    with FakeIngestion() as ingestion:
        ndjson = "\n".join(json.dumps(envelope(n=str(i))) for i in range(3)).encode()
        assert post(ingestion.url, gzip.compress(ndjson), headers={"Content-Encoding": "gzip"})[0] == 200
        assert post(ingestion.url, json.dumps(envelope(n="single")).encode(), path="/v2/track")[0] == 200
        assert [envelope_properties(e)["n"] for e in ingestion.envelopes] == ["0", "1", "2", "single"]


def test_fake_ingestion_rejects_bad_payloads_and_unknown_paths() -> None:
    with FakeIngestion() as ingestion:
        status, answer = post(ingestion.url, b"{not json")
        assert status == 400 and answer["itemsAccepted"] == 0
        assert post(ingestion.url, b"[]", path="/elsewhere")[0] == 404
        status, answer = post(ingestion.url, json.dumps([envelope(), 3]).encode())
        assert status == 206 and answer["itemsAccepted"] == 1 and answer["errors"][0]["index"] == 1
        assert len(ingestion.envelopes) == 1


def test_fake_ingestion_connection_string_names_key_and_endpoint() -> None:
    with FakeIngestion(instrumentation_key="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0") as ingestion:
        assert ingestion.url.startswith("http://127.0.0.1:")
        assert ingestion.connection_string == (
            f"InstrumentationKey=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0;IngestionEndpoint={ingestion.url}/"
        )


def test_fake_ingestion_wait_for_returns_matches_and_times_out_with_a_summary() -> None:
    with FakeIngestion() as ingestion:
        post(ingestion.url, json.dumps([envelope(id="x"), envelope("RequestData", id="y")]).encode())
        [match] = ingestion.wait_for(lambda e: envelope_kind(e) == "request", timeout=5)
        assert envelope_properties(match)["id"] == "y"
        # A predicate that indexes missing keys is "no match", not an error.
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="received 2 envelopes"):
            ingestion.wait_for(lambda e: e["missing"]["key"] == 1, timeout=0.2)
        assert time.monotonic() - started < time_limit(0.2, 0.0, budget=1.8)


def test_fake_ingestion_error_mode_answers_500_and_records_nothing() -> None:
    with FakeIngestion(mode="error") as ingestion:
        assert post(ingestion.url, json.dumps([envelope()]).encode())[0] == 500
        assert ingestion.envelopes == [] and ingestion.posts == 1


def test_fake_ingestion_partial_mode_rejects_every_item() -> None:
    with FakeIngestion(mode="partial") as ingestion:
        status, answer = post(ingestion.url, json.dumps([envelope(), envelope()]).encode())
        assert status == 206
        assert answer["itemsAccepted"] == 0 and [e["index"] for e in answer["errors"]] == [0, 1]
        assert ingestion.envelopes == []


def test_fake_ingestion_hang_mode_never_answers_until_released() -> None:
    with FakeIngestion(mode="hang") as ingestion:
        with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
            post(ingestion.url, json.dumps([envelope()]).encode(), timeout=0.3)
        assert ingestion.hanging == 1
        ingestion.set_mode("ok")  # releases the held request
        deadline = time.monotonic() + 5
        while ingestion.hanging and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ingestion.hanging == 0
        assert post(ingestion.url, json.dumps([envelope()]).encode())[0] == 200


def test_fake_ingestion_refuse_mode_closes_the_port_and_can_reopen_it() -> None:
    with FakeIngestion(mode="refuse") as ingestion:
        url = ingestion.url
        with pytest.raises(urllib.error.URLError):
            post(url, b"[]")
        ingestion.set_mode("ok")
        assert post(url, json.dumps([envelope()]).encode())[0] == 200
        ingestion.set_mode("refuse")
        with pytest.raises(urllib.error.URLError):
            post(url, b"[]")


def test_fake_ingestion_rejects_unknown_modes() -> None:
    with pytest.raises(ValueError):
        FakeIngestion(mode="sideways")


def test_fake_ingestion_records_request_headers_in_every_mode() -> None:
    with FakeIngestion() as ingestion:
        post(ingestion.url, b"[]", headers={"Authorization": "Bearer token-1"})
        ingestion.set_mode("error")
        post(ingestion.url, b"[]", headers={"authorization": "Bearer token-2"})
        post(ingestion.url, b"[]")
        assert ingestion.authorizations() == ["Bearer token-1", "Bearer token-2", None]
        assert ingestion.request_headers[0]["Authorization"] == "Bearer token-1"
        ingestion.clear()
        assert ingestion.request_headers == []
