"""The CI recipe of docs/testing.md works when copied: real refs, paths that exist here, flags the command has.

A user copies the job into a repository of their own, so it can only rely on what this repository holds: the
paths it installs are checked against this checkout, and a ``ref:`` must be a commit SHA (a tag named in the docs
may never have been made, and then the copied job fails at its checkout).
"""

from __future__ import annotations

import copy
import re
import shlex
from typing import Any

import pytest
import yaml

from .conftest import ROOT
from .conftest import doc_sections
from .conftest import read_doc
from .test_docs_reference import validate_flags

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
# Every distribution of the project: the recipe installs them all, in one pip call.
DISTRIBUTIONS = {"packages/core", "packages/cli", "packages/appinsights", "packages/testing", "packages/otel", "."}


def recipe() -> dict[str, Any]:
    section = doc_sections(read_doc("testing.md"))["In CI"]
    blocks = re.findall(r"^```yaml\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "the CI section should hold one workflow"
    workflow = yaml.safe_load(blocks[0])
    assert isinstance(workflow, dict)
    return workflow


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def commands(step: dict[str, Any]) -> list[list[str]]:
    """The shell commands of a ``run:`` step, continuations joined, each split into words."""
    text = re.sub(r"\\\n", " ", str(step.get("run", "")))
    return [shlex.split(line) for line in text.splitlines() if line.strip()]


def recipe_problems(workflow: dict[str, Any]) -> list[str]:
    """What would make the copied job fail, judged against this checkout."""
    problems: list[str] = []
    server_paths = []
    for step in steps(workflow):
        if not str(step.get("uses", "")).startswith("actions/checkout@"):
            continue
        options = step.get("with") or {}
        ref = options.get("ref")
        if ref is not None and not COMMIT_SHA.fullmatch(str(ref)):
            problems.append(f"checkout ref {ref!r} is not a commit SHA")
        if "repository" in options:
            if "path" not in options:
                problems.append("the server's checkout has no path: it would replace the user's own checkout")
            else:
                server_paths.append(str(options["path"]).strip("./"))
    if len(server_paths) != 1:
        problems.append(f"expected one checkout of the server's repository, found {len(server_paths)}")
        return problems
    prefix = server_paths[0]
    installs = []
    for step in steps(workflow):
        words_list = commands(step)
        bash = step.get("shell") == "bash"
        if any(words[:1] in (["if"], ["["]) for words in words_list) and not bash:
            problems.append(f"step {step.get('name')!r} uses POSIX shell syntax without `shell: bash` (Windows)")
        for words in words_list:
            if "-r" in words:
                # The user's repository may have no requirements file: `if [ -f X ]; then pip install -r X; fi`.
                required = words[words.index("-r") + 1].rstrip(";")
                if not re.search(rf"\[ -f {re.escape(required)} \]", " ".join(words)):
                    problems.append(f"{required} is installed without checking that it exists")
            if "pip" in words and "install" in words and "-r" not in words:
                installs.append(words[words.index("install") + 1 :])
            if words[:2] == ["azmlinfsrv", "validate"]:
                unknown = {word for word in words if word.startswith("--")} - validate_flags()
                if unknown:
                    problems.append(f"azmlinfsrv validate has no flags {sorted(unknown)}")
    local = [[arg for arg in args if not arg.startswith("-")] for args in installs]
    if len(local) != 1:
        problems.append(f"expected one pip call installing the server, found {len(local)}")
        return problems
    installed = set()
    for arg in local[0]:
        relative = arg.removeprefix("./")
        if relative != prefix and not relative.startswith(prefix + "/"):
            problems.append(f"{arg} is not inside the server's checkout ({prefix})")
            continue
        inside = relative[len(prefix) :].strip("/") or "."
        if not (ROOT / inside / "pyproject.toml").is_file():
            problems.append(f"{arg}: this repository has no project at {inside}")
        installed.add(inside)
    if installed != DISTRIBUTIONS:
        problems.append(f"the pip call installs {sorted(installed)}, not every distribution {sorted(DISTRIBUTIONS)}")
    return problems


def test_the_recipe_runs_when_copied() -> None:
    assert recipe_problems(recipe()) == []


def test_the_recipe_checks_out_the_default_branch_or_a_commit() -> None:
    checkout = [step for step in steps(recipe()) if "repository" in (step.get("with") or {})]
    assert len(checkout) == 1
    ref = checkout[0]["with"].get("ref")
    assert ref is None or COMMIT_SHA.fullmatch(ref)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: s["with"].update(ref="v1.6.0"), "is not a commit SHA"),
        (lambda s: s["with"].update(ref="main"), "is not a commit SHA"),
        (lambda s: s["with"].pop("path"), "has no path"),
        (lambda s: s["with"].update(path="server"), "is not inside the server's checkout"),
    ],
)
def test_the_checker_catches_a_broken_checkout(change: Any, problem: str) -> None:
    workflow = copy.deepcopy(recipe())
    (checkout,) = [step for step in steps(workflow) if "repository" in (step.get("with") or {})]
    change(checkout)
    assert any(problem in found for found in recipe_problems(workflow)), recipe_problems(workflow)


def test_the_checker_catches_a_missing_package_and_an_unguarded_requirements_file() -> None:
    workflow = copy.deepcopy(recipe())
    (install,) = [step for step in steps(workflow) if "pip install" in str(step.get("run", ""))]
    install["run"] = str(install["run"]).replace("packages/appinsights", "packages/insights")
    install["run"] = re.sub(r"if \[ -f requirements.txt \]; then (.*?); fi", r"\1", install["run"])
    install["run"] += "\nif [ -f requirements.txt ]; then python -m pip install -r other.txt; fi\n"
    found = "\n".join(recipe_problems(workflow))
    assert "no project at packages/insights" in found
    assert "requirements.txt is installed without checking" in found
    assert "other.txt is installed without checking" in found
