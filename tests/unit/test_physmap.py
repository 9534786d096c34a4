"""Tests for pyxen.memory.physmap.GuestMemory: the pool, the p2m and guest-physical access."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
from collections.abc import Iterator

import pytest

from pyxen.memory.addr import PAGE_SIZE, Gfn, Gpa
from pyxen.memory.errors import MemoryFault
from pyxen.memory.physmap import GuestMemory, PageKind, SlotProgrammer

RAM = PageKind.RAM
HEAP = PageKind.HEAP


class RecordingSlots(SlotProgrammer):
    """Records every call and checks it against a model of KVM's slot table."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int, int]] = []
        self.active: dict[int, tuple[int, int, int]] = {}  # slot -> (gpa, size, host)

    def set_slot(self, slot: int, gpa: int, size: int, host_addr: int) -> None:
        self.calls.append((slot, gpa, size, host_addr))
        if size == 0:
            assert slot in self.active, f"delete of inactive slot {slot}"
            assert self.active[slot][0] == gpa
            del self.active[slot]
            return
        # KVM cannot resize or move a live slot: a new region needs a free slot id.
        assert slot not in self.active, f"slot {slot} reprogrammed while live"
        assert gpa % PAGE_SIZE == 0 and size % PAGE_SIZE == 0
        for other, (ogpa, osize, _) in self.active.items():
            assert gpa + size <= ogpa or ogpa + osize <= gpa, (
                f"slot {slot} [{gpa:#x}+{size:#x}] overlaps slot {other} [{ogpa:#x}+{osize:#x}]")
        self.active[slot] = (gpa, size, host_addr)


def ext_tuples(mem: GuestMemory) -> list[tuple[int, int, int, PageKind]]:
    return [(e.gfn, e.pages, e.pool_page, e.kind) for e in mem.extents()]


@pytest.fixture
def mem() -> Iterator[GuestMemory]:
    m = GuestMemory(ram_capacity=32, heap_pages=4)
    yield m
    m.close()


def test_map_lookup(mem: GuestMemory) -> None:
    mem.map(Gfn(10), 4, 2, RAM)
    mem.map(Gfn(0x100), 1, mem.heap_pool_page(1), HEAP)
    assert mem.lookup(Gfn(10)) == (2, RAM)
    assert mem.lookup(Gfn(13)) == (5, RAM)
    assert mem.lookup(Gfn(9)) is None
    assert mem.lookup(Gfn(14)) is None
    assert mem.lookup(Gfn(0x100)) == (33, HEAP)
    assert mem.lookup(Gfn(0xFF)) is None
    assert ext_tuples(mem) == [(10, 4, 2, RAM), (0x100, 1, 33, HEAP)]


def test_map_keeps_extents_sorted(mem: GuestMemory) -> None:
    mem.map(Gfn(50), 2, 0, RAM)
    mem.map(Gfn(5), 2, 2, RAM)
    mem.map(Gfn(20), 2, 4, RAM)
    mem.map(Gfn(7), 1, 6, RAM)  # adjacent to [5, 7): allowed, stays a separate extent
    assert [e.gfn for e in mem.extents()] == [5, 7, 20, 50]
    assert mem.lookup(Gfn(7)) == (6, RAM)
    assert mem.lookup(Gfn(6)) == (3, RAM)


def test_map_count_zero_is_noop(mem: GuestMemory) -> None:
    mem.map(Gfn(3), 0, 0, RAM)
    assert ext_tuples(mem) == []


@pytest.mark.parametrize(("gfn", "count"), [
    (10, 4),  # exactly the same frames
    (8, 3),  # overlaps the start
    (13, 5),  # overlaps the end
    (11, 1),  # inside
    (5, 20),  # covers it
])
def test_map_over_existing_raises(mem: GuestMemory, gfn: int, count: int) -> None:
    mem.map(Gfn(10), 4, 0, RAM)
    with pytest.raises(ValueError):
        mem.map(Gfn(gfn), count, 8, RAM)
    assert ext_tuples(mem) == [(10, 4, 0, RAM)]


def test_map_touching_neighbours_allowed(mem: GuestMemory) -> None:
    mem.map(Gfn(10), 4, 0, RAM)
    mem.map(Gfn(6), 4, 4, RAM)
    mem.map(Gfn(14), 4, 8, RAM)
    assert ext_tuples(mem) == [(6, 4, 4, RAM), (10, 4, 0, RAM), (14, 4, 8, RAM)]


