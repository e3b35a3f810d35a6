"""The request parser of the event-loop worker: what it accepts, and every ambiguity it refuses (R13)."""

from __future__ import annotations

import pytest
from azmlinfsrv.servers.http11 import ChunkedDecoder
from azmlinfsrv.servers.http11 import HttpError
from azmlinfsrv.servers.http11 import Limits
from azmlinfsrv.servers.http11 import parse_head

LIMITS = Limits()


def head(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("latin-1")


def test_a_plain_post_becomes_a_wsgi_environ() -> None:
    parsed = parse_head(
        head("POST /score?a=1&b=%20 HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: 2"), LIMITS
    )
    env = parsed.environ
    assert (parsed.method, parsed.path, parsed.content_length, parsed.keep_alive) == ("POST", "/score", 2, True)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/score"
    assert env["QUERY_STRING"] == "a=1&b=%20"
    assert env["RAW_URI"] == "/score?a=1&b=%20"
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "2"
    assert env["HTTP_HOST"] == "x"
    assert "HTTP_CONTENT_TYPE" not in env


def test_path_is_percent_decoded_as_latin1_and_repeated_headers_are_joined() -> None:
    parsed = parse_head(head("GET /a%2Fb%C3%A9 HTTP/1.1\nX-A: 1\nx-a: 2"), LIMITS)
    assert parsed.environ["PATH_INFO"] == "/a/b\xc3\xa9"
    assert parsed.environ["HTTP_X_A"] == "1,2"


def test_absolute_form_and_asterisk_targets() -> None:
    assert parse_head(head("GET http://h:1/score?q=1 HTTP/1.1"), LIMITS).environ["PATH_INFO"] == "/score"
    assert parse_head(head("OPTIONS * HTTP/1.1"), LIMITS).path == "*"


def test_headers_with_underscores_are_dropped() -> None:
    env = parse_head(head("GET / HTTP/1.1\nX_Forwarded_Proto: https"), LIMITS).environ
    assert "HTTP_X_FORWARDED_PROTO" not in env


@pytest.mark.parametrize(
    ("text", "keep_alive"),
    [
        ("GET / HTTP/1.1", True),
        ("GET / HTTP/1.1\nConnection: close", False),
        ("GET / HTTP/1.0", False),
        ("GET / HTTP/1.0\nConnection: Keep-Alive", True),
    ],
)
def test_keep_alive(text: str, keep_alive: bool) -> None:
    assert parse_head(head(text), LIMITS).keep_alive is keep_alive


def test_expect_continue_only_on_http11() -> None:
    assert parse_head(head("POST / HTTP/1.1\nExpect: 100-continue\nContent-Length: 1"), LIMITS).expect_continue
    assert not parse_head(head("POST / HTTP/1.0\nExpect: 100-continue\nContent-Length: 1"), LIMITS).expect_continue


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("POST / HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked", 400),  # CL + TE
        ("POST / HTTP/1.1\nContent-Length: 1\nContent-Length: 2", 400),  # differing lengths
        ("POST / HTTP/1.1\nContent-Length: 1, 2", 400),
        ("POST / HTTP/1.1\nContent-Length: +1", 400),
        ("POST / HTTP/1.1\nContent-Length: 0x1", 400),
        ("POST / HTTP/1.1\nContent-Length: 1 1", 400),
        ("POST / HTTP/1.0\nTransfer-Encoding: chunked", 400),  # TE on HTTP/1.0
        ("POST / HTTP/1.1\nTransfer-Encoding: gzip, chunked", 501),
        ("POST / HTTP/1.1\nTransfer-Encoding: chunked, chunked", 501),
        ("POST / HTTP/1.1\nTransfer-Encoding: xchunked", 501),
        ("POST / HTTP/1.1\nTransfer-Encoding : chunked", 400),  # whitespace before the colon
        ("GET / HTTP/1.1\nX-A: 1\n folded", 400),  # obsolete line folding
        ("GET / HTTP/1.1\nX-A: a\rb", 400),  # bare CR
        ("GET / HTTP/1.1\nX-A: a\x00b", 400),
        ("GET / HTTP/1.1\nX-A", 400),
        ("GET /  HTTP/1.1", 400),
        ("GET / HTTP/1.1 x", 400),
        ("GET / HTTP/2.0", 505),
        ("GET / HTTQ/1.1", 400),
        ("G@T / HTTP/1.1", 400),
        ("GET a HTTP/1.1", 400),
        ("GET /a\x7fb HTTP/1.1", 400),
        ("GET /" + "a" * 5000 + " HTTP/1.1", 414),
        ("GET / HTTP/1.1\n" + "\n".join(f"X-{i}: 1" for i in range(101)), 431),
        ("GET / HTTP/1.1\nX-A: " + "a" * 9000, 431),
    ],
)
def test_ambiguous_or_malformed_heads_are_refused(text: str, status: int) -> None:
    with pytest.raises(HttpError) as caught:
        parse_head(head(text), LIMITS)
    assert caught.value.status == status
    assert caught.value.message


