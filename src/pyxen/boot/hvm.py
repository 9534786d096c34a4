"""Booting an HVM guest through Xen's firmware: hvmloader with SeaBIOS as its module.

An HVM domain starts as libxl starts one: hvmloader (Xen's own HVM
firmware loader, an ELF32 image without Xen notes linked at 1 MiB) is
entered like a PVH kernel -- flat 32-bit protected mode, paging off, EBX =
``hvm_start_info`` -- and finds the BIOS image as the start-info module
whose command line is ``firmware``.  It then sets up the platform (PCI,
ACPI, SMBIOS, MP tables, e820), copies the BIOS to the top of the first
MiB and jumps to its reset vector.

What this module provides (pure functions of numbers and bytes):

* :func:`hvm_ram_ranges`: where RAM is populated.  libxc leaves only the
  VGA hole ``[0xA0000, 0xC0000)`` empty below 1 MiB (hvmloader copies the
  BIOS to ``0x100000 - size``, e.g. 0xC0000 for a 256 KiB SeaBIOS), and
  RAM stops at ``HVM_BELOW_4G_RAM_END`` (the 256 MiB MMIO hole below
  4 GiB) before going on above 4 GiB.
* :func:`hvm_e820`: the map ``XENMEM_memory_map`` returns, as libxl builds
  it for HVM: RAM from 1 MiB to the low-memory end, and RAM above 4 GiB.
  hvmloader adds the first MiB's entries itself (listing them here makes
  it report an overlap).
* :func:`hvm_info_table`: the 48-byte ``hvm_info_table`` at 0x9F800 that
  hvmloader validates (signature, length, byte checksum 0).
* :func:`find_firmware`: the hvmloader and BIOS files, from the config or
  from where Xen and Debian's seabios package install them.

Invariants: the RAM ranges add up to exactly the domain's memory; the
hvm_info table always sums to 0 modulo 256.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Sequence
from pathlib import Path

from pyxen.abi.memory import E820Type
from pyxen.boot.e820 import FOUR_GIB, HIGH_RAM_START, E820Entry, guest_ram_ranges
from pyxen.boot.errors import BootError
from pyxen.memory.addr import PAGE_SHIFT

VGA_HOLE_START = 0xA0000
VGA_HOLE_END = 0xC0000
HVM_INFO_PADDR = 0x9F800  # HVM_INFO_PFN 0x9F, offset 0x800
HVM_INFO_SIZE = 48
HVM_INFO_SIGNATURE = b"HVM INFO"
HVM_INFO_MAX_VCPUS = 128  # vcpu_online is a 128-bit map
# The special pages (ioreq servers, rings) start here: hvmloader must not
# place anything at or above it (reserved_mem_pgstart).
RESERVED_MEM_PGSTART = 0xFEFF0

# Where hvmloader lives: Debian's xen-utils-X.Y package, a Xen source install
# (prefix /usr or /usr/local), and what `scripts/install-hvm-firmware` fetches.
HVMLOADER_GLOBS = (
    "/usr/lib/xen-*/boot/hvmloader",
    "/usr/lib/xen/boot/hvmloader",
    "/usr/local/lib/xen/boot/hvmloader",
)
SEABIOS_PATHS = (
    "/usr/share/seabios/bios-256k.bin",
    "/usr/lib/xen/boot/seabios.bin",
    "/usr/local/lib/xen/boot/seabios.bin",
    "/usr/share/seabios/bios.bin",
)
FIRMWARE_HINT = ("install it with scripts/install-hvm-firmware (it fetches Debian's "
                 "xen-utils and seabios packages)")


def hvm_ram_ranges(memory_bytes: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` ranges populated for an HVM domain of ``memory_bytes``."""
    return guest_ram_ranges(memory_bytes, resume_at=VGA_HOLE_END)


def _low_end(ram: Sequence[tuple[int, int]]) -> int:
    return max(end for _start, end in ram if end <= FOUR_GIB)


def _high_end(ram: Sequence[tuple[int, int]]) -> int:
    return max((end for start, end in ram if start >= FOUR_GIB), default=0)


def hvm_e820(ram: Sequence[tuple[int, int]]) -> list[E820Entry]:
    """The memory map for ``XENMEM_memory_map`` (libxl's for HVM, above 1 MiB only)."""
    low = _low_end(ram)
    entries = [E820Entry(HIGH_RAM_START, low - HIGH_RAM_START, E820Type.RAM)]
    high = _high_end(ram)
    if high:
        entries.append(E820Entry(FOUR_GIB, high - FOUR_GIB, E820Type.RAM))
    return entries


def hvm_info_table(ram: Sequence[tuple[int, int]], vcpus: int, max_vcpus: int,
                   acpi: bool = True, apic: bool = True) -> bytes:
    """The ``hvm_info_table`` (public/hvm/hvm_info_table.h, 48 bytes)."""
    if not 1 <= vcpus <= max_vcpus <= HVM_INFO_MAX_VCPUS:
        raise BootError(f"an HVM guest has 1 to {HVM_INFO_MAX_VCPUS} vCPUs, not {max_vcpus}")
    online = (1 << vcpus) - 1
    table = bytearray(struct.pack(
        "<8sIBBBBIIII16s", HVM_INFO_SIGNATURE, HVM_INFO_SIZE, 0, int(acpi), int(apic), 0,
        max_vcpus, _low_end(ram) >> PAGE_SHIFT, RESERVED_MEM_PGSTART,
        _high_end(ram) >> PAGE_SHIFT, online.to_bytes(16, "little")))
    assert len(table) == HVM_INFO_SIZE
    table[12] = -sum(table) & 0xFF
    return bytes(table)


def find_firmware(configured: str | None, candidates: Sequence[str], what: str) -> Path:
    """``configured`` if given (it must exist), else the first candidate found.

    Candidates may be globs; among several matches the newest version
    (highest sorted path) wins."""
    if configured is not None:
        path = Path(configured)
        if not path.is_file():
            raise BootError(f"{what} {configured} does not exist or is not a file")
        return path
    for pattern in candidates:
        found = sorted(glob.glob(pattern), reverse=True)
        for match in found:
            if os.path.isfile(match):
                return Path(match)
    raise BootError(f"no {what} found (looked in {', '.join(candidates)}): {FIRMWARE_HINT}")
