"""Fail when the five distributions drift apart: one version for all, siblings pinned with ==."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "pyproject.toml", *sorted((ROOT / "packages").glob("*/pyproject.toml"))]


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
    for problem in problems:
        print(problem)
    print(f"{len(FILES)} distributions at version {version}" if not problems else "version check failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
