"""Keep freed host memory in the process instead of handing it back to the kernel.

glibc serves every allocation above 32 MiB with a fresh mmap and unmaps it on free. An XLA CPU
program allocates its buffers anew on every call, so each call page-faults (and the kernel
zeroes) hundreds of MiB again (`benchmarks.train_throughput` with and without
--nokeep_freed_memory; figures in benchmarks/README.md). With mmap off and no trimming, freed blocks go back to malloc's heap and
the next call reuses them, already mapped.

The cost: the process keeps its peak heap for its lifetime, which a training run does anyway.
Other libraries in the process benefit too (PyTorch's CPU allocator goes through malloc as well),
so a benchmark must set it for every peer alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1

def keep_freed_memory() -> bool:
    """Sets glibc's malloc to never mmap and never trim; True if set. Setting it again is harmless.

    A no-op returning False where malloc is not glibc's (macOS, Windows, musl). The caller owns
    the answer (the experiment scripts record it in the run's summary): glibc cannot be asked.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # mallopt returns 1 on success, 0 on failure (e.g. musl's stub).
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, _INT_MAX) != 1:
        log.info("could not set malloc to keep freed memory; running with its defaults")
        return False
    return True
