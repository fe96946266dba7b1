"""Keep freed host memory in the process, so a training step does not fault it back in.

PyTorch's CPU tensors come straight from the C library's ``malloc``. glibc serves blocks above
its mmap threshold (at most 32 MiB) with fresh ``mmap`` calls and unmaps them on ``free``, and
gives freed heap tops back to the OS above its trim threshold. A CPU training step allocates and
frees the same large activation and gradient buffers every step, so each step page-faults
them all in again: 540,000 minor faults and 1.8 s of kernel time in a 6.5 s ResNet-50-IBN-a
step at 128x128 on 2 cores, 1.4 million and 6.7 s in a 19 s stage-3 step
(``scripts/bench_vs_official.py``). With mmap off and the trim threshold out of reach, freed
blocks stay in the heap and are reused (3 faults a step); the process keeps its peak footprint.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_BYTES = 2**31 - 1  # mallopt takes an int: 2 GiB of free heap top kept before trimming


def keep_freed_memory() -> bool:
    """Tell glibc's ``malloc`` to serve large blocks from the heap and keep freed memory.

    Returns whether it applied (False off Linux/glibc, e.g. macOS or musl, where nothing is
    changed). Affects this process and the DataLoader workers it forks afterwards.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        applied = (
            libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
        )
    except (OSError, AttributeError):
        return False
    if applied:
        log.info("malloc keeps freed memory (no mmap for large blocks, no trimming)")
    return applied
