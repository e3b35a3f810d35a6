"""Every reference the code makes to the documentation resolves in a clone of the repository.

Comments, docstrings and pages cite rules as ``docs/<page>.md#<anchor>`` and reliability guarantees by code (``R13``,
``W6``). These tests check that each cited page and anchor exists (anchors computed as Python-Markdown's ``toc``
extension computes them, or given explicitly with ``{#id}``), that each code has its heading in
``docs/guarantees.md``, and that nothing cites a planning document that is not part of the repository.
"""

from __future__ import annotations

import io
import re
import tokenize
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import ROOT

# Documents that exist outside the repository; a reference to one cannot be followed from a clone.
OUTSIDE_DOCUMENT = re.compile(
    r"\b(?:BEHAVIOR|RELIABILITY|WORKER-STUDY|PERFORMANCE)\.md\b"  # planning documents
    r"|(?<![\w.-])(?:/[\w.-]+)*/shared[/]|(?<![\w/.-])shared[/]"  # the folder they live in, absolute or relative
)
# docs/<page>.md, with an optional #anchor, anywhere in a scanned file.
DOCS_REFERENCE = re.compile(r"(?<![\w/.-])docs/([\w-]+(?:/[\w-]+)*\.md)(?:#([\w-]*))?")
# A Markdown link from one page to another page of the site, or to an anchor of the same page.
PAGE_LINK = re.compile(r"\]\((?!https?:|mailto:)([\w-]+(?:/[\w-]+)*\.md)?(?:#([\w-]*))?\)")
# A reliability code: W1..W14 (upstream's weak points) and R1..Rn (the guarantees).
CODE = re.compile(r"\b([RW])(\d{1,3})\b")

# Folders that hold no project source: virtual environments, build output, caches, generated sites.
SKIPPED_DIRS = {"site", "build", "dist", "node_modules", "__pycache__"}
# Hidden folders that are part of the project.
KEPT_HIDDEN_DIRS = {".ci", ".github"}
# Files scanned outside .ci/, .github/ and deploy/ (which are scanned whole).
SCANNED_SUFFIXES = {".py", ".md", ".toml", ".yml", ".yaml", ".cfg", ".ini", ".sh", ".txt"}
WHOLE_DIRS = {".ci", ".github", "deploy"}

HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
EXPLICIT_ID = re.compile(r"\{:?[^}]*?#([\w-]+)[^}]*\}\s*$")
HTML_ID = re.compile(r"<a\s[^>]*?\b(?:id|name)=[\"']([^\"']+)[\"']")
FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Problem:
    """One broken reference: where it is and what is wrong."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def slugify(text: str) -> str:
    """The id Python-Markdown's ``toc`` extension gives a heading (its default ``slugify``, separator ``-``)."""
    value = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def _heading_text(markdown: str) -> str:
    """The text a heading renders to: links by their text, without code ticks, emphasis or HTML tags."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "")
    return re.sub(r"(\*\*|__|\*)", "", text)


def page_anchors(text: str) -> set[str]:
    """Every anchor a Markdown page defines: heading ids (explicit or generated) and HTML ``id``/``name``."""
    explicit: set[str] = set()
    generated: list[str] = []
    html: set[str] = set()
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        html.update(HTML_ID.findall(line))
        match = HEADING.match(line)
        if not match:
            continue
        given = EXPLICIT_ID.search(match.group(2))
        if given:
            explicit.add(given.group(1))
        else:
            generated.append(slugify(_heading_text(match.group(2))))
    # toc keeps explicit ids as they are and makes each generated one unique against every id before it: _1, _2...
    used = set(explicit)
    for slug in generated:
        unique, count = slug, 0
        while unique in used:
            count += 1
            unique = f"{slug}_{count}"
        used.add(unique)
    return used | html


def scanned_files(root: Path) -> Iterator[Path]:
    """The project's sources, tests, tooling, deployment files and pages, without environments or build output."""
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        parts = path.relative_to(root).parts
        folders = parts[:-1]
        if any(p in SKIPPED_DIRS or p.endswith(".egg-info") for p in folders):
            continue
        if any(p.startswith(".") and p not in KEPT_HIDDEN_DIRS for p in folders):
            continue
        if folders and folders[0] in WHOLE_DIRS:
            yield path
        elif path.suffix in SCANNED_SUFFIXES or path.name.startswith("Dockerfile"):
            yield path


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary files (images) hold no references


