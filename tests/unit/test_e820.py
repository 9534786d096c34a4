"""Tests for pyxen.boot.e820: the guest memory layout and its encodings."""

from __future__ import annotations

import struct

import pytest

from pyxen.boot import (
    BootError,
    E820Entry,
    E820Type,
    build_e820,
    guest_ram_ranges,
    pack_hvm_memmap,
    pack_xen,
)

MIB = 1 << 20
GIB = 1 << 30
BELOW_4G = 0xF0000000 - 0x100000  # RAM that fits between 1 MiB and the MMIO hole


def total(ranges: list[tuple[int, int]]) -> int:
    return sum(end - start for start, end in ranges)


def test_32_mib() -> None:
    ranges = guest_ram_ranges(32 * MIB)
    assert ranges == [(0, 0xA0000), (0x100000, 0x100000 + 32 * MIB - 0xA0000)]
    assert total(ranges) == 32 * MIB


def test_smallest_and_odd_sizes() -> None:
    assert guest_ram_ranges(2 * MIB) == [(0, 0xA0000), (0x100000, 0x160000 + MIB)]
    odd = 2 * MIB + 0x5000
    assert guest_ram_ranges(odd)[-1] == (0x100000, 0x100000 + odd - 0xA0000)
    assert total(guest_ram_ranges(odd)) == odd


@pytest.mark.parametrize(
    "memory", [0, 4096, MIB, MIB + 4096, 2 * MIB - 4096, 2 * MIB + 1, 3 * MIB + 100]
)
def test_bad_sizes(memory: int) -> None:
    with pytest.raises(BootError, match="not a multiple of 4 KiB of at least 2 MiB; set `memory`"):
        guest_ram_ranges(memory)


def test_exactly_fills_below_hole() -> None:
    memory = 0xA0000 + BELOW_4G
    assert guest_ram_ranges(memory) == [(0, 0xA0000), (0x100000, 0xF0000000)]
    assert guest_ram_ranges(memory + 4096) == [
        (0, 0xA0000),
        (0x100000, 0xF0000000),
        (1 << 32, (1 << 32) + 4096),
    ]


@pytest.mark.parametrize("memory", [4 * GIB, 5 * GIB])
def test_hole(memory: int) -> None:
    ranges = guest_ram_ranges(memory)
    above = memory - 0xA0000 - BELOW_4G
    assert ranges == [(0, 0xA0000), (0x100000, 0xF0000000), (1 << 32, (1 << 32) + above)]
    assert total(ranges) == memory
    assert not any(start < 0x100000000 and end > 0xF0000000 for start, end in ranges)


def test_build_e820() -> None:
    entries = build_e820(5 * GIB)
    assert entries == [
        E820Entry(0, 0xA0000, E820Type.RAM),
        E820Entry(0x100000, BELOW_4G, E820Type.RAM),
        E820Entry(0xFEFF0000, 0x10000, E820Type.RESERVED),
        E820Entry(1 << 32, 5 * GIB - 0xA0000 - BELOW_4G, E820Type.RAM),
    ]
    assert entries[2].end == 0xFF000000
    # The console (0xFEFFF) and xenstore (0xFEFFC) pages are reserved, never RAM.
    for gfn in (0xFEFFF, 0xFEFFC):
        (entry,) = [e for e in entries if e.addr <= gfn << 12 < e.end]
        assert entry.type == E820Type.RESERVED


def test_build_e820_small() -> None:
    assert [e.type for e in build_e820(32 * MIB)] == [E820Type.RAM, E820Type.RAM, E820Type.RESERVED]


def test_pack_xen() -> None:
    entries = build_e820(32 * MIB)
    packed = pack_xen(entries)
    assert len(packed) == 20 * len(entries)
    decoded = [struct.unpack_from("<QQI", packed, 20 * i) for i in range(len(entries))]
    assert decoded == [(e.addr, e.size, int(e.type)) for e in entries]


def test_pack_hvm_memmap() -> None:
    entries = build_e820(5 * GIB)
    packed = pack_hvm_memmap(entries)
    assert len(packed) == 24 * len(entries)
    decoded = [struct.unpack_from("<QQII", packed, 24 * i) for i in range(len(entries))]
    assert decoded == [(e.addr, e.size, int(e.type), 0) for e in entries]
    assert pack_hvm_memmap([]) == pack_xen([]) == b""


def test_types() -> None:
    assert [t.value for t in E820Type] == [1, 2, 3, 4, 5, 6, 7]
    assert int(E820Type.PMEM) == 7


@pytest.mark.parametrize("addr, size", [(-1, 1), (0, -1), ((1 << 64) - 4096, 8192)])
def test_bad_entry(addr: int, size: int) -> None:
    with pytest.raises(BootError, match="outside the 64-bit physical address space"):
        E820Entry(addr, size, E820Type.RAM)
