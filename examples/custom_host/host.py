"""Hosting the core server in your own WSGI server, here the standard library's ``wsgiref``.

``create_app()`` loads the score script, runs init() and returns a plain WSGI application with every route of
``azmlinfsrv`` (``/score``, ``/``, ``/swagger.json``, ``/health/live``, ``/health/ready``, ``/metrics``). Any WSGI
server can serve it: waitress, gunicorn, uWSGI, mod_wsgi or, as here, ``wsgiref``, which handles one request at a
time (fine for a sidecar or a demo, not for production load). Only the core package is needed::

    pip install ./packages/core numpy
    python examples/custom_host/host.py --port 8000
    curl -s localhost:8000/score -H "Content-Type: application/json" -d '{"data": [[1, 2, 3, 4]]}'

By default it serves the numpy example (``examples/numpy_model``). SIGTERM or Ctrl+C stops it after the request
in progress.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import make_server

from azureml_inference_server_http.log_config import apply_packaged_config
from azureml_inference_server_http.server import create_app
from azureml_inference_server_http.server import get_state

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(os.path.dirname(HERE), "numpy_model")

logger = logging.getLogger("azmlinfsrv.host")


class QuietHandler(WSGIRequestHandler):
    """wsgiref's own access line is dropped: the app already logs one line per request."""

    def log_message(self, format: str, *args: Any) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    parser.add_argument("--port", type=int, default=8000, help="Port to listen on (default 8000; 0 picks one).")
    parser.add_argument("--entry_script", default=os.path.join(EXAMPLE, "score.py"))
    parser.add_argument("--model_dir", default=os.path.join(EXAMPLE, "model"))
    args = parser.parse_args(argv)

    # The server's log format (UTC timestamps, logger names) on stdout; without this only warnings are shown.
    apply_packaged_config()
    # Score scripts find their model through this variable, as on Azure ML; create_app() does not export it.
    os.environ["AZUREML_MODEL_DIR"] = os.path.abspath(args.model_dir)
    # Loads the script and runs init(); raises if either fails, so a broken script never starts serving.
    app = create_app(entry_script=args.entry_script, model_dir=args.model_dir)

    server = make_server(args.host, args.port, app, handler_class=QuietHandler)

    def stop(signum: int, frame: Any) -> None:
        get_state(app).start_draining()  # /health/ready answers 503 from now on
        # shutdown() waits for serve_forever() to return, so it must not run in the thread that serves.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    logger.info("Serving %s on http://%s:%d", args.entry_script, args.host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    logger.info("Stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
