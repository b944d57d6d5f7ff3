"""Two memory habits of processes that build millions of objects at once: pausing the cyclic
garbage collector around the building, and giving the freed heap back to the system after."""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block.

    Building millions of container objects (a load's rows, a cycle plan's records) starts a
    collection every 700 allocations, and the oldest generation's collections walk every object
    the process keeps, again and again. What the block builds holds no reference cycles, so
    nothing is lost by waiting; it is collected later as usual."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def trim_heap() -> None:
    """Return the C heap's free memory to the system (glibc's ``malloc_trim``; elsewhere
    nothing): millions of short-lived objects leave it fragmented, and the process's resident
    size would keep the high-water mark of the last large job."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)
