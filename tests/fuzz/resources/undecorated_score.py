"""An undecorated run(): the body arrives as text; the answer is a JSON object whatever the text is."""

from __future__ import annotations

import json


def init() -> None:
    print("undecorated fuzz script ready")


def run(raw_data: str) -> dict[str, object]:
    try:
        parsed = json.loads(raw_data)
    except ValueError:
        parsed = None
    return {"length": len(raw_data), "kind": type(parsed).__name__}
