"""Timing and memory helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import resource
import time
from typing import Any


def rss_mib(field: str) -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc, in MiB (Linux only)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and its wall-clock seconds."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def timed_peak_growth(fn, *args, **kwargs) -> tuple[Any, float, float]:
    """``fn(*args)``, its seconds, and its peak resident memory above that before the call, MiB.

    Resets the kernel's peak counter first (``/proc/self/clear_refs``, Linux >= 4.0), so torch
    allocations count too; elsewhere falls back to ``ru_maxrss``, which only shows growth past
    the earlier peak of the process.
    """
    before = rss_mib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        before = None
    if before is None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result, seconds = timed(fn, *args, **kwargs)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        result, seconds = timed(fn, *args, **kwargs)
        peak = rss_mib("VmHWM") or before
    return result, seconds, max(0.0, peak - before)
