"""Sending one batch of envelopes with opencensus-ext-azure's transport.

We use the library's wire code (``TransportMixin._transmit``: the POST to ``<endpoint>/v2.1/track``, the status-code
policy, redirects) but none of its exporters, because as configured by default they:

* start "statsbeat", which sends usage metrics to Microsoft's own endpoint and probes the Azure instance-metadata
  address, whatever ingestion endpoint we were given;
* keep a local retry store under the temp directory, in a folder named after the instrumentation key;
* log one warning per dropped item when their queue is full, and at interpreter exit flush without a time limit.

So this class never starts statsbeat, keeps no storage, and routes the library's per-attempt warnings into our own
rate-limited summary (they can repeat an envelope, and so the key, in a ``Data drop`` message).
"""

from __future__ import annotations

import enum
import logging
import threading
import warnings
from typing import Any

from .connection import IngestionTarget
from .credentials import MONITOR_SCOPE
from .credentials import RefreshingToken
from .credentials import TokenUnavailable
from .redaction import Redactor

with warnings.catch_warnings():
    # opencensus-ext-azure calls locale.getdefaultlocale() at import time, deprecated since Python 3.11; the
    # warning is the library's to fix and must not fail suites that turn warnings into errors.
    warnings.simplefilter("ignore", DeprecationWarning)
    from opencensus.ext.azure.common import Options
    from opencensus.ext.azure.common import utils as azure_utils
    from opencensus.ext.azure.common.protocol import BaseObject
    from opencensus.ext.azure.common.transport import TransportMixin
    from opencensus.ext.azure.common.transport import TransportStatusCode

__all__ = ["DEFAULT_SEND_TIMEOUT", "OpenCensusTransport", "SendResult", "default_tags"]

# The library's per-attempt messages come from this logger (warnings on failures, errors on dropped items).
TRANSPORT_LOGGER = "opencensus.ext.azure.common.transport"
# A hanging endpoint holds the exporter thread (never a request) this long per attempt.
DEFAULT_SEND_TIMEOUT = 5.0


class SendResult(enum.Enum):
    SENT = "sent"
    RETRY = "retry"
    DROPPED = "dropped"


def default_tags() -> dict[str, str]:
    """The library's device and SDK context tags (``ai.device.*``, ``ai.internal.sdkVersion``)."""
    return {str(k): str(v) for k, v in dict(azure_utils.azure_monitor_context).items() if v is not None}


class _Transmitter(TransportMixin):  # type: ignore[misc]
    """The library's transport, without local storage and without starting statsbeat."""

    def __init__(self, options: Any) -> None:
        self.options = options
        self.storage = None  # no on-disk retry store (see the module docstring)
        self._consecutive_redirects = 0

    def _check_stats_collection(self) -> bool:
        # True on purpose. In the library's _transmit, a network error (refused, timeout) returns its RETRY verdict
        # only on this branch; otherwise the code falls through, reads a response that was never assigned, and drops
        # the batch with a misleading "Error while reading response body" warning. The branch's only side effect is
        # a module-level counter map that statsbeat's producer would read; statsbeat itself never starts, because
        # only the library's exporter constructors start it and we use none of them.
        return True

    def _is_stats_exporter(self) -> bool:
        return False


class _CaptureFilter(logging.Filter):
    """Swallows the library's records raised while we send (we summarise them) and redacts everyone else's."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor
        self._local = threading.local()

    def capture(self, sink: list[str] | None) -> None:
        self._local.sink = sink

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = self._redactor.text(record.getMessage())
        except Exception:
            message = "unformattable transport log record"
        sink: list[str] | None = getattr(self._local, "sink", None)
        if sink is not None:
            sink.append(message)
            return False
        record.msg = message
        record.args = None
        return True


class OpenCensusTransport:
    """Sends batches to one target; safe to call from one thread at a time (the exporter's)."""

    def __init__(
        self,
        target: IngestionTarget,
        redactor: Redactor,
        timeout: float = DEFAULT_SEND_TIMEOUT,
        token: RefreshingToken | None = None,
    ) -> None:
        # Options(...) would run the library's own option processing, which also parses
        # APPLICATIONINSIGHTS_CONNECTION_STRING from the environment and raises on Authorization=AAD (and on strings
        # with a trailing ";"). The target is already validated, so the options are filled in directly.
        options = Options.__new__(Options)
        BaseObject.__init__(
            options,
            connection_string=target.connection_string,
            instrumentation_key=target.instrumentation_key,
            endpoint=target.endpoint,
            enable_local_storage=False,
            enable_standard_metrics=False,
            timeout=timeout,
            proxies="{}",
            # The library's transport asks this for a token for https://monitor.azure.com//.default before each
            # POST and sends it as "Authorization: Bearer <token>"; RefreshingToken keeps one until near expiry.
            credential=token,
        )
        self._token = token
        self._transmitter = _Transmitter(options)
        self._filter = _CaptureFilter(redactor)
        self._logger = logging.getLogger(TRANSPORT_LOGGER)
        self._logger.addFilter(self._filter)
        self.last_error: str | None = None

    def send(self, envelopes: list[dict[str, Any]]) -> SendResult:
        messages: list[str] = []
        self._filter.capture(messages)
        try:
            if self._token is not None:
                # Renewed here, not inside the library's call, which turns any error into a dropped batch; the
                # library's own get_token() then gets the same cached token.
                self._token.get_token(MONITOR_SCOPE)
            code = self._transmitter._transmit(envelopes)
        except TokenUnavailable as exc:
            # No token yet (the identity endpoint is slow or failing): like a network error, worth retrying.
            messages.append(str(exc))
            code = TransportStatusCode.RETRY
        except Exception as exc:  # the library promises not to raise; if it does, the batch is lost, not the thread
            messages.append(f"{type(exc).__name__} while sending telemetry")
            code = TransportStatusCode.DROP
        finally:
            self._filter.capture(None)
        if messages:
            self.last_error = messages[-1]
        if code == TransportStatusCode.SUCCESS:
            return SendResult.SENT
        if code == TransportStatusCode.RETRY:
            return SendResult.RETRY
        return SendResult.DROPPED

    def close(self) -> None:
        self._logger.removeFilter(self._filter)
