"""Request-smuggling probes (docs/guarantees.md#r13): raw bytes on one connection, and what came back.

Every probe is built so that, under one plausible reading of its framing, a second request (the *canary*) is part of
the first request's body, and under another reading it is a request of its own. A server that answers the canary
separately has split the stream differently from a front end that read it the other way: that second response is
a smuggling failure. The only exception is the control probe, a legitimate pipeline, which must get two responses
(it proves the detector sees second responses at all).

After reading, a connection the server left open gets one more plain request. It must be answered with the health
probe's 200; anything else means leftover bytes of the probe were taken as the start of the next request.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from dataclasses import field

CANARY_PATH = "/fuzz-smuggled-canary"
CANARY = f"GET {CANARY_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("ascii")
END = b"0\r\n\r\n"  # the last chunk of a chunked body
FOLLOW_UP = b"GET /?fuzz-follow-up HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Probe:
    name: str
    raw: bytes
    why: str
    control: bool = False
    # RFC 9112 §6.3 and §9.6: after a request with ambiguous framing the server must close the connection.
    must_close: bool = True


def _post(*headers: str, version: str = "HTTP/1.1", newline: bytes = b"\r\n") -> bytes:
    lines = [f"POST /score {version}", "Host: 127.0.0.1", "Content-Type: application/json", *headers]
    return newline.join(line.encode("latin-1") for line in lines) + newline + newline


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n"


def _te_with_cl(name: str, te_header: str, why: str) -> Probe:
    """A Transfer-Encoding header in some spelling, plus a Content-Length that covers the canary.

    Read as chunked, the body ends at the last chunk and the canary is a second request; read by Content-Length,
    the canary is body.
    """
    body = END + CANARY
    return Probe(name, _post(te_header, f"Content-Length: {len(body)}") + body, why)


def _bad_chunk(name: str, first_line: bytes, why: str) -> Probe:
    """A chunked body whose first chunk line is malformed; a lenient parser may read it as the last chunk."""
    return Probe(name, _post("Transfer-Encoding: chunked") + first_line + CANARY, why)


def probes() -> list[Probe]:
    n = len(CANARY)
    return [
        Probe(
            "pipeline-control",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + CANARY,
            "two well-framed requests: both must be answered",
            control=True,
            must_close=False,
        ),
        _te_with_cl("cl-te", "Transfer-Encoding: chunked", "both headers (RFC 9112 §6.3: reject, or TE then close)"),
        Probe(
            "te-cl",
            _post("Transfer-Encoding: chunked", "Content-Length: 4") + _chunk(CANARY) + END,
            "chunked body holding the canary, short Content-Length",
        ),
        Probe("cl-cl", _post("Content-Length: 0", f"Content-Length: {n}") + CANARY, "two differing Content-Length"),
        Probe("cl-list", _post(f"Content-Length: 0, {n}") + CANARY, "Content-Length list with differing values"),
        Probe("cl-plus", _post(f"Content-Length: +{n}") + CANARY, "signed Content-Length"),
        Probe("cl-space-name", _post(f"Content-Length : {n}") + CANARY, "whitespace before the colon"),
        Probe("cl-overflow", _post("Content-Length: 18446744073709551616") + CANARY, "Content-Length of 2**64"),
        Probe(
            "get-with-body",
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {n}\r\n\r\n".encode("ascii") + CANARY,
            "GET with a body: the body must be read, not taken as a request",
            must_close=False,
        ),
        _te_with_cl("te-space-name", "Transfer-Encoding : chunked", "whitespace before the colon"),
        _te_with_cl("te-xchunked", "Transfer-Encoding: xchunked", "unknown coding (RFC 9112 §6.1: 501)"),
        _te_with_cl("te-chunked-identity", "Transfer-Encoding: chunked, identity", "chunked is not the final coding"),
        _te_with_cl("te-identity-chunked", "Transfer-Encoding: identity, chunked", "obsolete identity coding"),
        _te_with_cl("te-two-headers", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity", "two TE headers"),
        _te_with_cl("te-obs-fold", "Transfer-Encoding:\r\n chunked", "obsolete line folding (RFC 9112 §5.2)"),
        _te_with_cl("te-tab", "Transfer-Encoding:\tchunked", "tab as whitespace"),
        _te_with_cl("te-vtab", "Transfer-Encoding:\x0bchunked", "vertical tab is not whitespace"),
        _te_with_cl("te-upper", "Transfer-Encoding: CHUNKED", "coding names are case-insensitive"),
        _te_with_cl("te-quoted", 'Transfer-Encoding: "chunked"', "quoted coding"),
        Probe(
            "te-underscore",
            _post("Transfer_Encoding: chunked", f"Content-Length: {len(END) + n}") + END + CANARY,
            "underscore instead of hyphen: not a framing header, but WSGI names both HTTP_TRANSFER_ENCODING",
            must_close=False,
        ),
        _te_with_cl("te-cr-inside", "X-Fuzz: a\rTransfer-Encoding: chunked", "bare CR inside a header line"),
        Probe(
            "te-http10",
            _post(
                "Connection: keep-alive",
                "Transfer-Encoding: chunked",
                f"Content-Length: {len(END) + n}",
                version="HTTP/1.0",
            )
            + END
            + CANARY,
            "TE in HTTP/1.0 (RFC 9112 §6.1: faulty framing, close)",
        ),
        Probe(
            "bare-lf",
            _post("Transfer-Encoding: chunked", f"Content-Length: {len(END) + n}", newline=b"\n") + END + CANARY,
            "bare LF line endings with both framing headers",
        ),
        _bad_chunk("chunk-0x", b"0x0\r\n\r\n", "hex prefix in the chunk size"),
        _bad_chunk("chunk-negative", b"-0\r\n\r\n", "signed chunk size"),
        _bad_chunk("chunk-plus", b"+0\r\n\r\n", "signed chunk size"),
        _bad_chunk("chunk-underscore", b"0_0\r\n\r\n", "underscore in the chunk size"),
        _bad_chunk("chunk-space", b"0 \r\n\r\n", "whitespace after the chunk size"),
        _bad_chunk("chunk-bare-lf", b"0\n\n", "bare LF after the chunk size"),
        _bad_chunk("chunk-ext-bare-lf", b"0;x\n\r\n", "bare LF ending a chunk extension"),
        _bad_chunk("chunk-overflow", b"10000000000000000\r\n\r\n", "chunk size of 2**64 (wraps to 0 in 64 bits)"),
        _bad_chunk("chunk-short-data", b"5\r\nab\r\n0\r\n\r\n", "chunk data shorter than its size"),
        # Here the canary after the trailer section is a legitimate pipelined request, so none is sent: the probe
        # only checks that a framing field in the trailers is refused (or ignored) without a 5xx.
        Probe(
            "chunk-trailer-cl",
            _post("Transfer-Encoding: chunked") + b"0\r\nContent-Length: 5\r\n\r\n",
            "Content-Length sent as a trailer field",
            must_close=False,
        ),
    ]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Outcome:
    responses: list[Response] = field(default_factory=list)
    trailing_garbage: int = 0  # further "HTTP/1." status lines that could not be parsed as whole responses
    closed: bool = False
    follow_up_status: int | None = None
    follow_up_extra: int = 0  # responses after the follow-up's own

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


def parse_responses(data: bytes) -> tuple[list[Response], int, bool]:
    """Final (non-1xx) responses in ``data``, the count of unparseable extra status lines, and whether the last
    response is complete."""
    out: list[Response] = []
    pos = 0
    complete = True
    while pos < len(data):
        if not data.startswith(b"HTTP/", pos):
            return out, data.count(b"HTTP/1.", pos), complete
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return out, 0, False
        lines = data[pos:head_end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        pos = head_end + 4
        if 100 <= status < 200:
            continue
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:
                    return [*out, Response(status, headers, bytes(body))], 0, False
                size = int(data[pos:line_end].split(b";")[0] or b"0", 16)
                pos = line_end + 2
                if size == 0:
                    trailer_end = data.find(b"\r\n", pos)
                    pos = (trailer_end + 2) if trailer_end >= 0 else len(data)
                    break
                body += data[pos : pos + size]
                pos += size + 2
            out.append(Response(status, headers, bytes(body)))
        elif "content-length" in headers:
            length = int(headers["content-length"])
            complete = pos + length <= len(data)
            out.append(Response(status, headers, data[pos : pos + length]))
            pos += length
        else:
            out.append(Response(status, headers, data[pos:]))
            return out, 0, True
    return out, 0, complete


def _read(sock: socket.socket, expected: int, deadline: float, quiet: float) -> tuple[bytes, bool]:
    """Read until the peer closes, or ``quiet`` seconds pass with ``expected`` complete responses and nothing new."""
    data = b""
    last_data = time.monotonic()
    while time.monotonic() < deadline:
        sock.settimeout(0.05)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            responses, garbage, complete = parse_responses(data)
            if len(responses) + garbage >= expected and complete and time.monotonic() - last_data >= quiet:
                return data, False
            continue
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
        last_data = time.monotonic()
    return data, False


def send_probe(port: int, probe: Probe, timeout: float = 4.0, quiet: float = 0.5) -> Outcome:
    outcome = Outcome()
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(probe.raw)
        data, outcome.closed = _read(sock, 2 if probe.control else 1, deadline, quiet)
        outcome.responses, outcome.trailing_garbage, _ = parse_responses(data)
        if not outcome.closed:
            try:
                sock.sendall(FOLLOW_UP)
            except OSError:
                outcome.closed = True
                return outcome
            more, _ = _read(sock, 1, time.monotonic() + timeout, quiet)
            follow, garbage, _ = parse_responses(more)
            if follow:
                outcome.follow_up_status = follow[0].status
            outcome.follow_up_extra = len(follow) - 1 + garbage if follow else garbage
    return outcome


def smuggled(probe: Probe, outcome: Outcome) -> bool:
    """A second response to a probe, or a follow-up the server did not answer as the plain request it was."""
    if probe.control:
        return False
    if len(outcome.responses) + outcome.trailing_garbage > 1:
        return True
    return not outcome.closed and (outcome.follow_up_status not in (None, 200) or outcome.follow_up_extra > 0)
