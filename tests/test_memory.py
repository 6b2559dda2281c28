"""The server's malloc settings: large freed blocks are kept for the next request where glibc runs."""

import platform

import pytest

from forwardpass.server.memory import TRIM_THRESHOLD, keep_freed_memory, kept_bytes


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_raised_thresholds():
    assert keep_freed_memory()
    assert keep_freed_memory(64 * 2**20, 2)


def test_under_a_memory_limit_a_worker_keeps_an_eighth_of_its_share_in_two_heaps(monkeypatch):
    for limit, workers, kept in [(2**30, 2, (64 * 2**20, 2)), (2**30, 1, (128 * 2**20, 2)),
                                 (64 * 2**30, 2, (TRIM_THRESHOLD, 2)), (None, 2, (TRIM_THRESHOLD, None))]:  # fmt: skip
        monkeypatch.setattr("forwardpass.server.memory.memory_limit", lambda limit=limit: limit)
        assert kept_bytes(workers) == kept, (limit, workers)
