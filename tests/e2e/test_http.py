"""HTTP/1.1 on the wire, in every worker model: keep-alive, pipelining, 100-continue, chunked bodies, bad heads."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from pathlib import Path

import pytest
import requests
from conftest import Launcher
from conftest import Server
from conftest import allowance
from conftest import latency

pytestmark = pytest.mark.e2e


def _connect(server: Server) -> socket.socket:
    port = int(server.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One response from ``sock``; bytes after it stay in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a complete head: {bytes(buffer)!r}")
        buffer += chunk
    head, _, _ = bytes(buffer).partition(b"\r\n\r\n")
    del buffer[: len(head) + 4]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if status < 200:
        return status, headers, b""
    if headers.get("transfer-encoding") == "chunked":
        body = bytearray()
        while True:
            while b"\r\n" not in buffer:
                buffer += sock.recv(65536)
            size_line, _, _ = bytes(buffer).partition(b"\r\n")
            size = int(size_line, 16)
            while len(buffer) < len(size_line) + 2 + size + 2:
                buffer += sock.recv(65536)
            body += buffer[len(size_line) + 2 : len(size_line) + 2 + size]
            del buffer[: len(size_line) + 2 + size + 2]
            if size == 0:
                return status, headers, bytes(body)
    length = int(headers.get("content-length", "0"))
    while len(buffer) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    body = bytes(buffer[:length])
    del buffer[:length]
    return status, headers, body


def _post(body: bytes, extra: str = "") -> bytes:
    return (
        f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}\r\n"
    ).encode("latin-1") + body


def test_keep_alive_and_pipelined_requests_answer_in_order(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "sleep_score.py", model=server_model)
    with _connect(server) as sock:
        buffer = bytearray()
        sock.sendall(_post(b"0"))
        status, headers, body = _read_response(sock, buffer)
        assert status == 200 and json.loads(body) == {"slept": 0.0, "pid": json.loads(body)["pid"]}
        assert headers.get("connection", "keep-alive").lower() != "close"
        # Three requests in one packet: three responses, in order, on the same connection.
        sock.sendall(_post(b"0.01") + _post(b"0.02") + _post(b"0.03"))
        slept = [json.loads(_read_response(sock, buffer)[2])["slept"] for _ in range(3)]
        assert slept == [0.01, 0.02, 0.03]


def test_expect_100_continue(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "sleep_score.py", model=server_model)
    with _connect(server) as sock:
        buffer = bytearray()
        sock.sendall(_post(b"", "Expect: 100-continue\r\n").replace(b"Content-Length: 0", b"Content-Length: 1"))
        status, _, _ = _read_response(sock, buffer)
        assert status == 100
        sock.sendall(b"0")
        status, _, body = _read_response(sock, buffer)
        assert status == 200, body


def test_chunked_request_body(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "sleep_score.py", model=server_model)
    with _connect(server) as sock:
        buffer = bytearray()
        sock.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for piece in (b"1\r\n0\r\n", b"2\r\n.0\r\n", b"0\r\n\r\n"):
            time.sleep(0.05)
            sock.sendall(piece)
        status, _, body = _read_response(sock, buffer)
        assert status == 200, body
        assert json.loads(body)["slept"] == 0.0


def test_http10_closes_after_the_response(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "sleep_score.py", model=server_model)
    with _connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        buffer = bytearray()
        status, _, body = _read_response(sock, buffer)
        assert (status, body) == (200, b"Healthy")
        assert sock.recv(10) == b""  # closed


@pytest.mark.parametrize(
    "head",
    [
        b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n0",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
    ],
)
def test_malformed_heads_get_400_and_a_closed_connection(launch: Launcher, server_model: str, head: bytes) -> None:
    server = launch("--entry_script", "sleep_score.py", model=server_model)
    with _connect(server) as sock:
        sock.sendall(head)
        buffer = bytearray()
        status, _, _ = _read_response(sock, buffer)
        assert status == 400
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                break
        else:
            pytest.fail("the connection stayed open after a 400")


def test_access_log_on_request(launch: Launcher) -> None:
    """AZMLINFSRV_ACCESS_LOG=true adds gunicorn's access line (off by default: the app logs each request)."""
    server = launch("--entry_script", "sleep_score.py", env={"AZMLINFSRV_ACCESS_LOG": "true"})
    with _connect(server) as sock:
        sock.sendall(_post(b"0", "User-Agent: access-log-probe\r\n"))
        assert _read_response(sock, bytearray())[0] == 200
    deadline = time.monotonic() + 5
    while "access-log-probe" not in server.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(line for line in server.logs().splitlines() if "access-log-probe" in line)
    assert '"POST /score HTTP/1.1" 200' in line


