"""CORS for the server's routes (``AML_CORS_ORIGINS``), with exact origin matching.

Upstream hands the raw list to flask-cors, where bare host names can never match a browser's ``Origin`` and
regex-looking entries match by prefix (docs/guarantees.md#w12). Here every entry is checked at start-up: ``*`` or
``scheme://host[:port]``. compat: entries without a scheme (``www.microsoft.com``) are still matched literally,
because upstream's own tests send such ``Origin`` values, but we warn that no browser sends them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

logger = logging.getLogger("azmlinfsrv")

_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s:]+(:\d{1,5})?$", re.IGNORECASE)
# Origins are compared case-insensitively in ASCII only: str.lower() would fold e.g. the Kelvin sign into "k" and
# let a different host match. Browsers send non-ASCII hosts in punycode.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _normalise(origin: str) -> str:
    return origin.translate(_ASCII_LOWER).rstrip("/")


ALLOWED_METHODS = "GET, POST"


@dataclass(frozen=True)
class CorsPolicy:
    origins: frozenset[str]
    allow_any: bool

    @classmethod
    def parse(cls, value: str | None) -> CorsPolicy | None:
        """Parse ``AML_CORS_ORIGINS``; None (CORS off) for an unset or empty value."""
        if not value:
            return None
        entries = [entry.strip() for entry in value.split(",")]
        entries = [entry for entry in entries if entry]
        for entry in entries:
            if not entry.isascii():
                logger.warning(
                    "CORS origin %r is not ASCII: browsers send international host names in punycode "
                    "(xn--...), so it can only match clients that send exactly this text.",
                    entry,
                )
            elif entry != "*" and not _ORIGIN.match(entry):
                logger.warning(
                    "CORS origin %r is not of the form scheme://host[:port] or '*': browsers send origins with a "
                    "scheme, so it will only match clients that send exactly this text.",
                    entry,
                )
        logger.info("Enabling CORS for the following origins: %s", ", ".join(entries))
        return cls(
            origins=frozenset(_normalise(e) for e in entries),
            allow_any="*" in entries,
        )

    def allows(self, origin: str) -> bool:
        return self.allow_any or _normalise(origin) in self.origins

    def headers(
        self, origin: str | None, preflight_headers: str | None, is_preflight: bool
    ) -> Iterable[tuple[str, str]]:
        """Headers to add to a response for this request's ``Origin``; nothing for a non-matching origin."""
        if not origin or not self.allows(origin):
            return ()
        # The origin is echoed rather than "*": credentials stay possible and "*" is never sent with them.
        out = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if is_preflight:
            out.append(("Access-Control-Allow-Methods", ALLOWED_METHODS))
            if preflight_headers:
                out.append(("Access-Control-Allow-Headers", preflight_headers))
        return out
