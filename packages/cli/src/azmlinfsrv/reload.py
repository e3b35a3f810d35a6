"""``--reload``: watch the score script's files and reload it in place, in each serving process."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the launcher imports this module before it may import the server (see core's metrics)
    from azureml_inference_server_http.server.state import ServerState

logger = logging.getLogger("azmlinfsrv")

RELOAD_ENV = "AZMLINFSRV_RELOAD"
WATCHED_SUFFIXES = (".py", ".json", ".yaml", ".yml", ".txt")


def start_watcher(state: ServerState) -> threading.Thread | None:
    """Start a daemon thread that reloads ``state`` when a watched file changes."""
    try:
        import watchfiles
    except ImportError:
        logger.error("--reload needs the watchfiles package. Install it with: pip install watchfiles")
        return None
    paths = state.watched_paths()
    if not paths:
        logger.warning("--reload: nothing to watch (no entry script folder)")
        return None

    def relevant(change: object, path: str) -> bool:
        return path.endswith(WATCHED_SUFFIXES)

    def watch() -> None:
        state.wait_ready()
        logger.info("Watching %s for changes", ", ".join(paths))
        for changes in watchfiles.watch(*paths, watch_filter=relevant, debounce=300, raise_interrupt=False):
            logger.info("Detected changes in %s", ", ".join(sorted({path for _, path in changes})))
            state.reload()

    thread = threading.Thread(target=watch, name="azmlinfsrv-reload", daemon=True)
    thread.start()
    return thread
