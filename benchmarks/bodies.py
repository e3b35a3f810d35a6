"""Request bodies and answer checks for the benchmark workloads.

Bodies are deterministic (fixed seeds) and written to files that `post.lua` sends, so every target gets
byte-identical requests and the harness can check one answer against the same bytes.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

NUMERIC_COLUMNS = 16
NUMERIC_TARGET_BYTES = 1_000_000
RAW_BYTES = 100 * 1024
ECHO_TARGET_BYTES = 1024


def _compact(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def hello_body() -> bytes:
    return b"{}"


# The hello workload through the Open Inference Protocol: the model is named after the script (hello.py).
V2_HELLO_PATH = "/v2/models/hello/infer"
V2_HELLO_CHECK = {
    "model_name": "hello",
    "model_version": "1",
    "outputs": [{"name": "message", "datatype": "BYTES", "shape": [1], "data": ["Hello, World!"]}],
}


def hello_v2_body() -> bytes:
    return _compact({"inputs": [{"name": "data", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]})


def echo_small_body() -> bytes:
    rng = random.Random(11)
    document: dict[str, object] = {"id": "bench-echo", "flags": [True, False, None], "items": []}
    items: list[object] = document["items"]  # type: ignore[assignment]
    # Grow a realistic mix of strings, ints and floats until the document is about 1 KB.
    while len(_compact(document)) < ECHO_TARGET_BYTES - 60:
        items.append({"name": f"item-{len(items)}", "count": rng.randint(0, 1000), "score": round(rng.random(), 4)})
    return _compact(document)


def numeric_rows() -> list[list[float]]:
    rng = random.Random(1234)
    # Six decimals keep each float at ~8 characters, so the row count that gives ~1 MB is predictable.
    row_bytes = len(_compact([[0.123456] * NUMERIC_COLUMNS])) - 2
    count = NUMERIC_TARGET_BYTES // (row_bytes + 1)
    return [[round(rng.random(), 6) for _ in range(NUMERIC_COLUMNS)] for _ in range(count)]


def numeric_body() -> bytes:
    return _compact({"data": numeric_rows()})


def raw_body() -> bytes:
    return random.Random(7).randbytes(RAW_BYTES)


def sleep_body() -> bytes:
    return b'{"x":1}'


def _json_or_none(payload: bytes) -> object:
    try:
        return json.loads(payload)
    except ValueError:
        return None


def _check_json_equal(expected: object) -> Callable[[bytes, bytes, str], str | None]:
    def check(request: bytes, response: bytes, content_type: str) -> str | None:
        got = _json_or_none(response)
        if got != expected:
            return f"expected {json.dumps(expected)[:80]}, got {response[:80]!r}"
        return None

    return check


def _check_echo(request: bytes, response: bytes, content_type: str) -> str | None:
    if _json_or_none(response) != json.loads(request):
        return f"echo differs: {response[:80]!r}"
    return None


def _check_sums(request: bytes, response: bytes, content_type: str) -> str | None:
    rows = json.loads(request)["data"]
    expected = [math.fsum(column) for column in zip(*rows, strict=True)]
    got = _json_or_none(response)
    if not isinstance(got, list) or len(got) != len(expected):
        return f"expected {len(expected)} sums, got {response[:80]!r}"
    # Summation order differs between Python and numpy: compare with a tolerance.
    if not all(
        isinstance(g, float | int) and math.isclose(g, e, rel_tol=1e-9) for g, e in zip(got, expected, strict=True)
    ):
        return f"sums differ: {response[:80]!r}"
    return None


def _check_raw(request: bytes, response: bytes, content_type: str) -> str | None:
    if response != request:
        return f"body differs ({len(response)} bytes back for {len(request)} sent)"
    if not content_type.startswith("application/octet-stream"):
        return f"content type is {content_type!r}, not application/octet-stream"
    return None


@dataclass(frozen=True)
class Workload:
    """A score script, the body it is sent, and how to tell its answer is right."""

    name: str
    content_type: str
    body: Callable[[], bytes]
    check: Callable[[bytes, bytes, str], str | None]

    def script(self, root: Path) -> Path:
        return root / "workloads" / f"{self.name}.py"


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("hello", "application/json", hello_body, _check_json_equal({"message": "Hello, World!"})),
        Workload("echo_small", "application/json", echo_small_body, _check_echo),
        Workload("numeric_1mb", "application/json", numeric_body, _check_sums),
        Workload("schema_1mb", "application/json", numeric_body, _check_sums),
        Workload("rawhttp_bytes", "application/octet-stream", raw_body, _check_raw),
        Workload("sleep_io", "application/json", sleep_body, _check_json_equal({"slept_ms": 20})),
    )
}


def write_bodies(directory: Path) -> dict[str, Path]:
    """Write each workload's body once; the files are what wrk sends."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, body in [*((w.name, w.body) for w in WORKLOADS.values()), ("hello_v2", hello_v2_body)]:
        path = directory / f"{name}.body"
        data = body()
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        paths[name] = path
    return paths