def code_text(path: Path, text: str) -> Iterator[tuple[int, str]]:
    """The prose of a file, by line: comments and strings of Python sources, every line of the others."""
    if path.suffix != ".py":
        yield from enumerate(text.splitlines(), start=1)
        return
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        yield from enumerate(text.splitlines(), start=1)
        return
    for token in tokens:
        if token.type in (tokenize.COMMENT, tokenize.STRING) or token.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            for offset, line in enumerate(token.string.splitlines()):
                yield token.start[0] + offset, line


def find_problems(root: Path, exclude: frozenset[Path] = frozenset()) -> list[Problem]:
    """Every broken documentation reference under ``root``, a checkout of the repository, outside ``exclude``."""
    docs = root / "docs"
    anchors: dict[str, set[str]] = {}

    def anchors_of(page: str) -> set[str] | None:
        if page not in anchors:
            file = docs / page
            if not file.is_file():
                return None
            anchors[page] = page_anchors(file.read_text(encoding="utf-8"))
        return anchors[page]

    def check(where: str, number: int, page: str, anchor: str | None, shown: str) -> Problem | None:
        found = anchors_of(page)
        if found is None:
            return Problem(where, number, f"{shown}: docs/{page} does not exist")
        if anchor is not None and anchor not in found:
            return Problem(where, number, f"{shown}: docs/{page} has no anchor #{anchor}")
        return None

    problems: list[Problem] = []
    guarantees = anchors_of("guarantees.md") or set()
    for path in scanned_files(root):
        if path in exclude:
            continue
        text = _read(path)
        if text is None:
            continue
        where = path.relative_to(root).as_posix()
        is_page = path.parent == docs and path.suffix == ".md"
        for number, line in enumerate(text.splitlines(), start=1):
            for match in OUTSIDE_DOCUMENT.finditer(line):
                problems.append(Problem(where, number, f"cites {match.group(0)!r}, which is not in the repository"))
            for match in DOCS_REFERENCE.finditer(line):
                problem = check(where, number, match.group(1), match.group(2), match.group(0))
                if problem:
                    problems.append(problem)
            if is_page:
                for match in PAGE_LINK.finditer(line):
                    page = match.group(1) or path.name
                    problem = check(where, number, page, match.group(2), match.group(0))
                    if problem:
                        problems.append(problem)
        for number, line in code_text(path, text):
            for match in CODE.finditer(line):
                if match.group(0).lower() not in guarantees:
                    problems.append(Problem(where, number, f"{match.group(0)} has no heading in docs/guarantees.md"))
    return problems


def test_every_documentation_reference_resolves() -> None:
    # This file is left out: its examples of broken references are broken on purpose.
    problems = find_problems(ROOT, exclude=frozenset({Path(__file__).resolve()}))
    assert not problems, "broken documentation references:\n" + "\n".join(map(str, problems))


def test_the_scan_covers_code_tests_tooling_and_pages() -> None:
    scanned = {p.relative_to(ROOT).as_posix() for p in scanned_files(ROOT)}
    expected = {
        "noxfile.py",
        "docs/guarantees.md",
        "docs/compatibility.md",
        "packages/core/src/azureml_inference_server_http/server/app.py",
        "packages/cli/src/azmlinfsrv/servers/loop_worker.py",
        "tests/fuzz/test_smuggling.py",
        "deploy/Dockerfile",
    }
    assert expected <= scanned
    assert not [p for p in scanned if ".venv" in p or "/site/" in p or p.startswith("site/")]


