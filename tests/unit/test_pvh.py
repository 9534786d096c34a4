"""Tests for pyxen.boot.pvh (hvm_start_info) and pyxen.boot.loader (placement)."""

from __future__ import annotations

import struct

import pytest
from elfgen import make_elf

from pyxen.boot import (
    XEN_HVM_START_MAGIC_VALUE,
    BootError,
    E820Type,
    ElfImage,
    Module,
    build_e820,
    build_start_info,
    guest_ram_ranges,
    image_end,
    parse_elf,
    place_after,
    plan_load,
    start_info_size,
)

MIB = 1 << 20
BASE = 0x200000
# Field offsets of struct hvm_start_info, fact sheet §3.2.
MAGIC, VERSION, FLAGS, NR_MODULES = 0, 4, 8, 12
MODLIST_PADDR, CMDLINE_PADDR, RSDP_PADDR, MEMMAP_PADDR = 16, 24, 32, 40
MEMMAP_ENTRIES, RESERVED = 48, 52


def u32(blob: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", blob, offset)[0]
    return value


def u64(blob: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<Q", blob, offset)[0]
    return value


def cstring_at(blob: bytes, paddr: int) -> bytes:
    start = paddr - BASE
    return blob[start : blob.index(b"\0", start)]


def test_start_info_full_layout() -> None:
    memmap = build_e820(32 * MIB)
    modules = [Module(0x400000, 0x1234, b"initrd args"), Module(0x500000, 0x10)]
    cmdline = b"console=hvc0 earlyprintk"
    blob = build_start_info(BASE, cmdline, modules, memmap, rsdp=0xFFFC0, flags=0)
    assert len(blob) == start_info_size(cmdline, modules, memmap) == 56 + 32 + 64 + 16 + 72

    assert u32(blob, MAGIC) == XEN_HVM_START_MAGIC_VALUE == 0x336EC578
    assert u32(blob, VERSION) == 1
    assert u32(blob, FLAGS) == 0
    assert u32(blob, NR_MODULES) == 2
    assert u64(blob, CMDLINE_PADDR) == BASE + 56
    assert u64(blob, MODLIST_PADDR) == BASE + 56 + 32
    assert u64(blob, RSDP_PADDR) == 0xFFFC0
    assert u64(blob, MEMMAP_PADDR) == BASE + 56 + 32 + 64 + 16
    assert u32(blob, MEMMAP_ENTRIES) == 3
    assert u32(blob, RESERVED) == 0
    assert cstring_at(blob, u64(blob, CMDLINE_PADDR)) == cmdline
    assert blob[56 + len(cmdline) : 88] == bytes(88 - 56 - len(cmdline))  # NUL and padding

    modlist = u64(blob, MODLIST_PADDR) - BASE
    first = struct.unpack_from("<QQQQ", blob, modlist)
    second = struct.unpack_from("<QQQQ", blob, modlist + 32)
    assert first[:2] == (0x400000, 0x1234) and first[3] == 0
    assert first[2] == BASE + 152
    assert cstring_at(blob, first[2]) == b"initrd args"
    assert second == (0x500000, 0x10, 0, 0)

    memmap_at = u64(blob, MEMMAP_PADDR) - BASE
    for index, entry in enumerate(memmap):
        assert struct.unpack_from("<QQII", blob, memmap_at + 24 * index) == (
            entry.addr,
            entry.size,
            entry.type,
            0,
        )
    assert memmap_at + 24 * 3 == len(blob)


def test_start_info_minimal() -> None:
    blob = build_start_info(0x1000, b"", [], [])
    assert len(blob) == start_info_size(b"", [], []) == 56
    assert struct.unpack("<IIIIQQQQII", blob) == (0x336EC578, 1, 0, 0, 0, 0, 0, 0, 0, 0)


def test_start_info_flags_and_exact_cmdline_padding() -> None:
    blob = build_start_info(0x1000, b"1234567", [], build_e820(2 * MIB), rsdp=0xFC001000, flags=3)
    assert u32(blob, FLAGS) == 3
    assert u64(blob, RSDP_PADDR) == 0xFC001000
    assert blob[56:64] == b"1234567\0"
    assert u64(blob, MEMMAP_PADDR) == 0x1000 + 64
    assert u32(blob, MEMMAP_ENTRIES) == 3
    assert u32(blob, NR_MODULES) == 0 and u64(blob, MODLIST_PADDR) == 0


def test_cmdline_limit() -> None:
    assert len(build_start_info(0x1000, b"x" * 1023, [], [])) == 56 + 1024
    with pytest.raises(BootError, match="kernel command line is 1024 bytes; at most 1023"):
        build_start_info(0x1000, b"x" * 1024, [], [])
    with pytest.raises(BootError, match="command line of module 1 is 2000 bytes"):
        start_info_size(b"", [Module(0x1000, 1), Module(0x2000, 1, b"y" * 2000)], [])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"base": 0x1004}, "start info address 0x1004 is not 8-byte aligned"),
        ({"base": 0xFFFFFFE0}, "must lie below 4 GiB"),
        ({"cmdline": b"a\0b"}, "kernel command line contains a NUL byte"),
        ({"modules": [Module(0x1000, 1, b"\0")]}, "module 0 contains a NUL byte"),
        ({"modules": [Module(-1, 1)]}, "module 0 at -0x1 size 0x1 is outside"),
        ({"modules": [Module(1 << 63, (1 << 63) + 1)]}, "module 0 .* is outside"),
        ({"rsdp": 1 << 64}, "RSDP address"),
        ({"flags": 1 << 32}, "flags 0x100000000 do not fit in 32 bits"),
    ],
)
def test_start_info_refusals(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"base": 0x1000, "cmdline": b"", "modules": [], "memmap": []}
    args.update(kwargs)
    with pytest.raises(BootError, match=message):
        build_start_info(**args)  # type: ignore[arg-type]


