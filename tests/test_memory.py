"""The server's malloc settings: large freed blocks are kept for the next request where glibc runs."""

import platform
import subprocess
import sys

import pytest

from forwardpass.server.memory import TRIM_THRESHOLD, keep_freed_memory, kept_bytes


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_raised_thresholds():
    assert keep_freed_memory()
    assert keep_freed_memory(64 * 2**20, 2)


def test_a_worker_keeps_an_eighth_of_its_share_under_a_memory_limit_in_one_heap(monkeypatch):
    for limit, workers, kept in [(2**30, 2, 64 * 2**20), (2**30, 1, 128 * 2**20), (64 * 2**30, 2, TRIM_THRESHOLD),
                                 (None, 2, TRIM_THRESHOLD)]:  # fmt: skip
        monkeypatch.setattr("forwardpass.server.memory.memory_limit", lambda limit=limit: limit)
        assert kept_bytes(workers) == (kept, 1), (limit, workers)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_worker_thread_allocates_from_the_main_heap(tmp_path):
    """In a process that set the cap before starting threads, a thread's large block comes from the main
    heap (below the program break), not from a heap of the thread's own, which glibc maps above it."""
    script = tmp_path / "heap.py"
    script.write_text(
        "import ctypes, sys, threading\n"
        "from forwardpass.server.memory import keep_freed_memory, kept_bytes\n"
        "kept, arenas = kept_bytes(1)\n"
        "keep_freed_memory(kept, arenas if sys.argv[1] == 'capped' else None)  # the block below the mmap threshold\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.malloc.restype, libc.sbrk.restype = ctypes.c_void_p, ctypes.c_void_p\n"
        "libc.malloc.argtypes, libc.sbrk.argtypes = [ctypes.c_size_t], [ctypes.c_ssize_t]\n"
        "seen = []\n"
        "thread = threading.Thread(target=lambda: seen.append(libc.malloc(300_000)))\n"
        "thread.start(); thread.join()\n"
        "print('main' if seen[0] < libc.sbrk(0) else 'own')\n"
    )
    found = {
        mode: subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, check=True).stdout
        for mode in ("capped", "default")
    }
    assert found == {"capped": "main\n", "default": "own\n"}
