"""The guest-physical memory layout of a pyxen domain, and its E820 map.

E820 entries describe address ranges with the ACPI address-range types
(fact sheet §3.2).  Two binary encodings are produced:

* :func:`pack_xen`: packed 20-byte records (addr u64, size u64, type u32),
  the buffer format of ``XENMEM_memory_map`` (§7.5);
* :func:`pack_hvm_memmap`: 24-byte ``hvm_memmap_table_entry`` records (the
  same plus a zero u32), referenced by ``hvm_start_info.memmap_paddr``.

Layout (pyxen's definition, modelled on libxc's for an HVM/PVH domU).  A
domain of ``memory_bytes`` bytes of RAM gets, in this order until the
memory is used up:

1. ``[0, 0xA0000)``: 640 KiB of low RAM;
2. ``[0x100000, 0xF0000000)``: RAM from 1 MiB up to
   ``HVM_BELOW_4G_RAM_END``; the legacy VGA/ROM hole ``[0xA0000, 0x100000)``
   stays unpopulated;
3. ``[0x100000000, ...)``: the remainder above 4 GiB, since
   ``[0xF0000000, 4 GiB)`` is the MMIO hole.

Inside the MMIO hole, ``[0xFEFF0000, 0xFF000000)`` (GFNs 0xFEFF0-0xFEFFF)
holds the special pages, including the xenstore ring (GFN 0xFEFFC) and the
console ring (GFN 0xFEFFF); it is not RAM and is reported as RESERVED so the
guest never treats it as free address space.

Invariants: ``memory_bytes`` is a multiple of 4096 and at least 2 MiB; the
ranges are disjoint, sorted, page-aligned, never empty, and add up to
exactly ``memory_bytes``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pyxen.abi.hvm import SPECIAL_PFN_CONSOLE, SPECIAL_PFN_IOREQ_SERVER_BASE
from pyxen.abi.memory import HVM_BELOW_4G_RAM_END, E820Type, e820entry
from pyxen.abi.start_info import hvm_memmap_table_entry
from pyxen.boot.errors import BootError
from pyxen.memory.addr import PAGE_SHIFT, PAGE_SIZE

LOW_RAM_END = 0xA0000
HIGH_RAM_START = 0x100000
FOUR_GIB = 0x1_0000_0000
SPECIAL_PAGES_START = SPECIAL_PFN_IOREQ_SERVER_BASE << PAGE_SHIFT
SPECIAL_PAGES_END = (SPECIAL_PFN_CONSOLE + 1) << PAGE_SHIFT
MIN_MEMORY = 2 * 1024 * 1024

_U64 = 1 << 64


@dataclass(frozen=True)
class E820Entry:
    """One address range ``[addr, addr + size)`` of one type."""

    addr: int
    size: int
    type: E820Type

    def __post_init__(self) -> None:
        if self.addr < 0 or self.size < 0 or self.addr + self.size > _U64:
            raise BootError(
                f"e820 entry at {self.addr:#x} size {self.size:#x} is outside the 64-bit "
                "physical address space"
            )
        if not 0 <= int(self.type) < 1 << 32:
            raise BootError(f"e820 entry type {int(self.type)} does not fit in 32 bits")

    @property
    def end(self) -> int:
        """The first address after the range."""
        return self.addr + self.size


def pack_xen(entries: Iterable[E820Entry]) -> bytes:
    """Encode entries as the 20-byte ``e820entry`` records ``XENMEM_memory_map`` returns."""
    return b"".join(bytes(e820entry(e.addr, e.size, e.type)) for e in entries)


def pack_hvm_memmap(entries: Iterable[E820Entry]) -> bytes:
    """Encode entries as 24-byte ``hvm_memmap_table_entry`` records."""
    return b"".join(bytes(hvm_memmap_table_entry(e.addr, e.size, e.type)) for e in entries)


def guest_ram_ranges(memory_bytes: int, resume_at: int = HIGH_RAM_START) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges of RAM populated for a domain of ``memory_bytes``.

    ``resume_at`` is where RAM resumes above the 640 KiB of low RAM: 1 MiB for
    PVH; 0xC0000 for HVM, where only the VGA hole stays empty (boot/hvm.py)."""
    if memory_bytes % PAGE_SIZE or memory_bytes < MIN_MEMORY:
        raise BootError(
            f"guest memory {memory_bytes:#x} bytes is not a multiple of 4 KiB of at least "
            "2 MiB; set `memory` in the config to a whole number of MiB, at least 2"
        )
    ranges = [(0, LOW_RAM_END)]
    left = memory_bytes - LOW_RAM_END
    below = min(left, HVM_BELOW_4G_RAM_END - resume_at)
    ranges.append((resume_at, resume_at + below))
    left -= below
    if left:
        ranges.append((FOUR_GIB, FOUR_GIB + left))
    return ranges


def build_e820(memory_bytes: int) -> list[E820Entry]:
    """The E820 map of a domain: its RAM plus the reserved special-pages range."""
    entries = [
        E820Entry(start, end - start, E820Type.RAM) for start, end in guest_ram_ranges(memory_bytes)
    ]
    entries.append(
        E820Entry(SPECIAL_PAGES_START, SPECIAL_PAGES_END - SPECIAL_PAGES_START, E820Type.RESERVED)
    )
    return sorted(entries, key=lambda e: e.addr)
