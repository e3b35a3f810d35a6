"""azmlinfsrv core: the entry-script loader and the Flask app behind the Azure ML inference HTTP server.

Custom hosts serve :func:`azureml_inference_server_http.server.create_app` with any WSGI server. Importing
this package loads nothing of the front-ends (gunicorn, waitress, typer) nor of telemetry exporters.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("azureml-inference-server-http-core")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

# compat: upstream 1.5.1 advertises remote-debugging support through this attribute.
_HAS_DEBUGPY_SUPPORT = True
