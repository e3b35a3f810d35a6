"""The site's structure (mkdocs.yml against docs/), facts the pages quote, and the CI workflow.

``nox -s docs`` builds the site with ``--strict``; these checks need no mkdocs and run with the other tests.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from azureml_inference_server_http.server import create_app

from .conftest import DOCS
from .conftest import ROOT


class _MkdocsLoader(yaml.SafeLoader):
    """mkdocs.yml may use mkdocs' custom tags (``!ENV``, ``!!python/name``); keep them as plain values."""


_MkdocsLoader.add_multi_constructor("!", lambda loader, suffix, node: None)
_MkdocsLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def mkdocs_config() -> dict[str, Any]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_MkdocsLoader)
    assert isinstance(config, dict)
    return config


def nav_pages(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in nav_pages(value)]
    return []


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = nav_pages(mkdocs_config()["nav"])
    pages = {path.name for path in doc_pages()}
    assert len(nav) == len(set(nav)), "a page appears twice in the nav"
    assert pages - set(nav) == set(), "pages missing from the nav of mkdocs.yml"
    assert set(nav) - pages == set(), "nav entries without a page in docs/"


def test_site_builds_strictly() -> None:
    assert mkdocs_config()["strict"] is True


def test_no_markdown_extension_includes_files() -> None:
    """GitHub renders include markers literally; the pages carry the code (see test_docs_example_copies.py)."""
    extensions = [
        next(iter(item)) if isinstance(item, dict) else item for item in mkdocs_config()["markdown_extensions"]
    ]
    assert "pymdownx.snippets" not in extensions


def test_documented_metrics_exist(tmp_path: Path) -> None:
    script = tmp_path / "score.py"
    script.write_text("def init():\n    pass\n\n\ndef run(data):\n    return data\n", encoding="utf-8")
    client = create_app(entry_script=str(script), environ={"AML_APP_ROOT": str(tmp_path)}).test_client()
    client.post("/score", data="{}")
    exposed = client.get("/metrics").get_data(as_text=True)
    # Metric names end in a unit or _total (Prometheus naming); other azmlinfsrv_* words are packages or fixtures.
    metric = re.compile(r"`(azmlinfsrv_[a-z_]+_(?:total|seconds|bytes|in_flight|info))`")
    documented = set()
    for page in doc_pages():
        documented |= set(metric.findall(page.read_text(encoding="utf-8")))
    assert documented, "no metric is documented"
    for name in sorted(documented):
        assert re.search(rf"^{name}(?:_bucket|_count|_sum|_created)?[{{ ]", exposed, re.MULTILINE), name


# -- CI workflow --------------------------------------------------------------------------------------------------


def _workflow() -> dict[str, Any]:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))
    assert isinstance(workflow, dict)
    return workflow


def nox_sessions() -> dict[str, bool]:
    """Session name -> whether ``nox`` runs it by default, read from noxfile.py."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    sessions: dict[str, bool] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "nox.session":
                default = True
                for keyword in decorator.keywords:
                    if keyword.arg == "default" and isinstance(keyword.value, ast.Constant):
                        default = bool(keyword.value.value)
                sessions[node.name] = default
    return sessions


def _ci_commands() -> list[str]:
    commands = []
    for job in _workflow()["jobs"].values():
        for step in job["steps"]:
            if "run" in step:
                commands.append(step["run"])
    return commands


def _matrix_values(key: str) -> list[str]:
    values: list[str] = []
    for job in _workflow()["jobs"].values():
        values += [str(v) for v in job.get("strategy", {}).get("matrix", {}).get(key, [])]
    return values


def test_ci_runs_on_linux_and_windows() -> None:
    assert {"ubuntu-latest", "windows-latest"} <= set(_matrix_values("os"))


def test_ci_tests_every_supported_python() -> None:
    # The classifiers, read as text: tomllib is not in Python 3.10.
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    supported = set(re.findall(r'"Programming Language :: Python :: (3\.\d+)"', pyproject))
    assert supported
    assert set(_matrix_values("python")) == supported


def ci_nox_sessions() -> set[str]:
    """The nox sessions the workflow runs, with ``${{ matrix.* }}`` expanded."""
    named: set[str] = set()
    for command in _ci_commands():
        match = re.search(r"\b(?:nox|tools/run_nox\.py) (?:--session|-s) (.+)$", command)
        if not match:
            continue
        text = re.sub(r"\$\{\{\s*matrix\.(\w+)\s*\}\}", r"@matrix.\1@", match.group(1))
        for arg in shlex.split(text):
            expression = re.fullmatch(r"(.*?)@matrix\.(\w+)@", arg)
            if expression is None:
                named.add(arg)
            elif expression.group(2) == "session":
                named |= set(_matrix_values("session"))
            else:  # "tests-${{ matrix.python }}": a parametrised session
                named.add(expression.group(1).rstrip("-"))
    return named


def test_ci_runs_every_default_nox_session_and_only_real_ones() -> None:
    sessions = nox_sessions()
    named = ci_nox_sessions()
    assert named <= set(sessions), f"CI runs sessions noxfile.py does not define: {sorted(named - set(sessions))}"
    defaults = {name for name, default in sessions.items() if default}
    assert defaults <= named, f"default sessions CI does not run: {sorted(defaults - named)}"
    assert "docs" in named
