"""The calibrated time budgets: a factor of at least 1, a floor from the environment, limits that stay failable."""

from __future__ import annotations

import threading

import pytest
from azmlinfsrv_testing import timing


def test_machine_factor_is_between_one_and_the_cap() -> None:
    assert 1.0 <= timing.machine_factor() <= timing.MAX_FACTOR


def test_machine_factor_grows_while_the_cpu_is_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    # A thread spinning in this process takes the GIL half of the time: the same work takes about twice as long.
    monkeypatch.setattr(timing, "REFERENCE_SECONDS", 1e-9)  # every sample is over the reference: compare raw figures
    monkeypatch.setattr(timing, "MAX_FACTOR", float("inf"))
    idle = timing.machine_factor()
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        busy = timing.machine_factor()
    finally:
        stop.set()
        spinner.join()
    assert busy > 1.3 * idle, (busy, idle)


def test_the_environment_sets_a_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(timing.FACTOR_ENV, "4")
    assert timing.machine_factor() >= 4.0
    assert timing.time_budget(0.5) >= 2.0
    monkeypatch.setenv(timing.FACTOR_ENV, "fast")
    with pytest.raises(ValueError, match=timing.FACTOR_ENV):
        timing.machine_factor()


def test_time_limit_adds_the_allowance_but_stays_below_the_failure() -> None:
    assert timing.allowance(0.1, 0.25, factor=2.0) == pytest.approx(0.8)
    assert timing.time_limit(1.0, 0.1, budget=0.25, factor=2.0) == pytest.approx(1.8)
    # However loaded the machine, the bound stays halfway between the expected time and the broken behaviour's.
    assert timing.time_limit(1.0, 0.1, failure=5.0, factor=timing.MAX_FACTOR, budget=10.0) == pytest.approx(3.0)


def test_latency_is_the_median_of_the_samples() -> None:
    durations = iter([0.0, 0.05, 0.0])
    calls = []

    def call() -> None:
        calls.append(1)
        pause = next(durations)
        if pause:
            threading.Event().wait(pause)

    assert 0.0 <= timing.latency(call, samples=3) < 0.05
    assert len(calls) == 3
