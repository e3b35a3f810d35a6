"""The Application Insights implementation of core's ``Telemetry`` seam.

Each method takes a small snapshot and hands it to the :class:`~.exporter.BackgroundExporter`; none of them blocks
or raises. ``flush`` is the one deliberate wait, bounded by its ``timeout``: core calls it after an init() failure so
the exception reaches Application Insights before the worker exits, instead of upstream's blind 30 s sleep.
"""

from __future__ import annotations

import atexit
import json
import logging
import time
from collections.abc import Callable
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from azureml_inference_server_http.server.tracing import current_trace_id

from .connection import IngestionTarget
from .credentials import RefreshingToken
from .credentials import TokenCredential
from .envelopes import EnvelopeBuilder
from .envelopes import ServiceContext
from .exporter import BackgroundExporter
from .exporter import ExporterOptions
from .exporter import ExportStats
from .handler import TelemetryLogHandler
from .items import MAX_PROPERTY_LENGTH
from .items import ExceptionItem
from .items import Item
from .items import ModelDataItem
from .items import RequestItem
from .items import exception_details
from .items import limit
from .items import to_json_text
from .redaction import Redactor
from .transport import DEFAULT_SEND_TIMEOUT
from .transport import OpenCensusTransport
from .transport import SendResult

if TYPE_CHECKING:
    from azureml_inference_server_http.server.telemetry import ModelDataRecord
    from azureml_inference_server_http.server.telemetry import RequestRecord

__all__ = ["DEFAULT_EXIT_TIMEOUT", "LOGGER_NAME", "AppInsightsTelemetry"]

logger = logging.getLogger("azmlinfsrv.trace")

# The parent of every server logger (azmlinfsrv.print, azmlinfsrv.user_script, azmlinfsrv.trace, ...).
LOGGER_NAME = "azmlinfsrv"
# At interpreter exit, what is still queued gets this long; a hanging endpoint must not hold up a worker's exit.
DEFAULT_EXIT_TIMEOUT = 2.0

Sender = Callable[[list[dict[str, Any]]], SendResult]


class AppInsightsTelemetry:
    """Thread-safe and non-blocking; see core's ``Telemetry`` protocol for when each method is called."""

    enabled = True

    def __init__(
        self,
        target: IngestionTarget,
        context: ServiceContext,
        *,
        log_response: bool = True,
        mdc_enabled: bool = False,
        options: ExporterOptions | None = None,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        sender: Sender | None = None,
        attach_to: Sequence[str] = (LOGGER_NAME,),
        log_level: int = logging.INFO,
        credential: TokenCredential | None = None,
    ) -> None:
        """``credential`` signs each batch with a Microsoft Entra ID token (``target.entra``); it is required then."""
        if target.entra and credential is None and sender is None:
            raise ValueError("the connection string asks for Microsoft Entra ID (Authorization=AAD): pass a credential")
        self._log_response = log_response
        self._mdc_enabled = mdc_enabled
        redactor = Redactor(target.secrets or (target.instrumentation_key,))
        self._builder = EnvelopeBuilder(target.instrumentation_key, context, redactor)
        self._transport: OpenCensusTransport | None = None
        if sender is None:
            token = RefreshingToken(credential) if credential is not None and target.entra else None
            self._transport = OpenCensusTransport(target, redactor, timeout=send_timeout, token=token)
            sender = self._transport.send
        transport = self._transport
        self._exporter: BackgroundExporter[Item] = BackgroundExporter(
            self._builder.build,
            sender,
            options,
            last_error=(lambda: transport.last_error) if transport is not None else (lambda: None),
        )
        self.handler = TelemetryLogHandler(self._exporter.submit, self._exporter.is_exporter_thread, log_level)
        self._loggers = [logging.getLogger(name) for name in attach_to]
        for attached in self._loggers:
            attached.addHandler(self.handler)
        self._closed = False
        atexit.register(self._close_at_exit)

    # -- the Telemetry protocol ---------------------------------------------------------------------------------

    def request(self, record: RequestRecord) -> None:
        try:
            response_value = record.response_value if self._log_response else None
            self._exporter.submit(
                RequestItem(
                    name=record.name,
                    url=record.url,
                    method=record.method,
                    status_code=record.status_code,
                    start_time=record.start_time,
                    duration_ms=record.duration_ms,
                    request_id=record.request_id,
                    client_request_id=record.client_request_id,
                    # Cut here, not on the exporter thread: the queue must not hold whole response bodies.
                    response_value=None if response_value is None else limit(response_value, MAX_PROPERTY_LENGTH),
                    trace_id=current_trace_id(),
                )
            )
        except Exception:
            logger.debug("Could not queue request telemetry", exc_info=True)

    def exception(self, exc: BaseException, request_id: str, client_request_id: str) -> None:
        try:
            item = ExceptionItem(
                time=time.time(),
                details=exception_details(exc),
                request_id=request_id,
                client_request_id=client_request_id,
                trace_id=current_trace_id(),
            )
            self._exporter.submit(item)
        except Exception:
            logger.debug("Could not queue exception telemetry", exc_info=True)

    def model_data(self, record: ModelDataRecord) -> None:
        if not self._mdc_enabled:
            return
        try:
            # Core passes the ids it found at boot (docs/compatibility.md#model-ids) in extra["Models"].
            models = record.extra.get("Models") or []
            self._exporter.submit(
                ModelDataItem(
                    time=time.time(),
                    request_id=record.request_id,
                    client_request_id=record.client_request_id,
                    # compat: upstream sends json.dumps() of the input and of the output.
                    # See docs/compatibility.md#model-data-collection.
                    input=to_json_text(record.input),
                    prediction=to_json_text(record.prediction),
                    models=json.dumps([str(model) for model in models]),
                    trace_id=current_trace_id(),
                )
            )
        except Exception:
            logger.debug("Could not queue model data telemetry", exc_info=True)

    def flush(self, timeout: float) -> None:
        self._exporter.flush(timeout)

    def close(self, timeout: float = DEFAULT_EXIT_TIMEOUT) -> None:
        if self._closed:
            return
        self._closed = True
        for attached in self._loggers:
            attached.removeHandler(self.handler)
        finished = self._exporter.close(timeout)
        if self._transport is not None and finished:
            # While a send is still running (a hanging endpoint outlived the timeout) the transport's log filter
            # stays, so the library's late warning about that send is still captured and redacted.
            self._transport.close()
        atexit.unregister(self._close_at_exit)

    # -- extras -------------------------------------------------------------------------------------------------

    def flush_and_wait(self, timeout: float) -> bool:
        """Like :meth:`flush`, but says whether everything queued was handled within ``timeout``."""
        return self._exporter.flush(timeout)

    def stats(self) -> ExportStats:
        """Counters for operators and tests: submitted, sent, dropped (by cause), queued, last error."""
        return self._exporter.stats()

    def _close_at_exit(self) -> None:
        self.close(DEFAULT_EXIT_TIMEOUT)
