"""Signal handlers that score scripts install while they load in a background thread.

init() runs in a background thread so that probes answer during a long model load. Python only lets the main
thread call ``signal.signal``; a script (or a library it imports) that installs a handler would then fail to load,
although it works upstream, where loading happens in the main thread. While a script loads, ``signal.signal``
called from that thread records the handler and returns the current one; the host applies the recorded handlers
in its main thread (:meth:`DeferredSignals.apply`), at once when it can be woken (``wake``) or within a second.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("azmlinfsrv")

_original_signal = signal.signal


class DeferredSignals:
    def __init__(self) -> None:
        self._pending: list[tuple[int, Any]] = []
        self._lock = threading.Lock()
        self.wake: Callable[[], None] | None = None

    def _signal(self, signum: int, handler: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            return _original_signal(signum, handler)
        previous = signal.getsignal(signum)
        with self._lock:
            self._pending.append((signum, handler))
        logger.info("The score script installs a handler for signal %s; it takes effect in the main thread", signum)
        if self.wake is not None:
            self.wake()
        return previous

    @contextlib.contextmanager
    def while_loading(self) -> Iterator[None]:
        signal.signal = self._signal  # type: ignore[assignment]
        try:
            yield
        finally:
            signal.signal = _original_signal

    def apply(self) -> None:
        """Install the recorded handlers; call from the main thread."""
        with self._lock:
            pending, self._pending = self._pending, []
        for signum, handler in pending:
            try:
                _original_signal(signum, handler)
            except (ValueError, OSError, TypeError) as exc:
                logger.warning("Could not install the score script's handler for signal %s: %s", signum, exc)


deferred_signals = DeferredSignals()
