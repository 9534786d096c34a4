"""Tests for pyxen.memory.paging.translate against hand-built guest page tables.

Tables live in a ``GuestMemory`` with no KVM behind it (the default
SlotProgrammer does nothing).  Frame 0 is never used for a table, so a zero
entry is always "not present".
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator

import pytest

from pyxen.memory.addr import PAGE_SIZE, Gfn, Gla, Gpa
from pyxen.memory.errors import MemoryFault, PageFault
from pyxen.memory.paging import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_LA57,
    CR4_PAE,
    CR4_PSE,
    EFER_LMA,
    EFER_LME,
    PagingState,
    translate,
)
from pyxen.memory.physmap import GuestMemory, PageKind

P, RW, US, PS = 1, 2, 4, 0x80
PAT_LARGE = 1 << 12  # PAT bit of a 2 MiB / 1 GiB / 4 MiB entry: not an address bit
NX = 1 << 63
RAM_PAGES = 64
HOLE_GFN = 0x1000  # far beyond RAM_PAGES: never populated

CR0_ON = CR0_PE | CR0_PG | CR0_WP
LONG_EFER = EFER_LME | EFER_LMA


class Tables:
    """Page tables in a fresh GuestMemory: frames 1.. are handed out in order."""

    def __init__(self, entry_size: int = 8) -> None:
        self.mem = GuestMemory(ram_capacity=RAM_PAGES, heap_pages=1)
        self.mem.map(Gfn(0), RAM_PAGES, 0, PageKind.RAM)
        self.entry_size = entry_size
        self._next = 1

    def new(self) -> int:
        gpa = self._next * PAGE_SIZE
        self._next += 1
        assert self._next <= RAM_PAGES
        return gpa

    def set(self, table: int, index: int, value: int) -> None:
        fmt = "<Q" if self.entry_size == 8 else "<I"
        self.mem.write(Gpa(table + index * self.entry_size), struct.pack(fmt, value))

    def get(self, table: int, index: int) -> int:
        data = self.mem.read(Gpa(table + index * self.entry_size), self.entry_size)
        return int.from_bytes(data, "little")

    def close(self) -> None:
        self.mem.close()


@pytest.fixture
def t64() -> Iterator[Tables]:
    t = Tables(8)
    yield t
    t.close()


@pytest.fixture
def t32() -> Iterator[Tables]:
    t = Tables(4)
    yield t
    t.close()


def long_index(gla: int, level: int) -> int:
    return (gla >> (12 + 9 * (level - 1))) & 0x1FF


def build_long(t: Tables, root: int, gla: int, leaf_level: int, leaf: int, levels: int = 4,
               inter: int = P | RW | US) -> list[tuple[int, int]]:
    """Map ``gla`` with ``leaf`` (a full entry) at ``leaf_level``; return (table, index) per level
    from the top, creating intermediate tables as needed."""
    path = []
    table = root
    for level in range(levels, leaf_level - 1, -1):
        idx = long_index(gla, level)
        path.append((table, idx))
        if level == leaf_level:
            t.set(table, idx, leaf)
        else:
            entry = t.get(table, idx)
            if not entry & P:
                entry = t.new() | inter
                t.set(table, idx, entry)
            table = entry & 0x000F_FFFF_FFFF_F000
    return path


def long_state(cr3: int, la57: bool = False, wp: bool = True) -> PagingState:
    cr0 = CR0_PE | CR0_PG | (CR0_WP if wp else 0)
    cr4 = CR4_PAE | (CR4_LA57 if la57 else 0)
    return PagingState(cr0=cr0, cr3=cr3, cr4=cr4, efer=LONG_EFER)


def tr(t: Tables, st: PagingState, gla: int, write: bool = False, user: bool = False) -> int:
    return translate(t.mem, st, Gla(gla), write, user)


# -- paging off ---------------------------------------------------------------


@pytest.mark.parametrize("gla", [0, 0x1234, 0xFFFF_F000, 0xDEAD_BEEF])
@pytest.mark.parametrize("cr0", [0, CR0_PE, CR0_PE | CR0_WP])
def test_paging_off_is_identity(t64: Tables, gla: int, cr0: int) -> None:
    # cr3/cr4/efer are garbage: nothing is walked without CR0.PG.
    st = PagingState(cr0=cr0, cr3=HOLE_GFN * PAGE_SIZE, cr4=CR4_PAE | CR4_LA57, efer=0)
    assert tr(t64, st, gla, write=True, user=True) == gla


# -- long mode ----------------------------------------------------------------


@pytest.mark.parametrize("gla", [0x0000_7F12_3456_7ABC, 0xFFFF_8000_0000_1234, 0x1000,
                                 0x0000_7FFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFF8])
def test_long_4k(t64: Tables, gla: int) -> None:
    root = t64.new()
    build_long(t64, root, gla, 1, 0x0000_0012_3456_7000 | P | RW | US | NX)
    expect = 0x0000_0012_3456_7000 | (gla & 0xFFF)
    st = long_state(root)
    assert tr(t64, st, gla) == expect
    assert tr(t64, st, gla, write=True, user=True) == expect
    # The neighbouring page is not mapped.
    with pytest.raises(PageFault):
        tr(t64, st, gla ^ 0x1000)


def test_long_4k_cr3_low_bits_ignored(t64: Tables) -> None:
    root = t64.new()
    gla = 0x4000_1234
    build_long(t64, root, gla, 1, 0xABC_D000 | P)
    # PCID in bits 11:0 and PWT/PCD do not move the table.
    st = long_state(root | 0x018 | 0x5A5)
    assert tr(t64, st, gla) == 0xABC_D234


def test_long_2m(t64: Tables) -> None:
    root = t64.new()
    gla = 0x0000_0040_1234_5678
    build_long(t64, root, gla, 2, 0x0000_0008_0020_0000 | PAT_LARGE | P | RW | PS | NX)
    assert tr(t64, long_state(root), gla) == 0x0000_0008_0020_0000 | (gla & 0x1F_FFFF)
    assert tr(t64, long_state(root), gla, write=True) == 0x0000_0008_0034_5678


def test_long_1g(t64: Tables) -> None:
    root = t64.new()
    gla = 0xFFFF_FF80_7654_3210
    build_long(t64, root, gla, 3, 0x0000_0001_4000_0000 | PAT_LARGE | P | RW | PS)
    assert tr(t64, long_state(root), gla) == 0x0000_0001_4000_0000 | (gla & 0x3FFF_FFFF)
    assert tr(t64, long_state(root), gla) == 0x1_7654_3210


def test_long_ps_at_level_1_is_pat_not_large(t64: Tables) -> None:
    root = t64.new()
    gla = 0x7_0000_3123
    build_long(t64, root, gla, 1, 0x55_5000 | P | PS)
    assert tr(t64, long_state(root), gla) == 0x55_5123


@pytest.mark.parametrize("gla", [0x0012_3456_789A_BCDE, 0x0000_8000_0000_0000,
                                 0xFF80_0000_0000_0FFF, 0xFFFF_FFFF_FFFF_F001])
def test_long_5_level(t64: Tables, gla: int) -> None:
    root = t64.new()
    build_long(t64, root, gla, 1, 0x9_8765_4000 | P | RW, levels=5)
    st = long_state(root, la57=True)
    assert tr(t64, st, gla, write=True) == 0x9_8765_4000 | (gla & 0xFFF)


def test_5_level_uses_pml5_index(t64: Tables) -> None:
    # Two addresses differing only in bits 56:48 go through different PML5 entries.
    root = t64.new()
    a = 0x0001_0000_0000_1000
    b = 0x0002_0000_0000_1000
    build_long(t64, root, a, 1, 0xA000 | P, levels=5)
    build_long(t64, root, b, 1, 0xB000 | P, levels=5)
    st = long_state(root, la57=True)
    assert tr(t64, st, a) == 0xA000
    assert tr(t64, st, b) == 0xB000


@pytest.mark.parametrize(("gla", "la57"), [
    (0x0000_8000_0000_0000, False),
    (0xFFFF_7FFF_FFFF_FFFF, False),
    (0x8000_0000_0000_0000, False),
    (0x0001_0000_0000_0000, False),
    (0x0100_0000_0000_0000, True),
    (0xFE00_0000_0000_0000, True),
    (0x7FFF_FFFF_FFFF_FFFF, True),
])
def test_non_canonical_faults(t64: Tables, gla: int, la57: bool) -> None:
    root = t64.new()
    # Map the canonical look-alike so only canonicality can make it fail.
    levels = 5 if la57 else 4
    build_long(t64, root, gla, 1, 0x5000 | P | RW | US, levels=levels)
    with pytest.raises(PageFault) as info:
        tr(t64, long_state(root, la57=la57), gla)
    assert info.value.reason == "non-canonical"
    assert info.value.gla == gla


@pytest.mark.parametrize("levels", [4, 5])
def test_not_present_at_each_level(t64: Tables, levels: int) -> None:
    gla = 0x0000_3456_789A_BCDE
    for missing in range(levels, 0, -1):
        t = Tables(8)
        root = t.new()
        path = build_long(t, root, gla, 1, 0x7000 | P | RW | US, levels=levels)
        st = long_state(root, la57=levels == 5)
        assert tr(t, st, gla) == 0x7CDE
        table, idx = path[levels - missing]
        t.set(table, idx, t.get(table, idx) & ~P)
        with pytest.raises(PageFault) as info:
            tr(t, st, gla)
        assert info.value.reason == f"not present at level {missing}"
        t.close()


@pytest.mark.parametrize("ro_level", [1, 2, 3, 4])
def test_read_only_and_wp(t64: Tables, ro_level: int) -> None:
    root = t64.new()
    gla = 0x0000_0012_3456_7000
    path = build_long(t64, root, gla, 1, 0x4_2000 | P | RW | US)
    table, idx = path[4 - ro_level]
    t64.set(table, idx, t64.get(table, idx) & ~RW)
    wp_on = long_state(root, wp=True)
    wp_off = long_state(root, wp=False)
    # Reads are fine for everyone.
    assert tr(t64, wp_on, gla) == 0x4_2000
    assert tr(t64, wp_on, gla, user=True) == 0x4_2000
    # Supervisor writes: fault with WP, allowed without.
    with pytest.raises(PageFault) as info:
        tr(t64, wp_on, gla, write=True)
    assert info.value.reason == f"read-only at level {ro_level}"
    assert tr(t64, wp_off, gla + 8, write=True) == 0x4_2008
    # User writes fault regardless of WP.
    for st in (wp_on, wp_off):
        with pytest.raises(PageFault):
            tr(t64, st, gla, write=True, user=True)


@pytest.mark.parametrize("sup_level", [1, 2, 3, 4])
def test_user_access_to_supervisor_page_faults(t64: Tables, sup_level: int) -> None:
    root = t64.new()
    gla = 0x0000_0000_8000_0010
    path = build_long(t64, root, gla, 1, 0x3_3000 | P | RW | US)
    table, idx = path[4 - sup_level]
    t64.set(table, idx, t64.get(table, idx) & ~US)
    st = long_state(root)
    assert tr(t64, st, gla) == 0x3_3010
    assert tr(t64, st, gla, write=True) == 0x3_3010
    for write in (False, True):
        with pytest.raises(PageFault) as info:
            tr(t64, st, gla, write=write, user=True)
        assert info.value.reason == f"supervisor-only at level {sup_level}"


def test_user_access_to_supervisor_large_page_faults(t64: Tables) -> None:
    root = t64.new()
    gla = 0x4020_0000
    build_long(t64, root, gla, 2, 0x20_0000 | P | RW | PS)
    st = long_state(root)
    assert tr(t64, st, gla) == 0x20_0000
    with pytest.raises(PageFault):
        tr(t64, st, gla, user=True)


@pytest.mark.parametrize("hole_level", [4, 3, 2])
def test_long_table_in_hole_is_page_fault(t64: Tables, hole_level: int) -> None:
    root = t64.new()
    gla = 0x0000_0055_4433_2000
    path = build_long(t64, root, gla, 1, 0x1000 | P | RW)
    # Entry at hole_level points to a next-level table in an unpopulated frame.
    table, idx = path[4 - hole_level]
    t64.set(table, idx, (HOLE_GFN * PAGE_SIZE) | P | RW | US)
    with pytest.raises(PageFault) as info:
        tr(t64, long_state(root), gla)
    assert not isinstance(info.value, MemoryFault)
    assert info.value.gla == gla


def test_cr3_in_hole_is_page_fault(t64: Tables) -> None:
    for st in (
        long_state(HOLE_GFN * PAGE_SIZE),
        long_state(HOLE_GFN * PAGE_SIZE, la57=True),
        PagingState(cr0=CR0_ON, cr3=HOLE_GFN * PAGE_SIZE, cr4=CR4_PAE, efer=0),
        PagingState(cr0=CR0_ON, cr3=HOLE_GFN * PAGE_SIZE, cr4=0, efer=0),
    ):
        with pytest.raises(PageFault):
            tr(t64, st, 0x1234)


# -- PAE ----------------------------------------------------------------------


def pae_state(cr3: int, wp: bool = True) -> PagingState:
    return PagingState(cr0=CR0_PE | CR0_PG | (CR0_WP if wp else 0), cr3=cr3, cr4=CR4_PAE,
                       efer=0)


def build_pae(t: Tables, pdpt: int, gla: int) -> tuple[int, int]:
    """PDPTE for ``gla`` (present, no other bits: RW/US are reserved there); return the PD."""
    pd = t.new()
    t.set(pdpt, 0, 0)  # make sure the other PDPTEs are zero
    t.mem.write(Gpa(pdpt + (gla >> 30) * 8), struct.pack("<Q", pd | P))
    return pd, (gla >> 21) & 0x1FF


def test_pae_2m(t64: Tables) -> None:
    page = t64.new()
    pdpt = page + 0x60  # 32-byte aligned, not page aligned
    gla = 0xC03F_F123
    pd, pdi = build_pae(t64, pdpt, gla)
    t64.set(pd, pdi, 0x7FE0_0000 | PAT_LARGE | P | RW | US | PS)
    assert tr(t64, pae_state(pdpt), gla, write=True, user=True) == 0x7FE0_0000 | 0x1F_F123


def test_pae_4k(t64: Tables) -> None:
    pdpt = t64.new()
    gla = 0x4012_3ABC
    pd, pdi = build_pae(t64, pdpt, gla)
    pt = t64.new()
    t64.set(pd, pdi, pt | P | RW | US)
    t64.set(pt, (gla >> 12) & 0x1FF, 0x1_2345_6000 | P | RW | US | NX)  # above 4 GiB
    assert tr(t64, pae_state(pdpt), gla, write=True, user=True) == 0x1_2345_6ABC


def test_pae_faults(t64: Tables) -> None:
    pdpt = t64.new()
    gla = 0x8000_5000
    pd, pdi = build_pae(t64, pdpt, gla)
    pt = t64.new()
    t64.set(pd, pdi, pt | P | RW | US)
    pti = (gla >> 12) & 0x1FF
    t64.set(pt, pti, 0x9000 | P | US)  # read-only leaf
    st = pae_state(pdpt)
    assert tr(t64, st, gla) == 0x9000
    with pytest.raises(PageFault):
        tr(t64, st, gla, write=True)
    assert tr(t64, pae_state(pdpt, wp=False), gla, write=True) == 0x9000
    with pytest.raises(PageFault):
        tr(t64, pae_state(pdpt, wp=False), gla, write=True, user=True)
    # Other PDPTEs are not present.
    with pytest.raises(PageFault) as info:
        tr(t64, st, gla ^ 0x4000_0000)
    assert info.value.reason == "not present at level 3"
    # PDE not present.
    with pytest.raises(PageFault) as info:
        tr(t64, st, gla ^ 0x20_0000)
    assert info.value.reason == "not present at level 2"
    # PTE not present.
    with pytest.raises(PageFault) as info:
        tr(t64, st, gla ^ 0x1000)
    assert info.value.reason == "not present at level 1"
    # PD in a hole.
    t64.mem.write(Gpa(pdpt + (gla >> 30) * 8), struct.pack("<Q", HOLE_GFN * PAGE_SIZE | P))
    with pytest.raises(PageFault):
        tr(t64, st, gla)


# -- 32-bit paging ------------------------------------------------------------


def state32(cr3: int, pse: bool = False, wp: bool = True) -> PagingState:
    return PagingState(cr0=CR0_PE | CR0_PG | (CR0_WP if wp else 0), cr3=cr3,
                       cr4=CR4_PSE if pse else 0, efer=0)


def test_32bit_4k(t32: Tables) -> None:
    pd = t32.new()
    pt = t32.new()
    gla = 0xBFFF_E123
    t32.set(pd, gla >> 22, pt | P | RW | US)
    t32.set(pt, (gla >> 12) & 0x3FF, 0x0765_4000 | P | RW | US)
    assert tr(t32, state32(pd), gla, write=True, user=True) == 0x0765_4123
    assert tr(t32, state32(pd, pse=True), gla) == 0x0765_4123
    with pytest.raises(PageFault) as info:
        tr(t32, state32(pd), gla ^ 0x1000)
    assert info.value.reason == "not present at level 1"
    with pytest.raises(PageFault) as info:
        tr(t32, state32(pd), gla ^ 0x40_0000)
    assert info.value.reason == "not present at level 2"


def test_32bit_4m_with_pse(t32: Tables) -> None:
    pd = t32.new()
    gla = 0x8076_5432
    t32.set(pd, gla >> 22, 0x1240_0000 | PAT_LARGE | P | RW | PS)
    assert tr(t32, state32(pd, pse=True), gla, write=True) == 0x1240_0000 | 0x36_5432
    with pytest.raises(PageFault):
        tr(t32, state32(pd, pse=True), gla, user=True)


def test_32bit_ps_ignored_without_pse(t32: Tables) -> None:
    pd = t32.new()
    pt = t32.new()
    gla = 0x0042_3456
    t32.set(pd, gla >> 22, pt | P | RW | PS)
    t32.set(pt, (gla >> 12) & 0x3FF, 0xAB000 | P | RW)
    # Without CR4.PSE the PDE points to a page table.
    assert tr(t32, state32(pd, pse=False), gla) == 0xAB456
    # With CR4.PSE it is a 4 MiB page at the PDE's address (bits 31:22).
    assert tr(t32, state32(pd, pse=True), gla) == (pt & 0xFFC0_0000) | (gla & 0x3F_FFFF)


def test_32bit_protection(t32: Tables) -> None:
    pd = t32.new()
    pt = t32.new()
    gla = 0x1000_0000
    t32.set(pd, gla >> 22, pt | P | US)  # read-only at the directory level
    t32.set(pt, 0, 0x5000 | P | RW)  # supervisor page
    assert tr(t32, state32(pd), gla) == 0x5000
    with pytest.raises(PageFault) as info:
        tr(t32, state32(pd), gla, write=True)
    assert info.value.reason == "read-only at level 2"
    assert tr(t32, state32(pd, wp=False), gla, write=True) == 0x5000
    with pytest.raises(PageFault) as info:
        tr(t32, state32(pd), gla, user=True)
    assert info.value.reason == "supervisor-only at level 1"


def test_32bit_table_in_hole(t32: Tables) -> None:
    pd = t32.new()
    gla = 0x2000_0000
    t32.set(pd, gla >> 22, HOLE_GFN * PAGE_SIZE | P | RW)
    with pytest.raises(PageFault) as info:
        tr(t32, state32(pd), gla)
    assert not isinstance(info.value, MemoryFault)


def test_32bit_uses_32bit_entries(t32: Tables) -> None:
    # Neighbouring 32-bit PDEs must not be read as one 64-bit entry.
    pd = t32.new()
    pt = t32.new()
    t32.set(pd, 0, pt | P | RW)
    t32.set(pd, 1, 0xFFC0_0000 | P | RW | PS)
    t32.set(pt, 5, 0x0077_7000 | P)
    assert tr(t32, state32(pd, pse=True), 0x5ABC) == 0x77_7ABC
    assert tr(t32, state32(pd, pse=True), 0x40_0ABC) == 0xFFC0_0ABC


# -- random tables against a reference walk ------------------------------------


ADDR = 0x000F_FFFF_FFFF_F000


def reference_long(mem: GuestMemory, cr3: int, gla: int, write: bool, user: bool,
                   wp: bool) -> int | None:
    """4-level walk written from the SDM tables; None for any fault."""
    if (gla >> 47) not in (0, 0x1FFFF):
        return None
    entries = []
    table = cr3 & ADDR
    for shift in (39, 30, 21, 12):
        where = table + ((gla >> shift) & 511) * 8
        if mem.lookup(Gfn(where >> 12)) is None:
            return None
        entry = int.from_bytes(mem.read(Gpa(where), 8), "little")
        entries.append(entry)
        if not entry & P:
            return None
        large = shift in (30, 21) and entry & PS
        if shift == 12 or large:
            break
        table = entry & ADDR
    if user and not all(e & US for e in entries):
        return None
    if write and (user or wp) and not all(e & RW for e in entries):
        return None
    page_size = 1 << shift
    return ((entries[-1] & ADDR) // page_size) * page_size + gla % page_size


@pytest.mark.parametrize("seed", range(8))
def test_random_long_mode_tables(seed: int) -> None:
    rng = random.Random(seed)
    t = Tables(8)
    root = t.new()
    used: list[int] = []

    def perms() -> int:
        bits = P
        for bit in (RW, US):
            if rng.random() < 0.9:
                bits |= bit
        if rng.random() < 0.03:
            bits &= ~P
        return bits

    def fill(table: int, level: int, prefix: int) -> None:
        for n in range(rng.randint(1, 3)):
            idx = rng.choice([0, 1, 2, 255, 256, 511, rng.randrange(512)])
            va = prefix | (idx << (12 + 9 * (level - 1)))
            kind = rng.random()
            if n == 0 and level > 1 and t._next < RAM_PAGES - 1:
                # Every table gets at least one fully permissive path down.
                sub = t.new()
                t.set(table, idx, sub | P | RW | US)
                fill(sub, level - 1, va)
            elif level == 1 or (level in (2, 3) and kind < 0.25):
                size = 1 << (12 + 9 * (level - 1))
                target = rng.randrange(0, 1 << 40) & ~(size - 1)
                extra = PS if level > 1 else 0
                if level > 1 and rng.random() < 0.5:
                    extra |= PAT_LARGE
                t.set(table, idx, target | perms() | extra | (NX if rng.random() < 0.3 else 0))
                used.append(va)
            elif kind < 0.3:
                t.set(table, idx, (HOLE_GFN + rng.randrange(100)) * PAGE_SIZE | perms())
                used.append(va)
            elif t._next < RAM_PAGES - 1:
                sub = t.new()
                t.set(table, idx, sub | perms())
                fill(sub, level - 1, va)
            else:
                used.append(va)

    fill(root, 4, 0)
    checked = faults = 0
    for _ in range(400):
        if used and rng.random() < 0.8:
            va = rng.choice(used) | rng.randrange(0, 1 << 12)
            if rng.random() < 0.5:
                va |= rng.randrange(0, 1 << 21) & ~0xFFF
            if va & (1 << 47):
                va |= 0xFFFF_0000_0000_0000
        else:
            va = rng.randrange(0, 1 << 64)
        write, user, wp = rng.random() < 0.4, rng.random() < 0.4, rng.random() < 0.5
        st = long_state(root | rng.randrange(0, 0x1000), wp=wp)
        expect = reference_long(t.mem, root, va, write, user, wp)
        if expect is None:
            with pytest.raises(PageFault):
                translate(t.mem, st, Gla(va), write, user)
            faults += 1
        else:
            assert translate(t.mem, st, Gla(va), write, user) == expect, hex(va)
            checked += 1
    assert checked > 40 and faults > 40  # both outcomes are exercised
    t.close()
