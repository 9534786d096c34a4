"""PVH start of day: mirrors ``xen/include/public/arch-x86/hvm/start_info.h``
(Xen 4.12), plus the ``SIF_*`` flags from ``xen/include/public/xen.h``.

At the PVH entry point EBX holds the physical address of ``hvm_start_info``.
Every address field is a physical address; 0 means "absent".
"""

from __future__ import annotations

from pyxen.abi._types import XenStruct, uint32_t, uint64_t

# "xEn3" with the 0x80 bit set in the "E".
XEN_HVM_START_MAGIC_VALUE = 0x336EC578

# Version 1 adds memmap_paddr / memmap_entries (version 0 ends at offset 40).
XEN_HVM_START_INFO_VERSION = 1

# start_info.flags (SIF_*).
SIF_PRIVILEGED = 1 << 0
SIF_INITDOMAIN = 1 << 1
SIF_MULTIBOOT_MOD = 1 << 2
SIF_MOD_START_PFN = 1 << 3
SIF_VIRT_P2M_4TOOLS = 1 << 4
SIF_PM_MASK = 0xFF << 8


class hvm_start_info(XenStruct):
    """PVH start info (56 bytes for version 1)."""

    _fields_ = [
        ("magic", uint32_t),
        ("version", uint32_t),
        ("flags", uint32_t),  # SIF_*
        ("nr_modules", uint32_t),
        ("modlist_paddr", uint64_t),  # hvm_modlist_entry[nr_modules]
        ("cmdline_paddr", uint64_t),  # NUL-terminated
        ("rsdp_paddr", uint64_t),
        ("memmap_paddr", uint64_t),  # version >= 1: hvm_memmap_table_entry[]
        ("memmap_entries", uint32_t),  # version >= 1
        ("reserved", uint32_t),  # must be 0
    ]


class hvm_modlist_entry(XenStruct):
    """One boot module (32 bytes)."""

    _fields_ = [
        ("paddr", uint64_t),
        ("size", uint64_t),
        ("cmdline_paddr", uint64_t),
        ("reserved", uint64_t),
    ]


class hvm_memmap_table_entry(XenStruct):
    """One memory-map entry (24 bytes)."""

    _fields_ = [
        ("addr", uint64_t),
        ("size", uint64_t),
        ("type", uint32_t),  # XEN_HVM_MEMMAP_TYPE_*: the E820 types, memory.E820Type
        ("reserved", uint32_t),
    ]
