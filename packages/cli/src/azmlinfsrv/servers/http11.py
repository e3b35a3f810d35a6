"""HTTP/1.1 request framing for the event-loop worker (RFC 9112), strict on purpose.

The worker reads requests in its event loop and hands a request to a thread only once it is complete, so a slow
client never holds a thread (docs/guarantees.md#r5). That needs an incremental parser: :func:`parse_head` turns a
complete request head into a WSGI environ and the body's framing, and :class:`ChunkedDecoder` follows a chunked
body as its bytes arrive.

Anything a front proxy and this server could read two ways is refused with 400 and a closed connection rather
than guessed at (R13): Content-Length together with Transfer-Encoding, differing Content-Length values, a
transfer coding other than ``chunked``, Transfer-Encoding on HTTP/1.0, obsolete line folding, bare CR or LF,
whitespace before a header's colon, and malformed chunk sizes or extensions.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Field values: visible ASCII, obs-text, space and tab. CR, LF, NUL and other controls are refused.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CHUNK_EXT = re.compile(
    rb"(?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:=(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|\"[^\"\\]*\"))?)*"
)

# Header names that become CGI variables without the HTTP_ prefix (PEP 3333).
_UNPREFIXED = {b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH"}
# Header names seen before, each with its lower-case form and its CGI key (None: the header is dropped). Clients
# send the same few names on every request, and checking and converting a name costs more than the rest of its
# line; the table stops growing at _NAMES_MAX, so a client inventing names gains nothing but slower requests.
_NAMES: dict[bytes, tuple[bytes, str | None]] = {}
_NAMES_MAX = 1024


class HttpError(Exception):
    """A request that cannot be served; answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Limits:
    """Size limits for a request head (gunicorn's settings of the same names, so GUNICORN_CMD_ARGS applies)."""

    __slots__ = ("field_size", "fields", "head_bytes", "line")

    def __init__(self, line: int = 4094, fields: int = 100, field_size: int = 8190) -> None:
        # gunicorn treats 0 as "unlimited" for the line and the field size; keep a hard ceiling all the same.
        self.line = line if line > 0 else 65536
        self.fields = fields if fields > 0 else 32768
        self.field_size = field_size if field_size > 0 else 65536
        self.head_bytes = min(self.line + 2 + self.fields * (self.field_size + 2) + 2, 1 << 20)


class Head:
    """A parsed request head: the environ (without the body) and how the body is framed."""

    __slots__ = ("chunked", "content_length", "environ", "expect_continue", "keep_alive", "method", "path", "version")

    def __init__(self) -> None:
        self.environ: dict[str, Any] = {}
        self.method = ""
        self.path = ""
        self.version = ""
        self.keep_alive = True
        self.chunked = False
        self.content_length = 0
        self.expect_continue = False


def parse_head(data: bytes, limits: Limits) -> Head:
    """Parse a request head (everything before the blank line, without it)."""
    lines = data.split(b"\r\n")
    request_line = lines[0]
    if len(request_line) > limits.line:
        raise HttpError(414, f"Request line is longer than {limits.line} bytes.")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "Bad request line.")
    method, target, version = parts
    if _TOKEN.fullmatch(method) is None:
        raise HttpError(400, "Bad request method.")
    if version == b"HTTP/1.1":
        http10 = False
    elif version == b"HTTP/1.0":
        http10 = True
    elif version.startswith(b"HTTP/") and len(version) == 8 and version[5:6].isdigit() and version[7:8].isdigit():
        raise HttpError(505, "HTTP version not supported.")
    else:
        raise HttpError(400, "Bad HTTP version.")
    if not target or _BAD_TARGET.search(target) is not None:
        raise HttpError(400, "Bad request target.")

    head = Head()
    environ = head.environ
    head.method = method.decode("ascii")
    head.version = version.decode("ascii")
    if len(lines) - 1 > limits.fields:
        raise HttpError(431, f"More than {limits.fields} header fields.")

    content_lengths: list[bytes] = []
    transfer_codings: list[bytes] = []
    connection = b""
    for line in lines[1:]:
        if len(line) > limits.field_size:
            raise HttpError(431, f"A header field is longer than {limits.field_size} bytes.")
        name, colon, value = line.partition(b":")
        known = _NAMES.get(name) if colon else None
        if known is None:
            if not colon or _TOKEN.fullmatch(name) is None:
                # Also catches obsolete line folding (a line starting with whitespace) and "Name :" forms.
                raise HttpError(400, "Bad header field.")
            known = _learn_name(name)
        lower, key = known
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value) is not None:
            raise HttpError(400, "Bad header field value.")
        if lower == b"content-length":
            content_lengths.extend(v.strip(b" \t") for v in value.split(b","))
        elif lower == b"transfer-encoding":
            transfer_codings.extend(v.strip(b" \t").lower() for v in value.split(b","))
        elif lower == b"connection":
            connection += b"," + value.lower()
        elif lower == b"expect":
            if value.lower() == b"100-continue":
                head.expect_continue = not http10
        if key is None:
            continue
        text = value.decode("latin-1")
        previous = environ.get(key)
        environ[key] = text if previous is None else previous + "," + text

    if transfer_codings:
        if http10:
            raise HttpError(400, "Transfer-Encoding is not allowed in HTTP/1.0 requests.")
        if content_lengths:
            raise HttpError(400, "A request must not carry both Content-Length and Transfer-Encoding.")
        if transfer_codings != [b"chunked"]:
            raise HttpError(501, "Only the chunked transfer coding is supported.")
        head.chunked = True
    elif content_lengths:
        first = content_lengths[0]
        if not first.isdigit() or len(first) > 18 or any(v != first for v in content_lengths):
            raise HttpError(400, "Bad Content-Length.")
        head.content_length = int(first)
        environ["CONTENT_LENGTH"] = str(head.content_length)

    tokens = {t.strip(b" \t") for t in connection.split(b",")} if connection else set()
    if b"close" in tokens:
        head.keep_alive = False
    elif http10:
        head.keep_alive = b"keep-alive" in tokens

    path, query = _split_target(target, head.method)
    head.path = path
    environ["REQUEST_METHOD"] = head.method
    environ["SERVER_PROTOCOL"] = head.version
    environ["RAW_URI"] = target.decode("latin-1")
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = query
    return head


