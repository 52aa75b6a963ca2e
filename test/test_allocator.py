"""The allocator setting the entry points apply."""

import platform

import pytest

from sparserefine_ros.allocator import retain_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_glibc_takes_the_thresholds():
    assert retain_freed_memory()
