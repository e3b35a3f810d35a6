"""An in-process client: a score script loaded with core's app factory and called without a socket.

The score script reads ``os.environ`` (``AZUREML_MODEL_DIR`` in init(), its own settings), imports modules that sit
beside it, and print()s. The server gives it a process of its own; here it shares the test process, so each client
keeps its own view of those three things and swaps it in only while init() or a request runs:

* ``os.environ``: the caller's environment plus the client's ``env`` (and whatever the script itself changed);
* ``sys.path``: the script's directory, as ``azmlinfsrv`` run from that directory would have it;
* ``print``: core's print hook (prints become ``azmlinfsrv.print`` log records, as in the server).

Modules imported from the script's directory are kept out of ``sys.modules`` between calls (and dropped when the
client closes), so another script with a sibling module of the same name (``utils.py``) gets its own. Calls are
serialized by a process-wide lock because these are process-wide objects; use the real server to test concurrency.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from types import ModuleType
from types import TracebackType
from typing import TYPE_CHECKING
from typing import Any

from .messages import Headers
from .messages import Response
from .messages import encode_request
from .settings import server_setting_names

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["InProcessClient"]

ENV_APP_ROOT = "AML_APP_ROOT"
ENV_ENTRY_SCRIPT = "AZUREML_ENTRY_SCRIPT"
ENV_MODEL_DIR = "AZUREML_MODEL_DIR"
TELEMETRY_FLUSH_SECONDS = 10.0

# os.environ, sys.path and builtins.print belong to the process: two clients must not swap them at the same time.
_PROCESS_LOCK = threading.RLock()


def _apply(changes: Mapping[str, str | None]) -> None:
    for name, value in changes.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _diff(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, str | None]:
    """What turns ``before`` into ``after`` (None: removed)."""
    changes: dict[str, str | None] = {name: value for name, value in after.items() if before.get(name) != value}
    changes.update({name: None for name in before if name not in after})
    return changes


def _is_under(path: str | None, directory: str) -> bool:
    if not path:
        return False
    try:
        return os.path.commonpath([os.path.realpath(path), directory]) == directory
    except ValueError:  # different drives on Windows
        return False


class _Sandbox:
    """The environment, import path, print() and sibling modules of one client, swapped in by :meth:`active`."""

    def __init__(self, env_changes: Mapping[str, str | None], app_root: str) -> None:
        self.env_changes: dict[str, str | None] = dict(env_changes)
        self.app_root = app_root
        self.print_function: Callable[..., None] | None = None
        # The script's sibling modules live here between calls. An app root the suite can import from anyway
        # (it is on sys.path already) holds the suite's own modules: those are left alone.
        self.owns_modules = not any(os.path.realpath(entry or os.curdir) == app_root for entry in sys.path)
        self.modules_before = set(sys.modules)
        self.modules: dict[str, ModuleType] = {}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with _PROCESS_LOCK:
            outer_env = dict(os.environ)
            outer_print = builtins.print
            added_path = self.app_root not in sys.path
            displaced = {name: sys.modules[name] for name in self.modules if name in sys.modules}
            _apply(self.env_changes)
            if added_path:
                # compat: the azmlinfsrv command appends the app root to sys.path (it does not prepend it).
                sys.path.append(self.app_root)
            if self.print_function is not None:
                builtins.print = self.print_function
            sys.modules.update(self.modules)
            try:
                yield
            finally:
                # Keep what the script set (it sees its own changes on the next call), then give the caller theirs.
                self.env_changes = _diff(outer_env, os.environ)
                _apply(_diff(os.environ, outer_env))
                if self.print_function is None and builtins.print is not outer_print:
                    self.print_function = builtins.print  # core installed its print hook while loading the app
                builtins.print = outer_print
                if added_path and self.app_root in sys.path:
                    sys.path.remove(self.app_root)
                self._stash_modules()
                sys.modules.update(displaced)

    def _stash_modules(self) -> None:
        if not self.owns_modules:
            return
        for name in (set(sys.modules) - self.modules_before) | set(self.modules):
            module = sys.modules.get(name)
            if module is not None and _is_under(getattr(module, "__file__", None), self.app_root):
                self.modules[name] = sys.modules.pop(name)


class InProcessClient:
    """A score script served by core's Flask app inside this process; init() has run when the constructor returns.

    The server's settings in the caller's environment (``AZUREML_*``, ``AML_*``, ...) are hidden from the script;
    ``env`` entries are set while it runs (``None`` removes a variable); ``model_dir`` becomes ``AZUREML_MODEL_DIR``.
    The script's directory is the app root (``AML_APP_ROOT``) unless ``env`` names one. Raises core's exception
    (with the script's own as its cause) when the script cannot be loaded or init() fails.
    """

    def __init__(
        self,
        entry_script: str | os.PathLike[str],
        model_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> None:
        script = os.path.realpath(os.fspath(entry_script))
        if not os.path.isfile(script):
            raise FileNotFoundError(f"score script not found: {script}")
        # The server's settings inherited from the caller's environment are hidden from the script (see settings.py).
        hidden = server_setting_names()
        changes: dict[str, str | None] = {name: None for name in os.environ if name.upper() in hidden}
        changes[ENV_ENTRY_SCRIPT] = script
        if model_dir is not None:
            changes[ENV_MODEL_DIR] = os.path.abspath(os.fspath(model_dir))
        changes.update(env or {})
        app_root = changes.get(ENV_APP_ROOT) or os.path.dirname(script)
        changes[ENV_APP_ROOT] = app_root
        self.entry_script = script
        self.app_root = os.path.realpath(app_root)
        self._sandbox = _Sandbox(changes, self.app_root)
        self._closed = False
        # Imported here, not at module level: loading the pytest plugin must not import Flask or register core's
        # module aliases in a suite that never uses these fixtures.
        from azureml_inference_server_http.server import create_app

        with self._sandbox.active():
            self.app: Flask = create_app(entry_script=script, environ=dict(os.environ))
        self._client = self.app.test_client()

    # -- requests ----------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    ) -> Response:
        """Send any request to the app (``/health/ready``, ``/metrics``, ...)."""
        if self._closed:
            raise RuntimeError("this client is closed")
        target, body, out_headers = encode_request(path, json=json, data=data, headers=headers, params=params)
        with self._sandbox.active():
            answer = self._client.open(target, method=method.upper(), data=body, headers=out_headers)
            try:
                content = answer.get_data()
            finally:
                answer.close()
        return Response(answer.status_code, Headers(answer.headers.items()), content)

    def score(
        self,
        json: Any = None,
        *,
        data: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
        params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    ) -> Response:
        """Call ``/score``: ``json`` is sent as application/json, ``data`` as is; ``params`` form the query string."""
        return self.request(method, "/score", json=json, data=data, headers=headers, params=params)

    def health(self) -> Response:
        """``GET /``, the liveness probe: 200 "Healthy" once init() has completed."""
        return self.request("GET", "/")

    def swagger(self, version: str | None = "2") -> Response:
        """``GET /swagger.json?version=...``; ``version=None`` asks without a version."""
        return self.request("GET", "/swagger.json", params={"version": version} if version is not None else None)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the scoring threads, flush telemetry and traces, and forget the script's sibling modules. Idempotent."""
        if self._closed:
            return
        self._closed = True
        from azureml_inference_server_http.server import get_state

        state = get_state(self.app)
        state.runner.close()
        with self._sandbox.active():
            state.telemetry.flush(TELEMETRY_FLUSH_SECONDS)
            state.telemetry.close()
            state.tracer.shutdown(TELEMETRY_FLUSH_SECONDS)
        self._sandbox.modules.clear()

    def __enter__(self) -> InProcessClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<InProcessClient {self.entry_script}{' closed' if self._closed else ''}>"
