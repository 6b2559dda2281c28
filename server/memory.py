"""glibc's malloc told to keep freed large blocks for the next request, instead of giving them back.

glibc serves every block above its mmap threshold (128 KiB at first) from a fresh mmap, and gives
back the top of the heap once 128 KiB of it is free. A large request allocates several such blocks
(protobuf's copy of the message, the input bytes, the answer and its encoding), so each one cost a
fresh mmap whose every page faults and is zeroed on first touch, and a munmap after: on a 65,536-row
request that was about half of a worker's CPU (perf: clear_page, exc_page_fault under memmove).
With both thresholds raised, freed blocks are reused; memory is held up to what the largest
requests needed at once, no more; under a cgroup memory limit a worker's heap keeps at most an eighth
of its share (2 workers in a 1 GiB pod: 64 MiB each), since kept memory counts against the limit
like any other.

The worker's threads share one heap, the main one (one arena), instead of a heap each (glibc's
default, up to 8 per core). Each heap keeps its own freed memory (the pod-limits run,
docs/reliability.md: 956 MiB of 1 GiB at the peak with 8 heaps per core, 759 MiB with 2). And a
65,536-row request over HTTP, served by the HTTP door's thread from a heap of that thread's own,
answered 0.84x and 0.87x of the bare inference server's requests in two serve benches, and 1.02x
and 0.90x from the main heap in the next two (docs/speed.md, "Against the bare inference
servers"). The cap is set before the worker starts a thread: a thread keeps the heap it was first
given.
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
M_ARENA_MAX = -8
ARENAS = 1  # heaps a worker's threads share: the main one (see above)
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest on 64-bit: blocks below it come from the heap
TRIM_THRESHOLD = 256 * 2**20  # free memory a heap keeps before it shrinks


def kept_bytes(workers: int) -> tuple[int, int]:
    """Freed memory a worker's heap keeps before it shrinks, and how many heaps its threads share:
    TRIM_THRESHOLD, or under a cgroup memory limit an eighth of the worker's share where that is less;
    ARENAS heaps."""
    limit = memory_limit()
    if limit is None:
        return TRIM_THRESHOLD, ARENAS
    return min(TRIM_THRESHOLD, limit // (8 * workers)), ARENAS


def keep_freed_memory(kept: int = TRIM_THRESHOLD, arenas: int | None = None) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (the trim threshold to `kept` bytes),
    and cap its heaps at `arenas` when given; False where there is no glibc."""
    if os.environ.get("FORWARDPASS_MALLOC") == "glibc":
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # musl, macOS: no mallopt, and none of this applies
        return False
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, kept) == 1
    if arenas is not None:
        done = mallopt(M_ARENA_MAX, arenas) == 1 and done
    log.debug("malloc thresholds %s", "raised" if done else "left as they were")
    return done
