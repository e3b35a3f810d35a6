"""The serving processes' glibc malloc settings: applied where glibc is, and never over the user's own."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest
from azmlinfsrv.servers import allocator


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    except OSError:
        return False


glibc_only = pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's")

_PROBE = "from azmlinfsrv.servers import allocator; print(sorted(allocator.tune()))"


def _tune_in_child(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env={**clean, **env}, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


@glibc_only
def test_every_setting_is_applied() -> None:
    expected = sorted(parameter for parameter, _, _ in allocator.SETTINGS)
    assert _tune_in_child() == str(expected)


@glibc_only
def test_a_variable_the_user_set_wins() -> None:
    expected = sorted(p for p, _, variable in allocator.SETTINGS if variable != allocator.ARENA_MAX_ENV)
    assert _tune_in_child(**{allocator.ARENA_MAX_ENV: "8"}) == str(expected)


def test_the_mmap_threshold_stays_above_one_socket_read() -> None:
    # A read at or above the threshold would be mapped and unmapped on every recv.
    from azmlinfsrv.servers.loop_worker import READ_SIZE

    threshold = next(value for parameter, value, _ in allocator.SETTINGS if parameter == allocator.M_MMAP_THRESHOLD)
    assert threshold > READ_SIZE + 64
