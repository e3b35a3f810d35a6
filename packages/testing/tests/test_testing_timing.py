"""The calibrated time budgets: a factor of at least 1, a floor from the environment, limits that stay failable."""

from __future__ import annotations

import threading

import pytest
from azmlinfsrv_testing import timing


def test_machine_factor_is_between_one_and_the_cap() -> None:
    assert 1.0 <= timing.machine_factor() <= timing.MAX_FACTOR


def test_machine_factor_follows_how_long_the_work_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that the calibration work advances by a chosen duration: the factor is the median duration over the
    # reference, so work that takes twice as long (a core shared with another process) doubles the factor. A
    # deterministic clock, because a real competing load makes the comparison as noisy as the machine it runs on.
    now = [0.0]
    durations: list[float] = []

    def work() -> int:
        now[0] += durations.pop(0)
        return 0

    monkeypatch.setattr(timing, "_work", work)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    reference = timing.REFERENCE_SECONDS
    durations[:] = [reference * 2, reference * 2, reference * 50, reference * 2, reference * 0.5]
    assert timing.machine_factor() == pytest.approx(2.0)  # the median: one slow sample does not move it
    durations[:] = [reference * 4] * 5
    assert timing.machine_factor() == pytest.approx(4.0)
    durations[:] = [reference * 0.3] * 5
    assert timing.machine_factor() == 1.0  # never below 1: a faster machine keeps the budgets as written
    durations[:] = [reference * 100] * 5
    assert timing.machine_factor() == timing.MAX_FACTOR


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