def test_unmap_middle_splits(mem: GuestMemory) -> None:
    mem.map(Gfn(100), 8, 3, RAM)
    assert mem.unmap(Gfn(103)) == (6, RAM)
    assert ext_tuples(mem) == [(100, 3, 3, RAM), (104, 4, 7, RAM)]
    assert mem.lookup(Gfn(103)) is None
    assert mem.lookup(Gfn(102)) == (5, RAM)
    assert mem.lookup(Gfn(104)) == (7, RAM)
    assert mem.lookup(Gfn(107)) == (10, RAM)


def test_unmap_ends(mem: GuestMemory) -> None:
    mem.map(Gfn(100), 8, 3, RAM)
    assert mem.unmap(Gfn(100)) == (3, RAM)
    assert ext_tuples(mem) == [(101, 7, 4, RAM)]
    assert mem.unmap(Gfn(107)) == (10, RAM)
    assert ext_tuples(mem) == [(101, 6, 4, RAM)]
    assert mem.unmap(Gfn(101)) == (4, RAM)
    assert mem.unmap(Gfn(106)) == (9, RAM)
    assert ext_tuples(mem) == [(102, 4, 5, RAM)]


def test_unmap_single_page_and_hole(mem: GuestMemory) -> None:
    mem.map(Gfn(5), 1, mem.heap_pool_page(0), HEAP)
    assert mem.unmap(Gfn(4)) is None
    assert mem.unmap(Gfn(6)) is None
    assert mem.unmap(Gfn(5)) == (32, HEAP)
    assert ext_tuples(mem) == []
    assert mem.unmap(Gfn(5)) is None


def test_unmapped_frame_can_be_remapped(mem: GuestMemory) -> None:
    mem.map(Gfn(0), 4, 0, RAM)
    mem.unmap(Gfn(2))
    mem.map(Gfn(2), 1, 20, RAM)
    assert ext_tuples(mem) == [(0, 2, 0, RAM), (2, 1, 20, RAM), (3, 1, 3, RAM)]
    assert mem.lookup(Gfn(2)) == (20, RAM)


def test_read_write_across_pages(mem: GuestMemory) -> None:
    # gfn 0 -> pool 5, gfn 1 -> pool 2: not contiguous in the pool.
    mem.map(Gfn(0), 1, 5, RAM)
    mem.map(Gfn(1), 1, 2, RAM)
    data = bytes(range(1, 33))
    mem.write(Gpa(0xFF0), data)
    assert bytes(mem.pool_view(5)[0xFF0:]) == data[:16]
    assert bytes(mem.pool_view(2)[:16]) == data[16:]
    assert bytes(mem.pool_view(6)[:16]) == bytes(16)  # pool page after 5 untouched
    assert mem.read(Gpa(0xFF0), 32) == data
    assert mem.read(Gpa(0xFF8), 4) == data[8:12]
    assert mem.read(Gpa(0x1000), 16) == data[16:]
    assert mem.read(Gpa(0x10), 0) == b""


def test_read_write_many_pages(mem: GuestMemory) -> None:
    mem.map(Gfn(4), 3, 10, RAM)
    data = bytes(random.Random(1).randrange(256) for _ in range(2 * PAGE_SIZE + 100))
    mem.write(Gpa(0x4000 + 50), data)
    assert mem.read(Gpa(0x4000 + 50), len(data)) == data
    assert bytes(mem.pool_view(10)[50:]) == data[: PAGE_SIZE - 50]


def test_read_u64_u32_and_page(mem: GuestMemory) -> None:
    mem.map(Gfn(7), 1, 1, RAM)
    mem.write(Gpa(0x7008), bytes.fromhex("0102030405060708"))
    assert mem.read_u64(0x7008) == 0x0807060504030201
    assert mem.read_u32(0x700C) == 0x08070605
    view = mem.page(Gfn(7))
    assert len(view) == PAGE_SIZE
    view[0] = 0x5A
    assert mem.read(Gpa(0x7000), 1) == b"\x5a"
    with pytest.raises(MemoryFault):
        mem.page(Gfn(8))
    with pytest.raises(MemoryFault):
        mem.read_u64(0x8000)
    with pytest.raises(MemoryFault):
        mem.read_u32(0x6FFC)