def test_codes_in_use_are_the_ones_defined() -> None:
    # The two pages the code cites define an anchor for each code and each section it names.
    guarantees = page_anchors((ROOT / "docs" / "guarantees.md").read_text(encoding="utf-8"))
    assert {f"w{n}" for n in range(1, 15)} <= guarantees
    assert {f"r{n}" for n in range(1, 33)} <= guarantees
    compatibility = page_anchors((ROOT / "docs" / "compatibility.md").read_text(encoding="utf-8"))
    assert {"request-ids", "score", "model-data-collection", "cors", "swagger"} <= compatibility


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("## Measured by `nox -s reliability`", "measured-by-nox-s-reliability"),
        ("## Outage behaviour (R20)", "outage-behaviour-r20"),
        ("### Request smuggling probes (R13)", "request-smuggling-probes-r13"),
        ("## The instrumentation key is never shown", "the-instrumentation-key-is-never-shown"),
        ("## config.json", "configjson"),
        ("### Typed parameters (`@input_schema`)", "typed-parameters-input_schema"),
        ("### [Linked](other.md) heading", "linked-heading"),
        ("### R13: request smuggling is refused {#r13}", "r13"),
        ("## Start-up failures and exit codes {: #startup-failures }", "startup-failures"),
    ],
)
def test_anchors_are_computed_as_the_site_builds_them(heading: str, anchor: str) -> None:
    assert anchor in page_anchors(heading + "\n")


def test_repeated_headings_and_fenced_code() -> None:
    text = '## Notes\n\n```python\n# not a heading\n```\n\n## Notes\n<a id="custom"></a>\n'
    assert page_anchors(text) == {"notes", "notes_1", "custom"}


def test_an_explicit_id_takes_precedence_over_a_generated_one() -> None:
    # As toc does: the explicit id is kept, the heading whose generated id collides with it gets a suffix.
    assert page_anchors("# Guarantees\n\n## What holds {#guarantees}\n") == {"guarantees", "guarantees_1"}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return tmp_path


GOOD_DOCS = {
    "docs/guarantees.md": "# Guarantees\n\n### R13: smuggling {#r13}\n\n### W6: liveness {#w6}\n",
    "docs/compatibility.md": "# Rules\n\n### Request ids {#request-ids}\n\n## Plain heading\n",
}


def test_a_repository_with_resolving_references_has_no_problems(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            **GOOD_DOCS,
            "pkg/mod.py": '"""Ids (docs/compatibility.md#request-ids)."""\n# R13, W6: docs/guarantees.md#r13\nx = 1\n',
            "docs/index.md": "See [rules](compatibility.md#plain-heading) and [top](#intro).\n\n## Intro\n",
        },
    )
    assert find_problems(root) == []


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("pkg/a.py", "# see docs/compatibility.md#request-id\n", "docs/compatibility.md has no anchor #request-id"),
        ("pkg/b.py", '"""See docs/missing.md#x."""\n', "docs/missing.md does not exist"),
        ("pkg/c.py", "# the server never stalls (R99)\n", "R99 has no heading in docs/guarantees.md"),
        ("pkg/d.py", 'MESSAGE = "W15 is not defined"\n', "W15 has no heading in docs/guarantees.md"),
        ("noxfile.py", '"""Rules of BEHAVIOR' + '.md §2.3."""\n', "which is not in the repository"),
        (".ci/run", "cat /srv/team/" + "shared/x\n", "which is not in the repository"),
        ("tools/t.py", "# as shared" + "/notes.md says\n", "which is not in the repository"),
        ("deploy/Dockerfile", "# per RELIABILITY" + ".md\n", "which is not in the repository"),
        ("docs/page.md", "[broken](compatibility.md#nowhere)\n", "docs/compatibility.md has no anchor #nowhere"),
        ("docs/other.md", "[self](#missing-section)\n\n## Present\n", "docs/other.md has no anchor #missing-section"),
        ("docs/more.md", "A guarantee, R40, that nobody wrote down.\n", "R40 has no heading in docs/guarantees.md"),
    ],
)
def test_a_broken_reference_is_reported(tmp_path: Path, name: str, content: str, expected: str) -> None:
    root = _tree(tmp_path, {**GOOD_DOCS, name: content})
    problems = find_problems(root)
    assert len(problems) == 1, problems
    assert problems[0].path == name
    assert expected in problems[0].message


def test_a_project_folder_named_shared_is_not_an_outside_document(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**GOOD_DOCS, "pkg/m.py": "# see packages/shared/util.py\n"})
    assert find_problems(root) == []


def test_code_outside_comments_and_strings_is_not_read_as_a_code(tmp_path: Path) -> None:
    # Only the prose of Python files is scanned for codes: names such as R2 in code are not citations.
    root = _tree(tmp_path, {**GOOD_DOCS, "pkg/m.py": "R2 = 2\nW3 = R2 + 1\n"})
    assert find_problems(root) == []