def decode(raw: bytes, limit: int | None = None, step: int = 0) -> ChunkedDecoder:
    decoder = ChunkedDecoder(limit)
    buf = bytearray()
    pos = 0
    pieces = [raw[i : i + step] for i in range(0, len(raw), step)] if step else [raw]
    for piece in pieces:
        buf += piece
        pos = decoder.feed(buf, pos)
    return decoder


@pytest.mark.parametrize("step", [0, 1, 3])
def test_chunked_body_decodes_whatever_the_arrival(step: int) -> None:
    raw = b"5\r\nhello\r\n1;name=value\r\n!\r\n0\r\nX-Trailer: 1\r\n\r\n"
    decoder = decode(raw, step=step)
    assert decoder.done
    assert bytes(decoder.body) == b"hello!"


def test_chunked_decoder_stops_at_the_end_of_the_body() -> None:
    decoder = ChunkedDecoder(None)
    buf = bytearray(b"2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    pos = decoder.feed(buf, 0)
    assert decoder.done
    assert bytes(buf[pos:]) == b"GET / HTTP/1.1\r\n\r\n"


def test_chunked_body_past_the_limit_stops_reading() -> None:
    decoder = decode(b"a\r\n0123456789\r\na\r\n0123456789\r\n", limit=15)
    assert decoder.over_limit
    assert not decoder.done


@pytest.mark.parametrize(
    "raw",
    [
        b"-1\r\nx\r\n0\r\n\r\n",
        b"+1\r\nx\r\n0\r\n\r\n",
        b"0x1\r\nx\r\n0\r\n\r\n",
        b" 1\r\nx\r\n0\r\n\r\n",
        b"1 \r\nx\r\n0\r\n\r\n",
        b"11111111111111111\r\n",  # 17 hex digits
        b"1;a\nb\r\nx\r\n0\r\n\r\n",  # bare LF in an extension
        b"1;\r\nx\r\n0\r\n\r\n",
        b"1\r\nxy\r\n0\r\n\r\n",  # data longer than its size
        b"1\r\nx\n0\r\n\r\n",
        b"0\r\nbad trailer\r\n\r\n",
    ],
)
def test_malformed_chunks_are_refused(raw: bytes) -> None:
    with pytest.raises(HttpError) as caught:
        decode(raw)
    assert caught.value.status == 400


def test_remembered_header_names_parse_as_the_first_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Header names are checked and converted once, then looked up (http11._NAMES); the answers must not change,
    invalid names must never be remembered, and the table must stay bounded."""
    from azmlinfsrv.servers import http11

    monkeypatch.setattr(http11, "_NAMES", {})
    monkeypatch.setattr(http11, "_NAMES_MAX", 8)
    text = head("POST / HTTP/1.1\nX-Thing: 1\nX_Spoofed: 2\nContent-Type: a/b\nContent-Length: 0\nconnection: close")
    first = parse_head(text, LIMITS)
    second = parse_head(text, LIMITS)
    assert first.environ == second.environ
    assert second.environ["HTTP_X_THING"] == "1"
    assert second.environ["CONTENT_TYPE"] == "a/b"
    assert not any("SPOOFED" in key for key in second.environ)  # an underscore name stays dropped
    assert second.keep_alive is False  # the special names still act when remembered
    for _ in range(2):
        with pytest.raises(HttpError) as bad:
            parse_head(head("GET / HTTP/1.1\nBad Name: 1"), LIMITS)
        assert bad.value.status == 400
    assert b"Bad Name" not in http11._NAMES
    many = "\n".join(f"X-N{i}: {i}" for i in range(20))
    parsed = parse_head(head(f"GET / HTTP/1.1\n{many}"), LIMITS)
    assert len(http11._NAMES) == 8
    assert parsed.environ["HTTP_X_N19"] == "19"  # names past the bound are still parsed, only not remembered