# --- loader ---------------------------------------------------------------------

RAM_32M = guest_ram_ranges(32 * MIB)


def image(segments: list[tuple[int, bytes, int]], entry: int | None = 0x100000) -> ElfImage:
    notes = [] if entry is None else [(18, struct.pack("<I", entry))]
    return parse_elf(make_elf(segments=segments, notes=notes), "kernel.elf")


def test_plan_load_ok() -> None:
    kernel = image([(0x100000, b"\x90" * 16, 0x5000), (0x1000, b"lo", 0x10)])
    assert plan_load(kernel, RAM_32M, "kernel.elf") == list(kernel.segments)
    assert image_end(kernel) == 0x105000
    assert image_end(image([(0x100000, b"x", 0x5001)])) == 0x106000


def test_plan_load_not_pvh() -> None:
    with pytest.raises(BootError) as info:
        plan_load(image([(0x100000, b"x", 1)], entry=None), RAM_32M, "kernel.elf")
    assert str(info.value) == (
        "kernel.elf is not a PVH kernel: it has no XEN_ELFNOTE_PHYS32_ENTRY note"
    )


def test_plan_load_too_big() -> None:
    kernel = image([(0x100000, b"x", 64 * MIB)])
    with pytest.raises(BootError) as info:
        plan_load(kernel, RAM_32M, "kernel.elf")
    assert str(info.value) == (
        "kernel.elf: segment 0 at [0x100000, 0x4100000) does not fit in guest RAM "
        "[0x0-0xa0000) [0x100000-0x2060000); raise `memory` in the config"
    )


def test_plan_load_in_hole() -> None:
    kernel = image([(0x100000, b"x", 0x1000), (0x9F000, b"", 0x2000)])
    with pytest.raises(BootError, match=r"segment 1 at \[0x9f000, 0xa1000\) .* hole"):
        plan_load(kernel, RAM_32M, "kernel.elf")


@pytest.mark.parametrize("entry", [0x100010, 0x200000, 0x80000])
def test_plan_load_entry_outside_file_data(entry: int) -> None:
    kernel = image([(0x100000, b"\x90" * 16, 0x5000)], entry=entry)
    with pytest.raises(BootError, match=f"PVH entry point {entry:#x} is not inside the file data"):
        plan_load(kernel, RAM_32M, "kernel.elf")


def test_place_after() -> None:
    assert place_after(0x105000, 0x1000, RAM_32M) == 0x105000
    assert place_after(0x105001, 0x1000, RAM_32M) == 0x106000
    assert place_after(0x105001, 56, RAM_32M, align=8) == 0x105008
    # Does not fit below the VGA hole: moves to the next range.
    assert place_after(0x9F000, 0x2000, RAM_32M) == 0x100000
    ram = guest_ram_ranges(5 << 30)
    assert place_after(0xEFFFF000, 0x2000, ram) == 1 << 32
    assert place_after(0, 0, RAM_32M) == 0


def test_place_after_refusals() -> None:
    with pytest.raises(BootError) as info:
        place_after(0x2000000, 0x100000, RAM_32M)
    assert str(info.value) == (
        "no room for 0x100000 bytes at or above 0x2000000 in guest RAM "
        "[0x0-0xa0000) [0x100000-0x2060000); raise `memory` in the config"
    )
    with pytest.raises(BootError, match="alignment 12 is not a power of two"):
        place_after(0, 1, RAM_32M, align=12)
    with pytest.raises(BootError, match="negative"):
        place_after(-1, 1, RAM_32M)


def test_boot_plan_end_to_end() -> None:
    """Kernel, then an initrd, then the start info, all inside RAM and disjoint."""
    kernel = image([(0x100000, b"\x90" * 64, 0x400000)])
    ram = guest_ram_ranges(32 * MIB)
    plan_load(kernel, ram, "kernel.elf")
    initrd = Module(place_after(image_end(kernel), 0x30000, ram), 0x30000)
    memmap = build_e820(32 * MIB)
    size = start_info_size(b"console=hvc0", [initrd], memmap)
    base = place_after(initrd.paddr + initrd.size, size, ram, align=8)
    blob = build_start_info(base, b"console=hvc0", [initrd], memmap)
    assert image_end(kernel) <= initrd.paddr < initrd.paddr + initrd.size <= base
    assert base + len(blob) <= ram[-1][1]
    assert memmap[-1].type == E820Type.RESERVED
