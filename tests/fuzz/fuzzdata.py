"""Splitting one fuzz input (bytes) into typed fields, the same way under atheris and under hypothesis.

atheris ships ``FuzzedDataProvider``, but the hypothesis fallback must decode inputs identically, so the targets
use this small reader instead: a crash found by either engine replays from the same bytes with either engine.
"""

from __future__ import annotations

# Characters that matter to the parsers under test, so short inputs reach the interesting branches often.
INTERESTING_TEXT = '{}[]",:0123456789.eE+-_ \t\r\n\\/%&=;?#*abcxyzABCXYZ\x00\x7f\x80\xff\u00e9\u2028\ud800\U0001f600'


class FuzzInput:
    """Reads fields from the front of ``data``; once it is used up every read returns an empty or zero value."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        value = self.data[self.pos]
        self.pos += 1
        return value

    def int_in(self, low: int, high: int) -> int:
        """An integer in ``[low, high]`` from up to two bytes."""
        span = high - low + 1
        if span <= 1:
            return low
        raw = self.byte() if span <= 256 else self.byte() << 8 | self.byte()
        return low + raw % span

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[self.int_in(0, len(options) - 1)]

    def raw(self, max_len: int) -> bytes:
        """Up to ``max_len`` bytes (the length comes first)."""
        length = min(self.int_in(0, max_len), self.remaining)
        chunk = self.data[self.pos : self.pos + length]
        self.pos += length
        return chunk

    def text(self, max_len: int) -> str:
        """A string built from the bytes: low values pick interesting characters, the rest map to code points."""
        out: list[str] = []
        for value in self.raw(max_len):
            if value < 2 * len(INTERESTING_TEXT):
                out.append(INTERESTING_TEXT[value % len(INTERESTING_TEXT)])
            else:
                out.append(chr(value))
        return "".join(out)

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk
