"""The server's malloc settings: large freed blocks are kept for the next request where glibc runs."""

import platform

import pytest

from forwardpass.server.memory import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_raised_thresholds():
    assert keep_freed_memory()
