"""The reference pages name every flag, environment variable and config.json key the server really reads.

The lists come from the code: the typer command's parameters, the ``ENV_*`` constants, every upper-case name the
packages look up in an environment mapping, and the settings table of ``config.py``. A new setting without a
line in the docs fails here; so does a documented name the code no longer reads.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer
from azmlinfsrv import main as cli_main
from azureml_inference_server_http import config as core_config
from azureml_inference_server_http import constants

from .conftest import ROOT
from .conftest import doc_sections
from .conftest import read_doc
from .conftest import table_first_cells

SCANNED_PACKAGES = ("core", "cli", "appinsights", "otel")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+_?$")  # glibc's MALLOC_*_ names end in "_"
# Upper-case subscripts that are not environment variables (Flask's own configuration keys).
NOT_ENV_CONTAINERS = {"config"}


def _flags(params: list[object]) -> set[str]:
    names: set[str] = set()
    for param in params:
        for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
            if opt.startswith("--"):
                names.add(opt)
    return names


def serve_flags() -> set[str]:
    return _flags(typer.main.get_command(cli_main.app).params)


def validate_flags() -> set[str]:
    command = typer.main.get_command(cli_main.app)
    return _flags(command.commands["validate"].params)  # type: ignore[attr-defined]


def _is_wsgi_environ(node: ast.AST) -> bool:
    """``environ`` or ``x.environ`` other than ``os.environ``: a WSGI environ, whose keys are CGI names."""
    if isinstance(node, ast.Name):
        return node.id == "environ"
    if isinstance(node, ast.Attribute) and node.attr == "environ":
        return not (isinstance(node.value, ast.Name) and node.value.id == "os")
    return False


def _container_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _env_literals(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and _is_wsgi_environ(func.value):
                continue  # environ.get("PATH_INFO")
            if isinstance(func, ast.Attribute) and _container_name(func.value) in NOT_ENV_CONTAINERS:
                continue  # app.config.get("TRUSTED_HOSTS")
            # env.get("NAME"), os.getenv("NAME"), _int(env, "NAME", ...): a variable name passed to any call.
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            container = node.value
            if isinstance(container, ast.Attribute) and container.attr in NOT_ENV_CONTAINERS:
                continue
            if _is_wsgi_environ(container):
                continue
            if isinstance(node.slice.value, str):
                found.add(node.slice.value)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            # Module constants holding a variable name, e.g. MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR".
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.endswith("_ENV") and isinstance(node.value.value, str):
                    found.add(node.value.value)
    return {name for name in found if ENV_NAME.match(name)}


def code_env_names() -> set[str]:
    names = {value for key, value in vars(constants).items() if key.startswith("ENV_") and isinstance(value, str)}
    for package in SCANNED_PACKAGES:
        for path in sorted((ROOT / "packages" / package / "src").rglob("*.py")):
            names |= _env_literals(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return names


def config_file_keys() -> set[str]:
    return {setting.env for setting in core_config._SETTINGS if setting.in_config_file}


def _section(page: str, heading: str) -> str:
    sections = doc_sections(read_doc(page))
    assert heading in sections, f"docs/{page} has no '## {heading}' section (found: {sorted(sections)})"
    return sections[heading]


def _documented_flags(page: str, heading: str) -> set[str]:
    flags: set[str] = set()
    for cell in table_first_cells(_section(page, heading)):
        flags |= set(re.findall(r"--[a-z][a-z0-9_-]*", cell))
    return flags


# -- the extraction itself must work, or every test below would pass vacuously ------------------------------


def test_reference_extraction_finds_known_names() -> None:
    env = code_env_names()
    for name in (
        "AZUREML_ENTRY_SCRIPT",
        "SCORING_TIMEOUT_MS",
        "AZMLINFSRV_ACCESS_LOG",
        "AZMLINFSRV_MAX_REQUESTS",
        "PROMETHEUS_MULTIPROC_DIR",
        "GUNICORN_CMD_ARGS",
        "SEPERATE_HEALTH_ENDPOINT",
    ):
        assert name in env
    assert "MAX_CONTENT_LENGTH" not in env  # a Flask config key, not a variable
    assert {"--entry_script", "--port", "--threads", "--server"} <= serve_flags()
    assert {"--sample", "--format", "--output", "--init_timeout"} <= validate_flags()
    assert "SCORING_TIMEOUT_MS" in config_file_keys()
    assert "AML_APP_INSIGHTS_KEY" not in config_file_keys()


def test_env_literal_scan_reads_lookups_and_ignores_flask_config() -> None:
    source = (
        'import os\nMULTIPROC_ENV = "A_DIR"\nos.environ.get("B_ONE")\nenv["C_TWO"] = "x"\n'
        'app.config["D_THREE"] = 1\nenv.get("lower_case")\n_int(env, "E_FOUR", 0)\nlog("Not a name")\n'
    )
    assert _env_literals(ast.parse(source)) == {"A_DIR", "B_ONE", "C_TWO", "E_FOUR"}


# -- CLI ------------------------------------------------------------------------------------------------------


def test_cli_docs_list_every_serving_flag() -> None:
    documented = _documented_flags("cli.md", "Serving options")
    missing = serve_flags() - documented
    assert not missing, f"flags missing from docs/cli.md 'Serving options': {sorted(missing)}"
    unknown = documented - serve_flags() - {"--help"}
    assert not unknown, f"docs/cli.md documents flags the command does not have: {sorted(unknown)}"


def test_cli_docs_list_every_validate_flag() -> None:
    documented = _documented_flags("cli.md", "azmlinfsrv validate")
    missing = validate_flags() - documented
    assert not missing, f"flags missing from docs/cli.md 'azmlinfsrv validate': {sorted(missing)}"
    unknown = documented - validate_flags() - {"--help"}
    assert not unknown, f"docs/cli.md documents validate flags that do not exist: {sorted(unknown)}"


# -- environment variables ---------------------------------------------------------------------------------------


def documented_env_names() -> set[str]:
    return set(table_first_cells(_section("configuration.md", "Environment variables")))


def test_configuration_docs_list_every_environment_variable() -> None:
    missing = code_env_names() - documented_env_names()
    assert not missing, f"variables missing from docs/configuration.md 'Environment variables': {sorted(missing)}"


def test_configuration_docs_list_only_real_environment_variables() -> None:
    unknown = documented_env_names() - code_env_names()
    assert not unknown, f"docs/configuration.md documents variables nothing reads: {sorted(unknown)}"


DEFAULTS = {
    constants.ENV_SERVER_PORT: constants.DEFAULT_SERVER_PORT,
    constants.ENV_HEALTH_PORT: constants.DEFAULT_HEALTH_PORT,
    constants.ENV_WORKER_COUNT: constants.DEFAULT_WORKER_COUNT,
    constants.ENV_WORKER_THREADS: constants.DEFAULT_WORKER_THREADS,
    constants.ENV_WORKER_TIMEOUT: constants.DEFAULT_WORKER_TIMEOUT,
    constants.ENV_SCORING_TIMEOUT_MS: constants.DEFAULT_SCORING_TIMEOUT_MS,
    constants.ENV_MAX_REQUEST_BODY_MB: constants.DEFAULT_MAX_REQUEST_BODY_MB,
    constants.ENV_GRACEFUL_TIMEOUT: constants.DEFAULT_GRACEFUL_TIMEOUT,
    constants.ENV_SERVICE_NAME: constants.DEFAULT_SERVICE_NAME,
    constants.ENV_SERVICE_VERSION: constants.DEFAULT_SERVICE_VERSION,
    constants.ENV_HOSTNAME: constants.DEFAULT_HOSTNAME,
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_configuration_docs_state_the_real_default(name: str) -> None:
    rows = [
        line
        for line in _section("configuration.md", "Environment variables").splitlines()
        if re.match(rf"^\|\s*`{re.escape(name)}`", line)
    ]
    assert len(rows) == 1, f"expected one row for {name}"
    assert f"`{DEFAULTS[name]}`" in rows[0], f"the row of {name} does not show its default `{DEFAULTS[name]}`"


# -- config.json ---------------------------------------------------------------------------------------------------


def test_configuration_docs_list_exactly_the_config_file_keys() -> None:
    documented = set(table_first_cells(_section("configuration.md", "config.json")))
    missing = config_file_keys() - documented
    assert not missing, f"config.json keys missing from docs/configuration.md: {sorted(missing)}"
    wrong = documented - config_file_keys()
    assert not wrong, f"docs/configuration.md lists keys config.json ignores: {sorted(wrong)}"


def test_env_scan_covers_every_python_file() -> None:
    # Guards the scan's reach: a package moved or renamed would silently shrink the list above.
    for package in SCANNED_PACKAGES:
        assert list(Path(ROOT / "packages" / package / "src").rglob("*.py")), package
