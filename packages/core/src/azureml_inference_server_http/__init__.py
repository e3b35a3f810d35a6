"""azmlinfsrv core: the entry-script loader and the Flask app behind the Azure ML inference HTTP server.

Custom hosts serve :func:`azureml_inference_server_http.server.create_app` with any WSGI server. Importing
this package loads nothing of the front-ends (gunicorn, waitress, typer) nor of telemetry exporters.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # ``__version__`` is looked up on first use: importlib.metadata costs ~15 ms of start-up in every process
    # (launcher, gunicorn master, each worker), and nothing on the serving path needs the version.
    if name == "__version__":
        from importlib import metadata

        try:
            return metadata.version("azureml-inference-server-http-core")
        except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
            return "0.0.0"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# compat: upstream 1.5.1 advertises remote-debugging support through this attribute.
_HAS_DEBUGPY_SUPPORT = True
