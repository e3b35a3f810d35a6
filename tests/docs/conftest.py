"""Shared helpers for the documentation, deployment and example tests."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DEPLOY = ROOT / "deploy"
EXAMPLES = ROOT / "examples"


def read_doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def doc_sections(text: str) -> dict[str, str]:
    """The body under each ``## `` heading of a Markdown page, keyed by the heading text."""
    sections: dict[str, str] = {}
    parts = re.split(r"^## +(.+?)\s*$", text, flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2]):
        sections[heading] = body
    return sections


def table_first_cells(text: str) -> list[str]:
    """The backticked names in the first cell of every Markdown table row (``| `NAME` | ... |``)."""
    names: list[str] = []
    for line in text.splitlines():
        match = re.match(r"^\|\s*([^|]+?)\s*\|", line)
        if match:
            names += re.findall(r"`([^`]+)`", match.group(1))
    return names
