"""Loading the entry script and analysing its run() (docs/compatibility.md#score-script)."""

from __future__ import annotations

import enum
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ..api import aml_request
from ..exceptions import UserScriptError
from ..exceptions import UserScriptException
from ..exceptions import UserScriptImportException
from .arrays import ArraySpec
from .arrays import array_specs

logger = logging.getLogger("azmlinfsrv.user_script")

# compat: upstream executes the entry script as a module of this name; inference-schema keys its registry
# by "<module>.<function>", so the name is visible in schema lookups.
ENTRY_MODULE_NAME = "entry_module"
REQUEST_HEADERS_PARAM = "request_headers"


class InputMode(enum.Enum):
    JSON_STRING = "json"  # undecorated run(): the body (or query as JSON) as a string
    SCHEMA = "schema"  # @input_schema / @output_schema: keyword arguments from a JSON object
    RAW = "raw"  # @rawhttp: the Flask request


class MissingMainModule(UserScriptError):
    """No entry script was configured and ``import main`` found nothing."""


@dataclass
class UserScript:
    """A loaded entry script: its module, init(), run() and how run() wants its input."""

    path: str | None
    module: types.ModuleType
    init: Callable[[], Any]
    run: Callable[..., Any]
    mode: InputMode
    input_params: list[str]  # every parameter but request_headers, in declaration order
    wants_request_headers: bool
    defaults: dict[str, Any] = field(default_factory=dict)  # parameters that have a default value
    # @input_schema parameters declared with inference-schema's NumpyParameterType, by name (see inputs.py)
    numpy_params: dict[str, Any] = field(default_factory=dict)
    # Those of them whose large arrays are parsed straight into numpy arrays (see arrays.py)
    array_specs: dict[str, ArraySpec] = field(default_factory=dict)

    @property
    def first_param(self) -> str:
        return self.input_params[0]


def _forget_schemas(module_name: str) -> None:
    """Drop inference-schema's registrations for a module we are about to (re)load."""
    try:
        from inference_schema import schema_util
    except ImportError:  # pragma: no cover - inference-schema is a dependency
        return
    prefix = module_name + "."
    for registry_name in ("__functions_schema__", "__versions__"):
        registry = getattr(schema_util, registry_name, None)
        if isinstance(registry, dict):
            for key in [k for k in registry if isinstance(k, str) and k.startswith(prefix)]:
                del registry[key]