def test_read_u64_crossing_into_hole_faults(mem: GuestMemory) -> None:
    mem.map(Gfn(0), 1, 0, RAM)  # gfn 1 is a hole, pool page 1 holds other data
    mem.pool_view(1)[:4] = b"\xff\xff\xff\xff"
    with pytest.raises(MemoryFault):
        mem.read_u64(0xFFC)


def test_hole_access_raises(mem: GuestMemory) -> None:
    mem.map(Gfn(1), 1, 0, RAM)
    with pytest.raises(MemoryFault) as info:
        mem.read(Gpa(0x123), 4)
    assert info.value.gpa == 0x123
    with pytest.raises(MemoryFault) as info:
        mem.read(Gpa(0x1FF0), 32)  # starts in RAM, runs into the hole at gfn 2
    assert info.value.gpa == 0x2000
    with pytest.raises(MemoryFault) as info:
        mem.write(Gpa(0x2000), b"x")
    assert info.value.gpa == 0x2000


def test_write_spanning_into_hole_writes_nothing(mem: GuestMemory) -> None:
    mem.map(Gfn(1), 1, 0, RAM)
    mem.write(Gpa(0x1000), b"\xaa" * PAGE_SIZE)
    with pytest.raises(MemoryFault):
        mem.write(Gpa(0x1FF0), b"\x55" * 32)
    assert mem.read(Gpa(0x1000), PAGE_SIZE) == b"\xaa" * PAGE_SIZE
    # The same from the other side: a hole first.
    with pytest.raises(MemoryFault):
        mem.write(Gpa(0xFF0), b"\x55" * 32)
    assert mem.read(Gpa(0x1000), PAGE_SIZE) == b"\xaa" * PAGE_SIZE


def test_alloc_fresh_pages(mem: GuestMemory) -> None:
    assert mem.free_ram_available() == 32
    assert mem.alloc_ram_pages(4) == 0
    assert mem.alloc_ram_pages(1) == 4
    assert mem.alloc_ram_pages(27) == 5
    assert mem.free_ram_available() == 0
    assert mem.alloc_ram_pages(1) is None
    assert mem.alloc_ram_pages(2) is None


def test_alloc_too_many_returns_none(mem: GuestMemory) -> None:
    assert mem.alloc_ram_pages(33) is None
    assert mem.alloc_ram_pages(32) == 0


def test_free_then_alloc_returns_zeroed_page(mem: GuestMemory) -> None:
    first = mem.alloc_ram_pages(3)
    assert first == 0
    for i in range(3):
        mem.pool_view(i)[:] = bytes([0xA0 + i]) * PAGE_SIZE
    mem.free_ram_page(1)
    assert mem.free_ram_available() == 30
    assert mem.alloc_ram_pages(1) == 1
    assert bytes(mem.pool_view(1)) == bytes(PAGE_SIZE)
    # Neighbours keep their contents.
    assert bytes(mem.pool_view(0)) == b"\xa0" * PAGE_SIZE
    assert bytes(mem.pool_view(2)) == b"\xa2" * PAGE_SIZE
    assert mem.free_ram_available() == 29


def test_freed_page_is_zero_through_the_p2m(mem: GuestMemory) -> None:
    page = mem.alloc_ram_pages(1)
    assert page is not None
    mem.map(Gfn(9), 1, page, RAM)
    mem.write(Gpa(0x9000), b"secret")
    assert mem.unmap(Gfn(9)) == (page, RAM)
    mem.free_ram_page(page)
    again = mem.alloc_ram_pages(1)
    assert again == page
    mem.map(Gfn(3), 1, again, RAM)
    assert mem.read(Gpa(0x3000), 6) == bytes(6)


def test_heap_pool_page_bounds(mem: GuestMemory) -> None:
    assert mem.heap_pool_page(0) == 32
    assert mem.heap_pool_page(3) == 35
    for bad in (4, 5, -1):
        with pytest.raises(IndexError):
            mem.heap_pool_page(bad)
    assert mem.pool_pages == 36
    assert len(mem.pool) == 36 * PAGE_SIZE


def test_heap_pages_not_handed_out_as_ram(mem: GuestMemory) -> None:
    got = [mem.alloc_ram_pages(1) for _ in range(32)]
    assert got == list(range(32))
    assert mem.alloc_ram_pages(1) is None


