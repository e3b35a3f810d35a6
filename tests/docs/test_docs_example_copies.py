"""Code blocks in the docs that copy an example file stay equal to that file, byte for byte.

The pages show the examples' code itself, so that it reads the same on GitHub as on the site (GitHub shows include
markers such as mkdocs' snippets literally). A copy is an HTML comment naming the file, then a fenced block:

    <!-- example: examples/score.py -->

    ```python
    ...the file's exact content...
    ```

After editing an example, refresh every copy with ``python tests/docs/test_docs_example_copies.py --write``.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(rb"^<!-- example: (\S+) -->\r?\n", re.MULTILINE)
FENCE = re.compile(rb"^(`{3,})[\w-]*\r?\n", re.MULTILINE)
# Include markers that only a documentation build expands; GitHub shows them as text.
INCLUDE_MARKERS = (b"--8<--", b"{% include", b"```{literalinclude")
# Every example that a page shows in full: a copy that disappears fails the test.
EXPECTED_COPIES = {
    "README.md": set(),
    "custom-host.md": {"examples/custom_host/host.py"},
    "getting-started.md": {"examples/score.py"},
    "score-script.md": {
        "examples/numpy_model/score.py",
        "examples/rawhttp_binary/score.py",
        "examples/streaming/score.py",
    },
    "testing.md": {"examples/test_score.py"},
}


@dataclass
class Copy:
    page: Path
    source: str
    start: int  # offset of the block's first content byte
    end: int  # offset of the closing fence
    content: bytes


def find_copies(page: Path) -> list[Copy]:
    """Every marked copy in ``page``; a marker not followed by a fenced block is an error."""
    data = page.read_bytes()
    copies: list[Copy] = []
    for marker in MARKER.finditer(data):
        rest = data[marker.end() :]
        blank = re.match(rb"(?:[ \t]*\r?\n)*", rest)
        offset = marker.end() + (blank.end() if blank else 0)
        fence = FENCE.match(data, offset)
        assert fence, f"{page.name}: the marker for {marker.group(1).decode()} is not followed by a fenced block"
        ticks = fence.group(1)
        closing = re.compile(rb"^" + ticks + rb"[ \t]*\r?$", re.MULTILINE).search(data, fence.end())
        assert closing, f"{page.name}: the block copying {marker.group(1).decode()} is not closed"
        copies.append(
            Copy(page, marker.group(1).decode(), fence.end(), closing.start(), data[fence.end() : closing.start()])
        )
    return copies


def write_copies(page: Path) -> bool:
    """Replace every copy in ``page`` with its file's current content; True when the page changed."""
    data = page.read_bytes()
    for copy in reversed(find_copies(page)):
        data = data[: copy.start] + (ROOT / copy.source).read_bytes() + data[copy.end :]
    if data == page.read_bytes():
        return False
    page.write_bytes(data)
    return True


# -- tests -----------------------------------------------------------------------------------------------------------


def test_every_copy_equals_its_example_file() -> None:
    for page in PAGES:
        for copy in find_copies(page):
            source = ROOT / copy.source
            assert source.is_file(), f"{page.name} copies {copy.source}, which does not exist"
            expected = source.read_bytes()
            if copy.content != expected:
                diff = "".join(
                    difflib.unified_diff(
                        expected.decode("utf-8").splitlines(keepends=True),
                        copy.content.decode("utf-8").splitlines(keepends=True),
                        copy.source,
                        f"{page.name} (copy)",
                    )
                )
                raise AssertionError(
                    f"{page.name}'s copy of {copy.source} differs from the file; run "
                    f"`python tests/docs/test_docs_example_copies.py --write`:\n{diff}"
                )


def test_the_pages_show_every_expected_example() -> None:
    shown = {page.name: {copy.source for copy in find_copies(page)} for page in PAGES}
    for name, expected in EXPECTED_COPIES.items():
        assert shown[name] == expected, name
    assert not {name for name, sources in shown.items() if sources} - set(EXPECTED_COPIES)


def test_no_page_uses_an_include_marker() -> None:
    for page in PAGES:
        data = page.read_bytes()
        for marker in INCLUDE_MARKERS:
            assert marker not in data, f"{page.name} uses {marker.decode()}, which GitHub shows as text"


def test_a_changed_example_is_caught_and_rewritten(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    good = (ROOT / "examples" / "score.py").read_bytes()
    page.write_bytes(b"# Page\n\n<!-- example: examples/score.py -->\n\n```python\nstale\n```\n\nafter\n")
    (copy,) = find_copies(page)
    assert copy.content == b"stale\n"
    assert write_copies(page)
    (copy,) = find_copies(page)
    assert copy.content == good
    assert page.read_bytes().endswith(b"```\n\nafter\n")
    assert not write_copies(page)


def test_a_marker_without_a_block_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_bytes(b"<!-- example: examples/score.py -->\n\nSome text.\n")
    with pytest.raises(AssertionError, match="not followed by a fenced block"):
        find_copies(page)


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print("usage: python tests/docs/test_docs_example_copies.py --write", file=sys.stderr)
        return 2
    for page in PAGES:
        if write_copies(page):
            print(f"updated {page.relative_to(ROOT).as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