def test_no_access_log_by_default(launch: Launcher) -> None:
    server = launch("--entry_script", "sleep_score.py")
    with _connect(server) as sock:
        sock.sendall(_post(b"0", "User-Agent: access-log-probe\r\n"))
        assert _read_response(sock, bytearray())[0] == 200
    time.sleep(0.3)
    assert "access-log-probe" not in server.logs()
    assert "POST /score 200" in server.logs()  # the app's own line


def test_a_request_head_not_finished_in_10_s_gets_408(launch: Launcher) -> None:
    """gunicorn's event loop gives a request head 10 s from its first byte (a slowloris connection is cut)."""
    server = launch("--entry_script", "sleep_score.py")
    baseline = latency(lambda: requests.post(server.url + "/score", data="0", timeout=30))
    head_timeout, socket_timeout = 10.0, 20.0
    with _connect(server) as sock:
        sock.settimeout(socket_timeout)
        started = time.monotonic()
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\n")
        status, _, body = _read_response(sock, bytearray())
        elapsed = time.monotonic() - started
        assert status == 408, body
        # Not before the limit; after it, within this machine's slack but well before the client's own timeout.
        slack = min(allowance(baseline, budget=3.0), (socket_timeout - head_timeout) / 2)
        assert head_timeout - 0.5 < elapsed < head_timeout + slack, (elapsed, baseline)
        assert sock.recv(10) == b""  # then closed


def _upload(
    server: Server, body: bytes, sleep: float = 0.0, *, started: Path | None = None, wait_for: Path | None = None
) -> dict[str, object]:
    with _connect(server) as sock:
        sock.settimeout(60)
        extra = f"X-Sleep: {sleep}\r\n" if sleep else ""
        extra += f"X-Started: {started}\r\n" if started else ""
        extra += f"X-Wait-For: {wait_for}\r\n" if wait_for else ""
        sock.sendall(_post(body, extra))
        status, _, answer = _read_response(sock, bytearray())
        assert status == 200, answer
        result: dict[str, object] = json.loads(answer)
        return result


def test_concurrent_large_uploads_are_all_answered(launch: Launcher, server_model: str) -> None:
    server = launch("--entry_script", "body_score.py", model=server_model)
    size = 1024 * 1024
    bodies = [bytes([65 + i]) * size for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda body: _upload(server, body, 0.05), bodies))
    assert results == [{"length": size, "first": chr(65 + i)} for i in range(8)]


def test_large_bodies_beyond_the_budget_wait_unread(launch: Launcher, tmp_path: Path) -> None:
    # One run() slot, busy; further 1 MB uploads announce themselves with Expect: 100-continue, so whether the
    # worker reads a body shows in whether it says 100 Continue. Those within the budget are read ahead; the rest
    # wait unread, in order, and are read as the ones ahead of them start running. Nothing is lost.
    from azmlinfsrv.servers.loop_worker import BODY_BUFFER_BUDGET

    server = launch("--entry_script", "body_score.py")
    size = 1024 * 1024
    read_ahead = max(1, BODY_BUFFER_BUDGET // size)
    # A's run() says when it holds the slot, and holds it until the test releases it, however slow the machine.
    started, release = tmp_path / "A-started", tmp_path / "A-release"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(_upload, server, b"A" * size, started=started, wait_for=release)
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline and not busy.done(), "run() of A did not start"
            time.sleep(0.01)
        socks = [_connect(server) for _ in range(read_ahead + 2)]
        try:
            for sock in socks:
                sock.sendall(
                    _post(b"", "Expect: 100-continue\r\n").replace(b"Content-Length: 0", b"Content-Length: %d" % size)
                )
            continued = []
            for index, sock in enumerate(socks):
                # Those within the budget must be told to send, however slow the machine; for the others, silence
                # while A runs is what must hold (only A's end frees budget for them, so a wait cannot mislead).
                sock.settimeout(30 if index < read_ahead else 0.5)
                try:
                    continued.append(sock.recv(64).startswith(b"HTTP/1.1 100 Continue"))
                except TimeoutError:
                    continued.append(False)
            assert continued == [True] * read_ahead + [False, False]
            for sock in socks[:read_ahead]:
                sock.sendall(b"B" * size)
            release.touch()
            assert busy.result(timeout=60) == {"length": size, "first": "A"}
            for sock in socks[read_ahead:]:
                sock.settimeout(30)
                status, _, _ = _read_response(sock, bytearray())  # its turn came: 100 Continue
                assert status == 100
                sock.sendall(b"C" * size)
            for index, sock in enumerate(socks):
                sock.settimeout(30)
                status, _, answer = _read_response(sock, bytearray())
                assert status == 200, answer
                assert json.loads(answer) == {"length": size, "first": "B" if index < read_ahead else "C"}
        finally:
            for sock in socks:
                sock.close()
