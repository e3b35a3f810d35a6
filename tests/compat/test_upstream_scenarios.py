"""The upstream-scenario runner's adaptations: what it extracts, whose ports it frees, what it expects to differ."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import upstream_scenarios  # noqa: E402


def _upstream_tree(root: Path) -> None:
    scenarios = root / "tests" / "azmlinfsrv"
    (scenarios / "scenarios").mkdir(parents=True)
    (scenarios / "__init__.py").write_text("")
    (scenarios / "scenarios" / "test_a.py").write_text("def test_a():\n    pass\n")


def test_extracts_scenarios_from_a_checkout_and_from_a_git_directory(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    _upstream_tree(checkout)
    upstream_scenarios._extract(checkout, "HEAD", tmp_path / "from-checkout" / "azmlinfsrv")
    assert (tmp_path / "from-checkout" / "azmlinfsrv" / "scenarios" / "test_a.py").is_file()

    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "scenarios"], check=True)
    (checkout / "tests" / "azmlinfsrv" / "scenarios" / "test_a.py").unlink()  # only the commit holds it now
    upstream_scenarios._extract(checkout / ".git", "HEAD", tmp_path / "from-git" / "azmlinfsrv")
    assert (tmp_path / "from-git" / "azmlinfsrv" / "scenarios" / "test_a.py").read_text().startswith("def test_a")


def test_unknown_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not an sdist"):
        upstream_scenarios._extract(tmp_path, "HEAD", tmp_path / "out")


def test_port_freeing_fixture_sees_only_this_runs_processes() -> None:
    def every_process() -> list[object]:
        return ["someone else's server"]

    conftest = types.ModuleType("azmlinfsrv.conftest")
    conftest.process_iter = every_process  # type: ignore[attr-defined]
    conftest.free_port = lambda: None  # type: ignore[attr-defined]
    upstream_scenarios.pytest_plugin_registered(conftest, None)
    assert conftest.process_iter is upstream_scenarios._own_processes  # type: ignore[attr-defined]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in {p.pid for p in conftest.process_iter()}  # type: ignore[attr-defined]
    finally:
        child.kill()
        child.wait()


def test_deliberate_differences_run_as_strict_expected_failures() -> None:
    class Item:
        def __init__(self, name: str) -> None:
            self.name = name
            self.markers: list[pytest.MarkDecorator] = []

        def add_marker(self, marker: pytest.MarkDecorator) -> None:
            self.markers.append(marker)

    deliberate, ordinary = Item(next(iter(upstream_scenarios.DELIBERATE))), Item("test_valid_entry_script_ok")
    upstream_scenarios.pytest_collection_modifyitems([deliberate, ordinary])
    assert [(m.name, m.kwargs["strict"]) for m in deliberate.markers] == [("xfail", True)]
    assert ordinary.markers == []
