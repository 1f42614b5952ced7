"""malloc set to keep freed memory: large blocks come from the heap, not from fresh mmaps."""

import ctypes
import sys

import pytest

from fmnist_jax.runs import host_memory


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_large_blocks_come_from_the_heap_once_set():
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = _MallInfo2
    size = 64 << 20                                   # above glibc's largest mmap threshold (32 MiB)

    assert host_memory.keep_freed_memory() is True
    assert host_memory.keep_freed_memory() is True   # idempotent
    mapped_before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    assert block
    ctypes.memset(block, 1, size)
    assert libc.mallinfo2().hblkhd - mapped_before < size     # not an mmap'd block
    libc.free(block)
    again = libc.malloc(size)                          # reused from the kept heap
    assert libc.mallinfo2().hblkhd - mapped_before < size
    libc.free(again)
