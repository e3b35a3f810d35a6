"""Fail when the version has more than one source: one version for all six distributions, siblings pinned with ==.

The code reads the version the core build writes from pyproject.toml (``[tool.hatch.build.hooks.version]``); a
version literal in the packages' source would be a second source that drifts.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "pyproject.toml", *sorted((ROOT / "packages").glob("*/pyproject.toml"))]
CORE = ROOT / "packages" / "core"


def main() -> int:
    projects = {path: tomllib.loads(path.read_text(encoding="utf-8"))["project"] for path in FILES}
    versions = {project["version"] for project in projects.values()}
    problems = []
    if len(versions) != 1:
        problems.append(f"versions differ: {sorted(versions)}")
    version = next(iter(versions))
    names = {project["name"] for project in projects.values()}
    for path, project in projects.items():
        for requirement in project.get("dependencies", []):
            name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
            if name in names and not requirement.startswith(f"{name}=={version}"):
                problems.append(f"{path.relative_to(ROOT)}: {requirement!r} must pin {name}=={version}")
    problems += _code_literals(version, CORE)
    for problem in problems:
        print(problem)
    print(f"{len(FILES)} distributions at version {version}" if not problems else "version check failed")
    return 1 if problems else 0


def _code_literals(version: str, core: Path) -> list[str]:
    """The build must write the version file, and no source file may spell the version itself."""
    problems = []
    hook = tomllib.loads((core / "pyproject.toml").read_text(encoding="utf-8"))
    written = hook.get("tool", {}).get("hatch", {}).get("build", {}).get("hooks", {}).get("version", {}).get("path")
    if written is None:
        problems.append("packages/core/pyproject.toml: [tool.hatch.build.hooks.version] must write the version file")
    generated = (core / written).resolve() if written else None
    for path in sorted((ROOT / "packages").glob("*/src/**/*.py")):
        if path.resolve() == generated:
            continue
        text = path.read_text(encoding="utf-8")
        if f'"{version}"' in text or f"'{version}'" in text:
            problems.append(
                f"{path.relative_to(ROOT)}: spells the version; read azureml_inference_server_http.__version__"
            )
    return problems


if __name__ == "__main__":
    sys.exit(main())