def _learn_name(name: bytes) -> tuple[bytes, str | None]:
    """A valid header name's lower-case form and CGI key, remembered in _NAMES while there is room."""
    lower = name.lower()
    key: str | None
    if b"_" in name:
        # Like gunicorn: X_Forwarded_For and X-Forwarded-For would share one CGI name, so a client could spoof a
        # header a proxy sets. Such headers are dropped.
        key = None
    else:
        key = _UNPREFIXED.get(lower) or "HTTP_" + name.decode("ascii").upper().replace("-", "_")
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[name] = (lower, key)
    return lower, key


def _split_target(target: bytes, method: str) -> tuple[str, str]:
    if target[:1] != b"/":
        lower = target[:8].lower()
        if lower.startswith(b"http://") or lower.startswith(b"https://"):
            # absolute-form: keep the path, the Host header names the server
            rest = target.split(b"//", 1)[1]
            slash = rest.find(b"/")
            target = rest[slash:] if slash >= 0 else b"/"
            if slash < 0 and b"?" in rest:
                target = b"/?" + rest.split(b"?", 1)[1]
        elif target == b"*" and method == "OPTIONS":
            return "*", ""
        else:
            raise HttpError(400, "Bad request target.")
    path, _, query = target.partition(b"?")
    query = query.partition(b"#")[0]
    path = path.partition(b"#")[0]
    if b"%" in path:
        path = unquote_to_bytes(path)
    return path.decode("latin-1"), query.decode("latin-1")


class ChunkedDecoder:
    """Follows a chunked body as its bytes arrive; the decoded body is :attr:`body` once :attr:`done`."""

    __slots__ = ("body", "done", "limit", "over_limit", "_remaining", "_state", "_trailer_bytes")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self, limit: int | None) -> None:
        self.body = bytearray()
        self.done = False
        self.limit = limit
        self.over_limit = False  # the decoded body passed ``limit``: stop reading, the app answers 413
        self._state = self._SIZE
        self._remaining = 0
        self._trailer_bytes = 0

    def feed(self, buf: bytearray, pos: int) -> int:
        """Consume what it can of ``buf`` from ``pos``; returns the new position. Raises :class:`HttpError`."""
        end = len(buf)
        while not self.done and not self.over_limit:
            state = self._state
            if state == self._SIZE:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > 4096:
                        raise HttpError(400, "Chunk size line too long.")
                    return pos
                line = bytes(buf[pos:eol])
                pos = eol + 2
                size, semicolon, extension = line.partition(b";")
                if _HEX.fullmatch(size) is None or b"\n" in line or b"\r" in line:
                    raise HttpError(400, "Bad chunk size.")
                if semicolon and _CHUNK_EXT.fullmatch(semicolon + extension) is None:
                    raise HttpError(400, "Bad chunk extension.")
                self._remaining = int(size, 16)
                self._state = self._DATA if self._remaining else self._TRAILER
            elif state == self._DATA:
                take = min(self._remaining, end - pos)
                if take <= 0:
                    return pos
                self.body += buf[pos : pos + take]
                pos += take
                self._remaining -= take
                if self.limit is not None and len(self.body) > self.limit:
                    self.over_limit = True
                    return pos
                if self._remaining:
                    return pos
                self._state = self._DATA_END
            elif state == self._DATA_END:
                if end - pos < 2:
                    return pos
                if buf[pos : pos + 2] != b"\r\n":
                    raise HttpError(400, "Chunk data not followed by CRLF.")
                pos += 2
                self._state = self._SIZE
            else:  # trailer fields, then the blank line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > 8192:
                        raise HttpError(431, "Trailer section too large.")
                    return pos
                line = bytes(buf[pos:eol])
                pos = eol + 2
                if not line:
                    self.done = True
                    return pos
                self._trailer_bytes += len(line)
                name, colon, value = line.partition(b":")
                if (
                    not colon
                    or _TOKEN.fullmatch(name) is None
                    or _BAD_VALUE.search(value.strip(b" \t")) is not None
                    or self._trailer_bytes > 8192
                ):
                    raise HttpError(400, "Bad trailer field.")
        return pos