def import_entry_script(path: str) -> types.ModuleType:
    """Execute ``path`` as a fresh module; any exception is wrapped in :class:`UserScriptImportException`."""
    _forget_schemas(ENTRY_MODULE_NAME)
    aml_request.reset_rawhttp_flag()
    try:
        spec = importlib.util.spec_from_file_location(ENTRY_MODULE_NAME, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"Cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except BaseException as exc:
        if isinstance(exc, FileNotFoundError):
            logger.error("No such file or directory.")
        raise UserScriptImportException() from exc
    return module


def import_main_module(app_root: str) -> types.ModuleType:
    """No entry script configured: fall back to ``import main`` (docs/compatibility.md#entry-script)."""
    _forget_schemas("main")
    aml_request.reset_rawhttp_flag()
    try:
        sys.modules.pop("main", None)
        return importlib.import_module("main")
    except ModuleNotFoundError as exc:
        if exc.name != "main":
            raise UserScriptImportException() from exc
        server_logger = logging.getLogger("azmlinfsrv")
        server_logger.error("No score script found. Expected score script main.py.")
        server_logger.error("Expected script to be found in PYTHONPATH: %s", sys.path)
        if os.path.isdir(app_root):
            server_logger.error("Current contents of AML_APP_ROOT: %s", os.listdir(app_root))
        else:
            # compat: upstream's wording, including the missing "is".
            server_logger.error(
                "The directory %s not an accessible directory in the container.",
                app_root,
            )
        raise MissingMainModule("No score script found. Expected score script main.py.") from exc
    except BaseException as exc:
        raise UserScriptImportException() from exc


def _is_schema_decorated(func: Callable[..., Any]) -> bool:
    try:
        from inference_schema.schema_util import is_schema_decorated
    except ImportError:  # pragma: no cover
        return False
    try:
        return bool(is_schema_decorated(func))
    except Exception:
        return False


def schema_parameter_types(run: Callable[..., Any]) -> dict[str, Any]:
    """The parameter types of run()'s @input_schema decorators, read from inference-schema's wrappers.

    inference-schema keeps them only in its decorators' closures; an unexpected layout yields {} and the server
    then simply leaves all conversions to inference-schema.
    """
    found: dict[str, Any] = {}
    layer: Any = run
    for _ in range(64):  # bounded: decorator chains are short
        wrapper: Any = getattr(layer, "_self_wrapper", None)
        code = getattr(wrapper, "__code__", None)
        if code is not None:
            closure = getattr(wrapper, "__closure__", None) or ()
            cells = dict(zip(code.co_freevars, (c.cell_contents for c in closure), strict=False))
            if "param_name" in cells and "param_type" in cells:
                found.setdefault(cells["param_name"], cells["param_type"])
        layer = getattr(layer, "__wrapped__", None)
        if layer is None:
            break
    return found


def _numpy_params(run: Callable[..., Any]) -> dict[str, Any]:
    return {
        name: param_type
        for name, param_type in schema_parameter_types(run).items()
        if type(param_type).__name__ == "NumpyParameterType"
    }


def analyse(module: types.ModuleType, path: str | None) -> UserScript:
    """Check init/run, decide the input mode (docs/compatibility.md#run-analysis). Raises :class:`UserScriptError`."""
    shown = path or getattr(module, "__file__", None) or "main"
    # compat: upstream's wording "a init()".
    if not hasattr(module, "init"):
        raise UserScriptError(f"User script at {shown} does not have a init() function defined.")
    if not hasattr(module, "run"):
        raise UserScriptError(f"User script at {shown} does not have a run() function defined.")

    run = module.run
    driver = getattr(module, "driver_module", None)
    if isinstance(driver, types.ModuleType) and hasattr(driver, "run"):
        run = driver.run
        logger.info(
            "Found driver script at %s and the score script at %s",
            shown,
            getattr(driver, "__file__", None),
        )
    else:
        logger.info("Found user script at %s", shown)

    try:
        signature = inspect.signature(run)
    except (TypeError, ValueError) as exc:
        raise UserScriptError(f"run() must be a function: {exc}") from exc
    for parameter in signature.parameters.values():
        if parameter.kind not in (
            parameter.POSITIONAL_OR_KEYWORD,
            parameter.KEYWORD_ONLY,
        ):
            raise UserScriptError("run() cannot accept positional-only arguments, *args, or **kwargs.")
    names = list(signature.parameters)
    wants_headers = REQUEST_HEADERS_PARAM in names
    params = [name for name in names if name != REQUEST_HEADERS_PARAM]
    if not params:
        if wants_headers:
            raise UserScriptError('run() needs to accept an argument other than "request_headers".')
        raise UserScriptError("run() needs to accept an argument for input data.")

    raw = aml_request.is_rawhttp_requested()
    schema = _is_schema_decorated(run)
    if raw and schema:
        raise UserScriptError("run() cannot be decorated with both @rawhttp and @input_schema")
    if raw:
        mode = InputMode.RAW
        logger.info("run() is decorated with @rawhttp. Server will invoke it with the flask request object.")
    elif schema:
        mode = InputMode.SCHEMA
        logger.info(
            "run() is decorated with @input_schema. Server will invoke it with the following arguments: %s.",
            ", ".join(params),
        )
    else:
        mode = InputMode.JSON_STRING
        logger.info("run() is not decorated. Server will invoke it with the input in JSON string.")
    numpy_params = _numpy_params(run) if mode is InputMode.SCHEMA else {}
    return UserScript(
        path=path,
        module=module,
        init=module.init,
        run=run,
        mode=mode,
        input_params=params,
        wants_request_headers=wants_headers,
        defaults={name: p.default for name, p in signature.parameters.items() if p.default is not p.empty},
        numpy_params=numpy_params,
        array_specs=array_specs(numpy_params),
    )


def load(path: str | None, app_root: str) -> UserScript:
    """Import the entry script (or ``main``) and analyse it."""
    module = import_entry_script(path) if path else import_main_module(app_root)
    return analyse(module, path)


def run_init(script: UserScript) -> None:
    """Call init(); any exception (BaseException included) becomes :class:`UserScriptException`."""
    logger.info("Invoking user's init function")
    try:
        script.init()
    except BaseException as exc:
        raise UserScriptException("User's init function failed") from exc
    # compat: upstream's wording "Users's".
    logger.info("Users's init has completed successfully")