def test_slots_follow_map_and_unmap() -> None:
    rec = RecordingSlots()
    m = GuestMemory(ram_capacity=16, heap_pages=1, slots=rec)
    base = m.host_base
    m.map(Gfn(0x10), 8, 2, RAM)
    assert rec.calls == [(0, 0x10000, 8 * PAGE_SIZE, base + 2 * PAGE_SIZE)]
    rec.calls.clear()
    m.unmap(Gfn(0x13))
    # The old slot goes first, then the two pieces (the freed id is reused).
    assert rec.calls[0] == (0, 0x10000, 0, 0)
    assert sorted(rec.calls[1:]) == [
        (0, 0x10000, 3 * PAGE_SIZE, base + 2 * PAGE_SIZE),
        (1, 0x14000, 4 * PAGE_SIZE, base + 6 * PAGE_SIZE),
    ]
    assert set(m.slot_ids().values()) == {0, 1}
    rec.calls.clear()
    m.unmap(Gfn(0x10))  # the start of [0x10, 0x13)
    assert len(rec.calls) == 2
    assert rec.calls[0][2] == 0
    assert rec.calls[1][1:] == (0x11000, 2 * PAGE_SIZE, base + 3 * PAGE_SIZE)
    assert rec.calls[1][0] == rec.calls[0][0]  # reuses the slot just freed
    m.close()
    assert rec.active == {}


def test_slots_random_sequence_non_overlapping_and_reused() -> None:
    rng = random.Random(1234)
    rec = RecordingSlots()
    m = GuestMemory(ram_capacity=64, heap_pages=2, slots=rec)
    peak = 0
    for _ in range(400):
        gfn = rng.randrange(0, 80)
        if rng.random() < 0.5:
            count = rng.randint(1, 6)
            with contextlib.suppress(ValueError):
                m.map(Gfn(gfn), count, rng.randrange(0, 60), RAM)
        else:
            m.unmap(Gfn(gfn))
        exts = list(m.extents())
        peak = max(peak, len(exts))
        # Model and p2m agree: one live slot per extent, with its exact region.
        ids = m.slot_ids()
        assert {ids[e.gfn]: (e.gfn * PAGE_SIZE, e.pages * PAGE_SIZE,
                         m.host_base + e.pool_page * PAGE_SIZE) for e in exts} == rec.active
        for a, b in itertools.pairwise(exts):
            assert a.end <= b.gfn
    used_ids = {c[0] for c in rec.calls}
    # Freed ids are reused: never more ids than extents alive at once.
    assert used_ids == set(range(len(used_ids)))
    assert len(used_ids) <= peak
    m.close()
    assert rec.active == {}


def test_failed_slot_program_leaves_no_extent() -> None:
    class Failing(RecordingSlots):
        fail = False

        def set_slot(self, slot: int, gpa: int, size: int, host_addr: int) -> None:
            if self.fail and size:
                raise OSError("no slot")
            super().set_slot(slot, gpa, size, host_addr)

    rec = Failing()
    m = GuestMemory(ram_capacity=8, heap_pages=1, slots=rec)
    m.map(Gfn(0), 2, 0, RAM)
    rec.fail = True
    with pytest.raises(OSError):
        m.map(Gfn(4), 2, 2, RAM)
    assert ext_tuples(m) == [(0, 2, 0, RAM)]
    assert m.lookup(Gfn(4)) is None
    rec.fail = False
    m.map(Gfn(4), 2, 2, RAM)
    assert [m.slot_ids()[e.gfn] for e in m.extents()] == [0, 1]  # the failed id was given back
    m.close()


def test_close_releases_everything() -> None:
    rec = RecordingSlots()
    m = GuestMemory(ram_capacity=8, heap_pages=1, slots=rec)
    m.map(Gfn(0), 3, 0, RAM)
    m.map(Gfn(8), 1, m.heap_pool_page(0), HEAP)
    m.unmap(Gfn(1))
    assert len(rec.active) == 3
    fd = m.fd
    os.fstat(fd)
    m.close()
    assert rec.active == {}
    assert ext_tuples(m) == []
    assert m.lookup(Gfn(0)) is None
    assert m.pool.closed
    with pytest.raises(OSError):
        os.fstat(fd)
