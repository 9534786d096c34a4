"""Tests for pyxen.memory.access.GuestAccess over hand-built long-mode page tables."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterator

import pytest

from pyxen.memory.access import GuestAccess
from pyxen.memory.addr import PAGE_SIZE, Gfn, Gpa
from pyxen.memory.errors import GuestFault, MemoryFault, PageFault
from pyxen.memory.paging import CR0_PE, CR0_PG, CR0_WP, CR4_PAE, EFER_LMA, EFER_LME, PagingState
from pyxen.memory.physmap import GuestMemory, PageKind

P, RW, US = 1, 2, 4
RAM_PAGES = 64
HOLE_GFN = 0x800

# Linear layout used by most tests: two consecutive linear pages at VA,
# backed by guest frames that are neither contiguous nor in order.
VA = 0x0000_7F00_1234_5000
GFN_A = 40  # backs VA
GFN_B = 17  # backs VA + 0x1000
TOP = 0xFFFF_FFFF_FFFF_F000  # last linear page
GFN_TOP = 50
GFN_ZERO = 51  # backs linear page 0


class Space:
    def __init__(self) -> None:
        self.mem = GuestMemory(ram_capacity=RAM_PAGES, heap_pages=1)
        self.mem.map(Gfn(0), RAM_PAGES, 0, PageKind.RAM)
        self._next = 1
        self.root = self.new_table()

    def new_table(self) -> int:
        gpa = self._next * PAGE_SIZE
        self._next += 1
        return gpa

    def map_4k(self, gla: int, gfn: int, flags: int = P | RW | US) -> None:
        table = self.root
        for level in (4, 3, 2):
            slot = table + ((gla >> (12 + 9 * (level - 1))) & 0x1FF) * 8
            entry = self.mem.read_u64(slot)
            if not entry & P:
                entry = self.new_table() | P | RW | US
                self.mem.write(Gpa(slot), struct.pack("<Q", entry))
            table = entry & 0x000F_FFFF_FFFF_F000
        slot = table + ((gla >> 12) & 0x1FF) * 8
        self.mem.write(Gpa(slot), struct.pack("<Q", (gfn * PAGE_SIZE) | flags))

    def access(self, user: bool = False, wp: bool = True) -> GuestAccess:
        st = PagingState(cr0=CR0_PE | CR0_PG | (CR0_WP if wp else 0), cr3=self.root,
                         cr4=CR4_PAE, efer=EFER_LME | EFER_LMA)
        return GuestAccess(self.mem, st, user)

    def frame(self, gfn: int) -> bytes:
        return self.mem.read(Gpa(gfn * PAGE_SIZE), PAGE_SIZE)


@pytest.fixture
def space() -> Iterator[Space]:
    s = Space()
    s.map_4k(VA, GFN_A)
    s.map_4k(VA + PAGE_SIZE, GFN_B)
    s.map_4k(TOP, GFN_TOP)
    s.map_4k(0, GFN_ZERO)
    for gfn, fill in ((GFN_A, 0x11), (GFN_B, 0x22), (GFN_TOP, 0x33), (GFN_ZERO, 0x44)):
        s.mem.write(Gpa(gfn * PAGE_SIZE), bytes([fill]) * PAGE_SIZE)
    yield s
    s.mem.close()


def test_read_within_one_page(space: Space) -> None:
    space.mem.write(Gpa(GFN_A * PAGE_SIZE + 0x100), b"hello")
    ga = space.access()
    assert ga.read(VA + 0x100, 5) == b"hello"
    assert ga.read(VA + 0xFFF, 1) == b"\x11"
    assert ga.read(VA, PAGE_SIZE) == space.frame(GFN_A)


def test_write_spanning_two_pages(space: Space) -> None:
    ga = space.access()
    data = bytes(range(0x40, 0x60))  # 32 bytes, 16 on each page
    ga.write(VA + PAGE_SIZE - 16, data)
    a = space.frame(GFN_A)
    b = space.frame(GFN_B)
    assert a[-16:] == data[:16]
    assert a[:-16] == b"\x11" * (PAGE_SIZE - 16)
    assert b[:16] == data[16:]
    assert b[16:] == b"\x22" * (PAGE_SIZE - 16)
    # The frame after GFN_A in guest-physical space is not where the tail went.
    assert space.frame(GFN_A + 1)[:16] == bytes(16)
    assert ga.read(VA + PAGE_SIZE - 16, 32) == data
    assert ga.read(VA + PAGE_SIZE - 3, 6) == data[13:19]


def test_read_spanning_two_pages(space: Space) -> None:
    ga = space.access()
    assert ga.read(VA + PAGE_SIZE - 2, 4) == b"\x11\x11\x22\x22"
    assert ga.read(VA, 2 * PAGE_SIZE) == space.frame(GFN_A) + space.frame(GFN_B)
    assert ga.read_u32(VA + PAGE_SIZE - 1) == 0x22222211
    assert ga.read_u16(VA + PAGE_SIZE - 1) == 0x2211
    assert ga.read_u64(VA + PAGE_SIZE - 4) == 0x2222_2222_1111_1111


def test_write_with_read_only_second_page_changes_nothing(space: Space) -> None:
    space.map_4k(VA + PAGE_SIZE, GFN_B, P | US)  # read-only
    before_a, before_b = space.frame(GFN_A), space.frame(GFN_B)
    ga = space.access()
    with pytest.raises(PageFault):
        ga.write(VA + PAGE_SIZE - 8, b"\xee" * 16)
    assert space.frame(GFN_A) == before_a
    assert space.frame(GFN_B) == before_b
    with pytest.raises(PageFault):
        ga.write_u64(VA + PAGE_SIZE - 4, 0)
    assert space.frame(GFN_A) == before_a
    # Without CR0.WP a supervisor write goes through; a user write does not.
    space.access(wp=False).write(VA + PAGE_SIZE - 8, b"\xee" * 16)
    assert space.frame(GFN_B)[:8] == b"\xee" * 8
    with pytest.raises(PageFault):
        space.access(user=True, wp=False).write(VA + PAGE_SIZE, b"\x00")


def test_write_with_unmapped_second_page_changes_nothing(space: Space) -> None:
    space.map_4k(VA + PAGE_SIZE, GFN_B, 0)  # not present
    before = space.frame(GFN_A)
    with pytest.raises(PageFault):
        space.access().write(VA + PAGE_SIZE - 8, b"\xee" * 16)
    assert space.frame(GFN_A) == before


def test_write_with_second_page_in_physical_hole_changes_nothing(space: Space) -> None:
    space.map_4k(VA + PAGE_SIZE, HOLE_GFN)
    before = space.frame(GFN_A)
    with pytest.raises(MemoryFault):
        space.access().write(VA + PAGE_SIZE - 8, b"\xee" * 16)
    assert space.frame(GFN_A) == before


def test_read_of_physical_hole_is_memory_fault(space: Space) -> None:
    space.map_4k(VA + PAGE_SIZE, HOLE_GFN)
    with pytest.raises(MemoryFault) as info:
        space.access().read(VA + PAGE_SIZE - 8, 16)
    assert info.value.gpa == HOLE_GFN * PAGE_SIZE
    with pytest.raises(GuestFault):
        space.access().read(VA + 3 * PAGE_SIZE, 1)  # not mapped linear page: PageFault


def test_user_access_to_supervisor_page(space: Space) -> None:
    space.map_4k(VA, GFN_A, P | RW)
    with pytest.raises(PageFault):
        space.access(user=True).read(VA, 1)
    assert space.access(user=False).read(VA, 1) == b"\x11"
    assert space.access(user=True).read(VA + PAGE_SIZE, 1) == b"\x22"


class Pair(ctypes.LittleEndianStructure):
    _pack_ = 1
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint64), ("c", ctypes.c_uint16)]


def test_read_write_struct(space: Space) -> None:
    ga = space.access()
    gla = VA + PAGE_SIZE - 6  # straddles the two pages
    ga.write_struct(gla, Pair(a=0xDEADBEEF, b=0x0102030405060708, c=0xCAFE))
    raw = space.frame(GFN_A)[-6:] + space.frame(GFN_B)[:8]
    assert raw == struct.pack("<IQH", 0xDEADBEEF, 0x0102030405060708, 0xCAFE)
    got = ga.read_struct(gla, Pair)
    assert isinstance(got, Pair)
    assert (got.a, got.b, got.c) == (0xDEADBEEF, 0x0102030405060708, 0xCAFE)


def test_write_u32_u64_truncate(space: Space) -> None:
    ga = space.access()
    ga.write_u32(VA, 0x1_2345_6789)
    ga.write_u64(VA + 8, -1)
    assert space.frame(GFN_A)[:16] == bytes.fromhex("89674523 11111111 ffffffffffffffff"
                                                    .replace(" ", ""))


@pytest.mark.parametrize("k", [1, 2, 0xFFFF])
def test_addresses_above_2_64_are_masked(space: Space, k: int) -> None:
    ga = space.access()
    big = (k << 64) + VA
    assert ga.read(big + 0x10, 4) == b"\x11" * 4
    assert ga.read(big + PAGE_SIZE - 2, 4) == b"\x11\x11\x22\x22"
    ga.write(big + PAGE_SIZE - 2, b"WXYZ")
    assert space.frame(GFN_A)[-2:] == b"WX"
    assert space.frame(GFN_B)[:2] == b"YZ"
    ga.write_u32(big + 0x20, 0xAABBCCDD)
    assert ga.read_u32(VA + 0x20) == 0xAABBCCDD


def test_access_wrapping_at_2_64(space: Space) -> None:
    ga = space.access()
    # 8 bytes at the top of the address space then 8 at linear 0.
    ga.write(TOP + PAGE_SIZE - 8, b"ABCDEFGHIJKLMNOP")
    assert space.frame(GFN_TOP)[-8:] == b"ABCDEFGH"
    assert space.frame(GFN_ZERO)[:8] == b"IJKLMNOP"
    assert ga.read(TOP + PAGE_SIZE - 8, 16) == b"ABCDEFGHIJKLMNOP"
    assert ga.read((1 << 64) - 4, 8) == b"EFGHIJKL"


def test_non_canonical_is_page_fault(space: Space) -> None:
    with pytest.raises(PageFault):
        space.access().read(0x0000_8000_0000_0000, 1)
    with pytest.raises(PageFault):
        space.access().write(0x8000_0000_0000_0000, b"x")
