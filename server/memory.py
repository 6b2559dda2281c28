"""glibc's malloc told to keep freed large blocks for the next request, instead of giving them back.

glibc serves every block above its mmap threshold (128 KiB at first) from a fresh mmap, and gives
back the top of the heap once 128 KiB of it is free. A large request allocates several such blocks
(protobuf's copy of the message, the input bytes, the answer and its encoding), so each one cost a
fresh mmap whose every page faults and is zeroed on first touch, and a munmap after: on a 65,536-row
request that was about half of a worker's CPU (perf: clear_page, exc_page_fault under memmove).
With both thresholds raised, freed blocks are reused; memory is held up to what the largest
requests needed at once, no more; under a cgroup memory limit a worker's heaps keep at most an eighth
of its share (2 workers in a 1 GiB pod: 64 MiB each), since kept memory counts against the limit
like any other (the pod-limits run held 974 MiB of 1 GiB with 256 MiB kept, docs/reliability.md).
FORWARDPASS_MALLOC=glibc leaves glibc's own thresholds, so that
the benchmark measures the path before beside this one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

from .cgroup import memory_limit

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest on 64-bit: blocks below it come from the heap
TRIM_THRESHOLD = 256 * 2**20  # free memory a heap keeps before it shrinks


def kept_bytes(workers: int) -> int:
    """Freed memory a worker's heaps keep before they shrink: TRIM_THRESHOLD, or an eighth of the
    worker's share of the cgroup's memory limit where that is less."""
    limit = memory_limit()
    return TRIM_THRESHOLD if limit is None else min(TRIM_THRESHOLD, limit // (8 * workers))


def keep_freed_memory(kept: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (the trim threshold to `kept` bytes);
    False where there is no glibc."""
    if os.environ.get("FORWARDPASS_MALLOC") == "glibc":
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # musl, macOS: no mallopt, and none of this applies
        return False
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, kept) == 1
    log.debug("malloc thresholds %s", "raised" if done else "left as they were")
    return done
