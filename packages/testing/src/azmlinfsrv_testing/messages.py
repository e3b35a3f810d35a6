"""The requests and responses both clients share, so a test reads the same whether it runs in-process or over HTTP."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

__all__ = ["Headers", "Response", "encode_request"]

JSON_CONTENT_TYPE = "application/json"


class Headers(Mapping[str, str]):
    """Response headers, looked up case-insensitively; a repeated header reads as its values joined by ", "."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = list(items)

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        # RFC 9110 §5.3: repeated fields combine as one comma-separated list.
        return ", ".join(values)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for name, _ in self._items:
            if name.lower() not in seen:
                seen.add(name.lower())
                yield name

    def __len__(self) -> int:
        return len({name.lower() for name, _ in self._items})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, in the order received."""
        wanted = name.lower()
        return [value for key, value in self._items if key.lower() == wanted]

    def items_list(self) -> list[tuple[str, str]]:
        """The raw (name, value) pairs, repeated headers included."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class Response:
    """An HTTP response: ``status_code``, ``headers``, ``content`` (bytes), ``text`` and ``json()``."""

    def __init__(self, status_code: int, headers: Headers, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        # The server encodes every body it writes as UTF-8; a score script's raw bytes may not be, hence "replace".
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; raises ValueError (showing the body) when it is not JSON."""
        try:
            return jsonlib.loads(self.content)
        except ValueError as exc:
            raise ValueError(
                f"response body is not JSON ({exc}); status {self.status_code}, body: {self.text!r}"
            ) from exc

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 400

    def __repr__(self) -> str:
        body = self.text
        if len(body) > 200:
            body = body[:200] + "..."
        return f"<Response [{self.status_code}] {body!r}>"


def encode_request(
    path: str,
    *,
    json: Any = None,
    data: str | bytes | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
) -> tuple[str, bytes | None, dict[str, str]]:
    """The target (path and query), body and headers for one request, the way ``requests`` builds them.

    ``json`` is serialized and sent as ``application/json`` unless ``headers`` names another type; ``data`` is sent
    as is (a str as UTF-8). Giving both is an error, as it would be ambiguous which one the script receives.
    """
    if json is not None and data is not None:
        raise ValueError("pass json= or data=, not both")
    out_headers = dict(headers or {})
    body: bytes | None = None
    if json is not None:
        body = jsonlib.dumps(json).encode("utf-8")
        if not any(name.lower() == "content-type" for name in out_headers):
            out_headers["Content-Type"] = JSON_CONTENT_TYPE
    elif isinstance(data, str):
        body = data.encode("utf-8")
    elif data is not None:
        body = bytes(data)
    if params:
        query = urlencode(list(params.items()) if isinstance(params, Mapping) else list(params), doseq=True)
        path = f"{path}{'&' if '?' in path else '?'}{query}"
    return path, body, out_headers
