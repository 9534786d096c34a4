"""The atomic routines (the C extension pyxen.hv._atomic): semantics match Xen's,
each touches only its own word, and they are atomic against another CPU."""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing
import os
from multiprocessing.synchronize import Barrier

import pytest

from pyxen.hv import atomic


class Page:
    """A fake shared_info-like area: pending at 0, mask at 512, selector at 1024, upcall at 1040."""

    def __init__(self) -> None:
        self.buf = (ctypes.c_uint64 * 132)()
        self.base = ctypes.addressof(self.buf)

    def set_pending(self, port: int) -> int:
        return int(atomic.set_pending(self.base, self.base + 512, self.base + 1024,
                                      self.base + 1040, port, port // 64))

    def unmask(self, port: int) -> int:
        return int(atomic.unmask(self.base, self.base + 512, self.base + 1024,
                                 self.base + 1040, port, port // 64))

    def word(self, offset: int) -> int:
        return int(self.buf[offset // 8])


def test_set_pending_follows_the_2_level_rule() -> None:
    p = Page()
    assert p.set_pending(70) == atomic.RAISE_UPCALL
    assert p.word(8) == 1 << 6  # pending bit 70
    assert p.word(1024) == 1 << 1  # selector bit 1
    assert p.word(1040) & 0xFF == 1  # upcall_pending
    assert p.set_pending(70) == atomic.NO_CHANGE  # no new edge
    assert p.set_pending(71) == atomic.NO_UPCALL  # selector already set


def test_masked_port_becomes_pending_without_upcall_until_unmasked() -> None:
    p = Page()
    p.buf[64 + 0] = 1 << 5  # mask port 5
    assert p.set_pending(5) == atomic.NO_UPCALL
    assert p.word(1024) == 0 and p.word(1040) == 0
    assert p.unmask(5) == atomic.RAISE_UPCALL
    assert p.word(512) == 0 and p.word(1024) == 1 and p.word(1040) == 1
    assert p.unmask(5) == atomic.NO_CHANGE  # not masked any more


def test_bit_helpers_and_tsc() -> None:
    buf = (ctypes.c_uint64 * 4)()
    base = ctypes.addressof(buf)
    assert atomic.test_and_set_bit(base, 130) == 0
    assert atomic.test_and_set_bit(base, 130) == 1
    assert buf[2] == 1 << 2
    assert atomic.test_and_clear_bit(base, 130) == 1
    assert atomic.test_and_clear_bit(base, 130) == 0
    a, b = atomic.read_tsc(), atomic.read_tsc()
    assert b >= a > 0


def test_cmpxchg32_stores_only_on_a_match() -> None:
    word = (ctypes.c_uint32 * 2)(0x0001_0009, 0xDEAD_BEEF)
    base = ctypes.addressof(word)
    assert atomic.cmpxchg32(base, 0x0001_0009, 0x0001_0019) == 0x0001_0009
    assert word[0] == 0x0001_0019
    # A mismatch returns what is there and leaves it alone.
    assert atomic.cmpxchg32(base, 0x0001_0009, 0) == 0x0001_0019
    assert word[0] == 0x0001_0019
    assert word[1] == 0xDEAD_BEEF  # a 32-bit access only


def test_fetch_or16_and_fetch_and16_touch_one_16_bit_word() -> None:
    words = (ctypes.c_uint16 * 3)(0xAAAA, 0x0001, 0x5555)
    base = ctypes.addressof(words)
    assert atomic.fetch_or16(base + 2, 0x0018) == 0x0001
    assert words[1] == 0x0019
    assert atomic.fetch_and16(base + 2, 0xFFFF & ~0x0008) == 0x0019
    assert words[1] == 0x0011
    assert (words[0], words[2]) == (0xAAAA, 0x5555)
    # The last 16-bit word of a page: nothing beyond it is touched.
    page = (ctypes.c_uint16 * 2048)()
    last = ctypes.addressof(page) + 4094
    assert atomic.fetch_or16(last, 0x8000) == 0
    assert page[2047] == 0x8000


def test_cmpxchg64_and_cmpxchg128() -> None:
    words = (ctypes.c_uint64 * 4)(5, 6, 7, 8)
    base = ctypes.addressof(words)
    assert atomic.cmpxchg64(base, 5, 50) == 5
    assert atomic.cmpxchg64(base, 5, 60) == 50  # no match: left alone
    assert list(words) == [50, 6, 7, 8]
    aligned = (base + 15) & ~15
    index = (aligned - base) // 8
    words[index], words[index + 1] = 1, 2
    stored, found = atomic.cmpxchg128(aligned, 1 | 2 << 64, 3 | 4 << 64)
    assert (stored, found) == (True, 1 | 2 << 64)
    assert (words[index], words[index + 1]) == (3, 4)
    stored, found = atomic.cmpxchg128(aligned, 0, 9)
    assert (stored, found) == (False, 3 | 4 << 64)
    with pytest.raises(ValueError):
        atomic.cmpxchg128(aligned + 8, 0, 0)


def test_bit_strings_reach_past_the_first_word() -> None:
    """Bit b is bit b % 64 of the u64 at addr + 8 * (b // 64), as x86 BTS addresses it."""
    p = Page()
    assert p.set_pending(64 * 7 + 63) == atomic.RAISE_UPCALL
    assert p.word(7 * 8) == 1 << 63
    assert p.word(1024) == 1 << 7
    p.buf[64 + 2] = 1 << 1  # mask port 129
    assert p.set_pending(129) == atomic.NO_UPCALL
    assert p.unmask(129) == atomic.NO_UPCALL  # selector bit 2 set, upcall already pending
    assert p.word(1024) == 1 << 7 | 1 << 2


class GuardedPage:
    """A page followed by an inaccessible one: an access past the page's end faults."""

    def __init__(self) -> None:
        self.map = mmap.mmap(-1, 2 * mmap.PAGESIZE)
        self.anchor = ctypes.c_char.from_buffer(self.map)
        self.base = ctypes.addressof(self.anchor)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        assert libc.mprotect(self.base + mmap.PAGESIZE, mmap.PAGESIZE, 0) == 0  # PROT_NONE

    def u32(self, offset: int) -> int:
        return int.from_bytes(self.map[offset : offset + 4], "little")


def test_32_bit_routines_touch_only_their_word() -> None:
    g = GuardedPage()
    last = g.base + mmap.PAGESIZE - 4  # a FIFO event word can be the page's last u32
    assert atomic.test_and_set_bit32(last, 31) == 0
    assert atomic.test_and_set_bit32(last, 31) == 1
    assert atomic.test_bit32(last, 31) == 1
    assert atomic.test_and_clear_bit32(last, 31) == 1
    assert atomic.test_bit32(last, 31) == 0
    assert atomic.cmpxchg32(last, 0, 0xFFFF_FFFF) == 0
    assert g.u32(mmap.PAGESIZE - 4) == 0xFFFF_FFFF
    assert g.u32(mmap.PAGESIZE - 8) == 0
    assert atomic.fetch_and16(g.base + mmap.PAGESIZE - 2, 0x00FF) == 0xFFFF
    assert g.u32(mmap.PAGESIZE - 4) == 0x00FF_FFFF
    with pytest.raises(ValueError):
        atomic.test_and_set_bit32(last, 32)  # would reach the next word
    with pytest.raises(ValueError):
        atomic.test_bit32(last, 40)
    del g.anchor


def test_fifo_set_pending_on_the_last_words_of_a_page() -> None:
    """The event word, the tail's word and the control block all at page ends."""
    g = GuardedPage()
    word = g.base + mmap.PAGESIZE - 4
    tail = g.base + mmap.PAGESIZE - 8
    block = g.base  # READY at 0, HEAD[priority] at 8 + 4 * priority
    upcall = g.base + 0x800
    linked = 1 << 29
    g.map[mmap.PAGESIZE - 8 : mmap.PAGESIZE - 4] = (linked | 3).to_bytes(4, "little")
    r = atomic.fifo_set_pending(word, tail, block + 8 + 4 * 7, block, upcall, 9 | 7 << 32)
    assert r == atomic.FIFO_QUEUED  # linked behind the tail: no head, no upcall
    assert g.u32(mmap.PAGESIZE - 8) == linked | 9
    assert g.u32(mmap.PAGESIZE - 4) == 1 << 31 | linked
    assert g.u32(0) == 0 and g.map[0x800] == 0
    del g.anchor


def test_null_addresses_and_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        atomic.test_and_set_bit(0, 1)
    with pytest.raises(ValueError):
        atomic.set_pending(0, 8, 16, 24, 1, 0)
    with pytest.raises(ValueError):
        atomic.fifo_set_pending(0, 0, 8, 16, 24, 1)
    with pytest.raises(OverflowError):
        atomic.cmpxchg32(-8, 0, 0)
    with pytest.raises(TypeError):
        atomic.fetch_or16(1.5, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        atomic.test_bit32(8)  # type: ignore[call-arg]


ROUNDS = 20000


def _toggle(shared: mmap.mmap, bit: int, cpu: int, start: Barrier,
            errors: multiprocessing.Queue[int]) -> None:
    """Set and clear ``bit`` ROUNDS times; count the times it was not as this process left it."""
    os.sched_setaffinity(0, {cpu})
    anchor = ctypes.c_char.from_buffer(shared)
    base = ctypes.addressof(anchor)
    bad = 0
    start.wait()
    for _ in range(ROUNDS):
        bad += atomic.test_and_set_bit32(base, bit) != 0
        bad += atomic.test_and_clear_bit32(base, bit) != 1
        bad += atomic.fetch_or16(base + 4, 1 << bit) & (1 << bit) != 0
        bad += atomic.fetch_and16(base + 4, 0xFFFF & ~(1 << bit)) & (1 << bit) == 0
        bad += atomic.test_and_set_bit(base + 8, 64 + bit) != 0
        bad += atomic.test_and_clear_bit(base + 8, 64 + bit) != 1
    del anchor
    errors.put(bad)


def test_read_modify_writes_are_atomic_against_another_cpu() -> None:
    """Two processes pinned to two CPUs toggle neighbouring bits of the same
    words: a read-modify-write that is not atomic loses the other's bit, which
    the other then finds in the wrong state (a Python read-then-write version
    of these routines fails this test with thousands of errors)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two host CPUs to run the two writers at the same time")
    shared = mmap.mmap(-1, mmap.PAGESIZE)  # MAP_SHARED: both processes see it
    ctx = multiprocessing.get_context("fork")
    errors: multiprocessing.Queue[int] = ctx.Queue()
    start = ctx.Barrier(2)
    other = ctx.Process(target=_toggle, args=(shared, 1, cpus[1], start, errors))
    other.start()
    mine = os.sched_getaffinity(0)
    try:
        _toggle(shared, 0, cpus[0], start, errors)
    finally:
        os.sched_setaffinity(0, mine)
    other.join()
    assert other.exitcode == 0
    assert [errors.get(), errors.get()] == [0, 0]
    assert shared[:24] == bytes(24)
