"""glibc malloc settings for a serving process, so that large request bodies do not leave memory behind.

A server process holds several request bodies at once (each connection's buffer, the bodies of requests waiting
for a scoring slot) and frees them a moment later, from several threads. With glibc's defaults that memory
stays in the process:

- blocks above the mmap threshold are returned to the system on free, but the threshold *rises* to the size of
  any such block freed (up to 32 MB), so after the first 1 MB body every later one is carved from the heap;
- every thread that allocates gets an arena of its own (up to 8 per core), and each arena keeps what it frees.

Measured with 1 MB JSON bodies from 8 connections on one worker: the worker peaked at 64-71 MB with the
defaults and at 47-50 MB with the settings below, with no measurable cost for 100 KB bodies. Fixed values turn
the rising threshold off. Python objects do not come from malloc arenas but from CPython's own allocator, and
only one thread runs Python at a time, so two arenas cost nothing in contention.

A ``MALLOC_*`` environment variable the user set wins over the value here. Other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt() parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# The environment variables glibc reads for them: a value the user set there wins.
MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"
TRIM_THRESHOLD_ENV = "MALLOC_TRIM_THRESHOLD_"
ARENA_MAX_ENV = "MALLOC_ARENA_MAX"

# (parameter, value, its environment variable)
SETTINGS = (
    # Blocks this large or larger (request bodies, their decoded text) are mapped for themselves and unmapped on
    # free. Above the 256 KB of one socket read, so reads keep coming from the heap.
    (M_MMAP_THRESHOLD, 512 * 1024, MMAP_THRESHOLD_ENV),
    # Free memory at the top of a heap is returned once it exceeds this; large enough not to give back and take
    # again the buffers of every request.
    (M_TRIM_THRESHOLD, 4 * 1024 * 1024, TRIM_THRESHOLD_ENV),
    (M_ARENA_MAX, 2, ARENA_MAX_ENV),
)


def tune() -> list[int]:
    """Apply the settings in this process, before its threads start; the parameters applied."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- only glibc has it; musl's mallopt() is a stub
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return []
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = []
    for parameter, value, variable in SETTINGS:
        if variable not in os.environ and mallopt(parameter, value) == 1:
            applied.append(parameter)
    return applied
