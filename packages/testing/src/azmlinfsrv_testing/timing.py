"""Time budgets that scale with how fast this machine runs right now, for tests that bound how long something takes.

A bound such as "the timeout answers within 0.25 s of the limit" holds on an idle laptop and fails on a loaded
two-core CI runner. :func:`machine_factor` times a fixed piece of pure-Python work and compares it with how long
that work takes on an idle reference machine; :func:`time_budget` multiplies a budget by it. A test that can
measure its own baseline (the latency of a plain request to the same server, one run's real duration) should prefer
that; a budget covers the fixed overheads no baseline captures.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable

__all__ = ["FACTOR_ENV", "MAX_FACTOR", "allowance", "latency", "machine_factor", "time_budget", "time_limit"]

# Wall-clock seconds the calibration work takes on an idle reference machine (a 2020s x86-64 core, CPython 3.12:
# 0.010 s to 0.014 s of CPU time).
REFERENCE_SECONDS = 0.012
_ITERATIONS = 200_000
_SAMPLES = 5
# A factor this large means the machine is too overloaded for any time bound to tell working code from broken
# code; capping it keeps every budget small enough that a test can still fail.
MAX_FACTOR = 10.0
# A floor for the factor, e.g. on a CI runner known to be shared: the measured factor is never below it.
FACTOR_ENV = "AZMLINFSRV_TEST_TIME_FACTOR"


def _work() -> int:
    total = 0
    for number in range(_ITERATIONS):
        total += number * number
    return total


def machine_factor() -> float:
    """How many times slower than the reference machine this one runs now: at least 1, at most :data:`MAX_FACTOR`.

    Measured anew on every call (about 0.1 s on an idle machine), as the median of five short samples, so it follows
    the load at the time of the test: a CPU-bound process competing for the cores makes it larger. The environment
    variable ``AZMLINFSRV_TEST_TIME_FACTOR`` sets a floor.
    """
    samples = []
    for _ in range(_SAMPLES):
        started = time.perf_counter()
        _work()
        samples.append((time.perf_counter() - started) / REFERENCE_SECONDS)
    factor = max(1.0, statistics.median(samples), _floor_from_env())
    return min(factor, MAX_FACTOR)


def _floor_from_env() -> float:
    raw = os.environ.get(FACTOR_ENV, "")
    try:
        return float(raw) if raw else 1.0
    except ValueError:
        raise ValueError(f"{FACTOR_ENV} must be a number, not {raw!r}") from None


def time_budget(seconds: float, *, factor: float | None = None) -> float:
    """``seconds`` on the reference machine, scaled to this one: ``seconds * machine_factor()``.

    Pass ``factor`` to reuse one measurement for several budgets in the same test.
    """
    return seconds * (machine_factor() if factor is None else factor)


def latency(call: Callable[[], object], samples: int = 3) -> float:
    """The median wall-clock seconds of ``call()`` over ``samples`` calls: a baseline taken in the test itself, e.g.
    a plain request to the server under test, so it carries whatever load the machine is under."""
    durations = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def allowance(baseline: float, budget: float = 0.25, *, factor: float | None = None) -> float:
    """Slack for a time bound: three ``baseline`` latencies (the overhead of a few requests right now) plus
    ``budget`` seconds scaled by :func:`machine_factor` (the fixed costs no baseline captures)."""
    return 3 * baseline + time_budget(budget, factor=factor)


def time_limit(
    expected: float, baseline: float, *, failure: float = math.inf, budget: float = 0.25, factor: float | None = None
) -> float:
    """The bound to assert for something that should take ``expected`` seconds: ``expected`` plus
    :func:`allowance`, but never more than halfway from ``expected`` to ``failure``, the time the broken behaviour
    would take (e.g. the full ``run()`` a scoring timeout must cut short), so that the assertion can still fail.

    ``assert elapsed < time_limit(1.0, baseline, failure=5.0)``
    """
    return expected + min(allowance(baseline, budget, factor=factor), (failure - expected) / 2)
