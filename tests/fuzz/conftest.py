"""Options, budgets and the results recorder of the fuzz suite.

``nox -s fuzz`` runs a short smoke of everything; ``nox -s fuzz -- --fuzz-long`` runs the long campaign and, with
``--fuzz-docs docs/reliability-fuzz.md``, rewrites the published counts. Every loop in the suite is bounded by both
a count and a time budget taken from here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest

from .report import write_docs


@dataclass(frozen=True)
class Budget:
    runs: int  # executions per atheris/hypothesis target
    seconds: int  # seconds per atheris/hypothesis target
    examples: int  # schemathesis examples per operation
    engine: str  # "auto", "atheris" or "hypothesis"
    seed: int | None  # schemathesis seed; None for a random one
    long: bool


@dataclass
class Results:
    """What every test measured; written as JSON and rendered into the docs at the end of the session."""

    budget: Budget
    started: float = field(default_factory=time.time)
    sections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)

    def add(self, section: str, record: dict[str, Any]) -> None:
        self.sections.setdefault(section, []).append(record)

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget.__dict__,
            "started": self.started,
            "finished": time.time(),
            "sections": self.sections,
            "outcomes": self.outcomes,
        }


_RESULTS_KEY = pytest.StashKey[Results]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fuzz", "azmlinfsrv fuzz suite")
    group.addoption("--fuzz-long", action="store_true", help="the long campaign instead of the smoke budgets")
    group.addoption("--fuzz-runs", type=int, default=None, help="executions per parser target (smoke: 5000)")
    group.addoption("--fuzz-seconds", type=int, default=None, help="seconds per parser target (smoke: 15)")
    group.addoption("--fuzz-examples", type=int, default=None, help="schemathesis examples per operation (smoke: 20)")
    group.addoption("--fuzz-engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    group.addoption("--fuzz-seed", type=int, default=None, help="schemathesis seed (smoke: fixed; long: random)")
    group.addoption("--fuzz-results", default=None, help="write the measured counts to this JSON file")
    group.addoption("--fuzz-docs", default=None, help="render the counts into this Markdown file")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "schemathesis: runs schemathesis against a real server (slow)")
    long = bool(config.getoption("--fuzz-long"))
    runs = config.getoption("--fuzz-runs")
    seconds = config.getoption("--fuzz-seconds")
    examples = config.getoption("--fuzz-examples")
    seed = config.getoption("--fuzz-seed")
    budget = Budget(
        runs=runs if runs is not None else (5_000_000 if long else 5000),
        seconds=seconds if seconds is not None else (120 if long else 15),
        examples=examples if examples is not None else (400 if long else 20),
        engine=str(config.getoption("--fuzz-engine")),
        seed=seed if seed is not None else (None if long else 20240501),
        long=long,
    )
    config.stash[_RESULTS_KEY] = Results(budget)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    results = item.config.stash.get(_RESULTS_KEY, None)
    if results is not None and (report.when == "call" or report.outcome != "passed"):
        name = report.nodeid.split("tests/fuzz/", 1)[-1]
        if report.outcome != "passed" or name not in results.outcomes:
            results.outcomes[name] = report.outcome
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    results = session.config.stash.get(_RESULTS_KEY, None)
    if results is None:
        return
    data = results.as_dict()
    data["exit_status"] = int(exitstatus)
    target = session.config.getoption("--fuzz-results")
    if target:
        Path(target).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    docs = session.config.getoption("--fuzz-docs")
    if docs:
        write_docs(Path(docs), data)


@pytest.fixture(scope="session")
def fuzz_budget(pytestconfig: pytest.Config) -> Budget:
    return pytestconfig.stash[_RESULTS_KEY].budget


@pytest.fixture(scope="session")
def fuzz_results(pytestconfig: pytest.Config) -> Iterator[Results]:
    yield pytestconfig.stash[_RESULTS_KEY]
