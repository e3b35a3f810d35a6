"""azmlinfsrv core: the entry-script loader and the Flask app behind the Azure ML inference HTTP server.

Custom hosts serve :func:`azureml_inference_server_http.server.create_app` with any WSGI server. Importing
this package loads nothing of the front-ends (gunicorn, waitress, typer) nor of telemetry exporters.
"""

from __future__ import annotations

DISTRIBUTION = "azureml-inference-server-http-core"


def __getattr__(name: str) -> str:
    # ``__version__`` is looked up on first use and then kept as a plain attribute: nothing on the serving path
    # needs it, so processes that never ask (gunicorn master, workers) do not even import the version module.
    if name == "__version__":
        version = _installed_version()
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _installed_version() -> str:
    """The version the build wrote from pyproject.toml; the distribution's metadata for an unbuilt source tree."""
    try:
        from ._version import __version__ as version
    except ImportError:
        from importlib import metadata

        try:
            return metadata.version(DISTRIBUTION)
        except metadata.PackageNotFoundError:  # pragma: no cover - neither built nor installed
            return "0.0.0"
    return version


# compat: upstream 1.5.1 advertises remote-debugging support through this attribute.
_HAS_DEBUGPY_SUPPORT = True
