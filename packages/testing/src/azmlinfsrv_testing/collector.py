"""A fake Application Insights ingestion endpoint: a real HTTP server on 127.0.0.1 that records envelopes.

Point a server at it with ``APPLICATIONINSIGHTS_CONNECTION_STRING=<FakeIngestion.connection_string>``. It accepts
what the real ``/v2/track`` and ``/v2.1/track`` endpoints accept (a JSON array, one JSON object, or newline-delimited
JSON, optionally gzip-compressed) and answers like the service does. It can also simulate an outage, so tests can
check that telemetry never slows requests down:

* ``"ok"``: record the envelopes and answer 200;
* ``"error"``: answer 500 without recording anything;
* ``"hang"``: read the request and never answer (until the endpoint stops or ``hang_limit`` passes);
* ``"refuse"``: nothing listens on the port, so connections are refused;
* ``"partial"``: answer 206 and reject every item as invalid (status 400), recording nothing, as the service does
  for envelopes it cannot accept.

Example::

    with FakeIngestion() as ingestion:
        env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = ingestion.connection_string
        ...
        [item] = ingestion.wait_for(lambda e: request_id(e) == "abc", timeout=30)
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable
from email.message import Message
from typing import Any

from ._fake_endpoint import DEFAULT_HANG_LIMIT as DEFAULT_HANG_LIMIT
from ._fake_endpoint import ERROR
from ._fake_endpoint import HANG
from ._fake_endpoint import MAX_BODY_BYTES as MAX_BODY_BYTES
from ._fake_endpoint import OK
from ._fake_endpoint import REFUSE
from ._fake_endpoint import FakeEndpoint
from ._fake_endpoint import Reply

__all__ = [
    "ERROR",
    "HANG",
    "MODES",
    "OK",
    "PARTIAL",
    "REFUSE",
    "FakeIngestion",
    "envelope_kind",
    "envelope_properties",
]

PARTIAL = "partial"
MODES = (OK, ERROR, HANG, REFUSE, PARTIAL)

TRACK_PATHS = ("/v2/track", "/v2.1/track")

_KINDS = {
    "RequestData": "request",
    "ExceptionData": "exception",
    "MessageData": "trace",
    "EventData": "event",
    "MetricData": "metric",
    "RemoteDependencyData": "dependency",
}

Envelope = dict[str, Any]
Predicate = Callable[[Envelope], bool]


def envelope_kind(envelope: Envelope) -> str:
    """``"request"``, ``"exception"``, ``"trace"``, ``"event"``, ``"metric"``, ``"dependency"`` or ``"unknown"``."""
    data = envelope.get("data")
    base_type = data.get("baseType") if isinstance(data, dict) else None
    return _KINDS.get(str(base_type), "unknown")


def envelope_properties(envelope: Envelope) -> dict[str, Any]:
    """The custom properties (``customDimensions`` in the portal) of an envelope, or ``{}``."""
    data = envelope.get("data")
    base = data.get("baseData") if isinstance(data, dict) else None
    properties = base.get("properties") if isinstance(base, dict) else None
    return properties if isinstance(properties, dict) else {}


def _parse_items(body: bytes, content_encoding: str) -> list[Any]:
    """Decode a track payload into its items; raises ValueError when it is not one of the accepted shapes."""
    if "gzip" in content_encoding.lower() or body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    text = body.decode("utf-8").strip()
    if not text:
        return []
    if text.startswith("["):
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError("the payload is not a JSON array")
        return items
    try:
        return [json.loads(text)]
    except ValueError:
        # Newline-delimited JSON: one envelope per line.
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _json(status: int, payload: dict[str, Any]) -> Reply:
    return status, "application/json; charset=utf-8", json.dumps(payload).encode("utf-8")


class FakeIngestion(FakeEndpoint[Envelope]):
    """An Application Insights ingestion endpoint on 127.0.0.1 that records what it receives.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`). ``mode`` may be changed at any time.
    """

    _name = "FakeIngestion"
    _modes = MODES
    _paths = TRACK_PATHS
    _noun = "envelopes"

    def __init__(
        self,
        *,
        mode: str = OK,
        instrumentation_key: str | None = None,
        hang_limit: float = DEFAULT_HANG_LIMIT,
    ) -> None:
        super().__init__(mode=mode, hang_limit=hang_limit)
        self.instrumentation_key = instrumentation_key or str(uuid.uuid4())

    @property
    def connection_string(self) -> str:
        """``InstrumentationKey=<uuid>;IngestionEndpoint=<url>/``, the shape Azure portals hand out."""
        return f"InstrumentationKey={self.instrumentation_key};IngestionEndpoint={self.url}/"

    @property
    def envelopes(self) -> list[Envelope]:
        """A copy of every envelope accepted so far, in arrival order."""
        return self._received()

    def authorizations(self) -> list[str | None]:
        """The ``Authorization`` header of every POST (``None`` where there was none), e.g. ``Bearer <token>``."""
        return [_header(headers, "Authorization") for headers in self.request_headers]

    def items(self, kind: str) -> list[Envelope]:
        """The accepted envelopes of one kind (see :func:`envelope_kind`)."""
        return [envelope for envelope in self.envelopes if envelope_kind(envelope) == kind]

    # -- what the track endpoint answers -----------------------------------------------------------------------

    def _summary(self, record: Envelope) -> str:
        return envelope_kind(record)

    def _rejection(self, status: int) -> Reply:
        messages = {404: "not found", 411: "Content-Length required", 413: "payload too large"}
        return _json(status, {"error": messages[status]})

    def _answer(self, mode: str, body: bytes, headers: Message) -> Reply:
        if mode == ERROR:
            return _json(500, {"itemsReceived": 0, "itemsAccepted": 0, "errors": []})
        try:
            items = _parse_items(body, headers.get("Content-Encoding", ""))
        except (ValueError, OSError, EOFError) as exc:
            error = {"index": 0, "statusCode": 400, "message": f"Invalid payload: {exc}"}
            return _json(400, {"itemsReceived": 0, "itemsAccepted": 0, "errors": [error]})
        if mode == PARTIAL:
            rejected = [
                {"index": index, "statusCode": 400, "message": "Invalid envelope (rejected by FakeIngestion)"}
                for index in range(len(items))
            ]
            return _json(206, {"itemsReceived": len(items), "itemsAccepted": 0, "errors": rejected})
        envelopes = [item for item in items if isinstance(item, dict)]
        errors = [
            {"index": index, "statusCode": 400, "message": "Invalid envelope: not a JSON object"}
            for index, item in enumerate(items)
            if not isinstance(item, dict)
        ]
        self._record(envelopes)
        status = 206 if errors else 200
        return _json(status, {"itemsReceived": len(items), "itemsAccepted": len(envelopes), "errors": errors})


def _header(headers: dict[str, str], name: str) -> str | None:
    # HTTP header names are case-insensitive; clients differ in how they spell them.
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None
