"""A guest page moved into a file of its own (memory.page_files): what a service receives.

The checks are the kernel's: the file holds one page, the hypervisor's
address keeps reaching the page before, during and after the move, and a
read-only file refuses every way to write it (a writable mmap, mprotect of
a read-only one, write(2) through a reopened /proc/self/fd path)."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from collections.abc import Iterator

import pytest

from pyxen.memory import PAGE_SIZE, Gfn, Gpa, PageKind
from pyxen.memory.page_files import attach, detach
from pyxen.memory.physmap import GuestMemory

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    mem = GuestMemory(16, 2)
    mem.map(Gfn(0), 16, 0, PageKind.RAM)
    for gfn in range(16):
        mem.write(Gpa(gfn * PAGE_SIZE), bytes([gfn + 1]) * PAGE_SIZE)
    yield mem
    mem.close()


def _mprotect_writable_fails(fd: int) -> int:
    """Map ``fd`` read-only and shared, then ask for write access: the errno it gets."""
    addr = _libc.mmap(None, PAGE_SIZE, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    try:
        if _libc.mprotect(addr, PAGE_SIZE, mmap.PROT_READ | mmap.PROT_WRITE) == 0:
            return 0
        return ctypes.get_errno()
    finally:
        _libc.munmap(addr, PAGE_SIZE)


def test_the_file_holds_the_page_alone_and_stays_the_guests(memory: GuestMemory) -> None:
    fd = detach(memory, 5, readonly=False, name="t")
    try:
        assert os.fstat(fd).st_size == PAGE_SIZE  # not the guest's pool
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 2 * PAGE_SIZE)  # sealed: the receiver cannot grow it
        view = mmap.mmap(fd, PAGE_SIZE)
        assert view[:4] == bytes([6]) * 4
        memory.write(Gpa(5 * PAGE_SIZE + 8), b"from-guest")  # the address reaches the file
        assert view[8:18] == b"from-guest"
        view[100:107] = b"service"  # and the file reaches the guest
        assert memory.read(Gpa(5 * PAGE_SIZE + 100), 7) == b"service"
        assert memory.read(Gpa(4 * PAGE_SIZE), 4) == bytes([5]) * 4  # neighbours untouched
        view.close()
    finally:
        attach(memory, 5, fd)
    # Back in the pool: the content survived the round trip.
    assert memory.read(Gpa(5 * PAGE_SIZE + 100), 7) == b"service"
    assert memory.read(Gpa(5 * PAGE_SIZE), 4) == bytes([6]) * 4
    pool = mmap.mmap(memory.fd, PAGE_SIZE, offset=5 * PAGE_SIZE)
    assert pool[100:107] == b"service"
    pool.close()


def test_a_mapping_kept_after_attach_no_longer_reaches_the_guest(memory: GuestMemory) -> None:
    fd = detach(memory, 3, readonly=False, name="t")
    kept = os.dup(fd)
    attach(memory, 3, fd)
    try:
        view = mmap.mmap(kept, PAGE_SIZE)
        memory.write(Gpa(3 * PAGE_SIZE), b"later")
        assert view[:5] != b"later"
        view[:4] = b"evil"
        assert memory.read(Gpa(3 * PAGE_SIZE), 5) == b"later"
        view.close()
    finally:
        os.close(kept)


def test_a_read_only_file_cannot_be_written_by_any_route(memory: GuestMemory) -> None:
    fd = detach(memory, 7, readonly=True, name="t")
    try:
        with pytest.raises(PermissionError):
            mmap.mmap(fd, PAGE_SIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        assert _mprotect_writable_fails(fd) == errno.EACCES
        view = mmap.mmap(fd, PAGE_SIZE, prot=mmap.PROT_READ)
        reopened = os.open(f"/proc/self/fd/{fd}", os.O_RDWR)
        try:
            with pytest.raises(PermissionError):
                os.pwrite(reopened, b"x", 0)
            with pytest.raises(PermissionError):
                mmap.mmap(reopened, PAGE_SIZE)
        finally:
            os.close(reopened)
        # The hypervisor's own mapping (made before the seal) still writes the page.
        memory.write(Gpa(7 * PAGE_SIZE), b"hv")
        assert view[:2] == b"hv"
        view.close()
    finally:
        attach(memory, 7, fd)
    assert memory.read(Gpa(7 * PAGE_SIZE), 2) == b"hv"
