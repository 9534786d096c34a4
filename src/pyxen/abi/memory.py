"""``memory_op`` hypercall: mirrors ``xen/include/public/memory.h`` and
``xen/include/public/hvm/e820.h`` (Xen 4.12).

``xen_mem_acquire_resource`` (XENMEM_acquire_resource, a tools-only call in
4.12 whose layout later Xen changed) is not mirrored: nothing in pyxen uses it.
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import (
    CompatStruct,
    XenStruct,
    compat_handle_t,
    compat_pfn_t,
    compat_ulong_t,
    domid_t,
    uint16_t,
    uint32_t,
    uint64_t,
    xen_guest_handle_t,
    xen_pfn_t,
    xen_ulong_t,
)


class XenMem(IntEnum):
    """``XENMEM_*`` sub-commands of hypercall 12 (``cmd & MEMOP_CMD_MASK``)."""

    increase_reservation = 0
    decrease_reservation = 1
    maximum_ram_page = 2
    current_reservation = 3
    maximum_reservation = 4
    machphys_mfn_list = 5
    populate_physmap = 6
    add_to_physmap = 7
    # 8 was translate_gpfn_list; removed.
    memory_map = 9
    machine_memory_map = 10
    exchange = 11
    machphys_mapping = 12
    set_memory_map = 13
    maximum_gpfn = 14
    remove_from_physmap = 15
    set_pod_target = 16
    get_pod_target = 17
    get_sharing_freed_pages = 18
    get_sharing_shared_pages = 19
    paging_op = 20
    access_op = 21
    sharing_op = 22
    add_to_physmap_batch = 23
    claim_pages = 24
    machphys_compat_mfn_list = 25
    get_vnumainfo = 26
    reserved_device_memory_map = 27
    acquire_resource = 28


# cmd bits 5:0 select the op; bits 63:6 carry the continuation start extent.
MEMOP_CMD_MASK = 0x3F
MEMOP_EXTENT_SHIFT = 6

# xen_memory_reservation.mem_flags (XENMEMF_*).
XENMEMF_address_bits_mask = 0xFF
XENMEMF_populate_on_demand = 1 << 16
XENMEMF_exact_node_request = 1 << 17
XENMEMF_vnode = 1 << 18


def XENMEMF_address_bits(bits: int) -> int:
    """Restrict allocations to addresses below ``2**bits``."""
    return bits & XENMEMF_address_bits_mask


def XENMEMF_get_address_bits(flags: int) -> int:
    """Address-width limit encoded in ``flags`` (0 = none)."""
    return flags & XENMEMF_address_bits_mask


def XENMEMF_node(node: int) -> int:
    """Prefer NUMA node ``node`` (stored as node + 1 in bits 15:8)."""
    return ((node + 1) & 0xFF) << 8


def XENMEMF_get_node(flags: int) -> int:
    """Node requested in ``flags``; 0xFF means "no preference"."""
    return ((flags >> 8) - 1) & 0xFF


def XENMEMF_exact_node(node: int) -> int:
    """Require NUMA node ``node``."""
    return XENMEMF_node(node) | XENMEMF_exact_node_request


class xen_memory_reservation(XenStruct):
    """increase/decrease_reservation, populate_physmap argument (32 bytes)."""

    _fields_ = [
        ("extent_start", xen_guest_handle_t),  # xen_pfn_t[]
        ("nr_extents", xen_ulong_t),
        ("extent_order", uint32_t),
        ("mem_flags", uint32_t),
        ("domid", domid_t),
    ]


class compat_xen_memory_reservation(CompatStruct):
    """i386 ``xen_memory_reservation`` (20 bytes)."""

    _fields_ = [
        ("extent_start", compat_handle_t),
        ("nr_extents", compat_ulong_t),
        ("extent_order", uint32_t),
        ("mem_flags", uint32_t),
        ("domid", domid_t),
    ]


class xen_memory_map(XenStruct):
    """``XENMEM_memory_map`` argument (16 bytes)."""

    _fields_ = [
        ("nr_entries", uint32_t),  # IN: capacity; OUT: entries written
        ("buffer", xen_guest_handle_t),  # e820entry[]
    ]


class compat_xen_memory_map(CompatStruct):
    """i386 ``xen_memory_map`` (8 bytes)."""

    _fields_ = [
        ("nr_entries", uint32_t),
        ("buffer", compat_handle_t),
    ]


class xen_foreign_memory_map(XenStruct):
    """``XENMEM_set_memory_map`` argument (24 bytes; tools)."""

    _fields_ = [
        ("domid", domid_t),
        ("map", xen_memory_map),
    ]


class compat_xen_foreign_memory_map(CompatStruct):
    """i386 ``xen_foreign_memory_map`` (12 bytes)."""

    _fields_ = [
        ("domid", domid_t),
        ("map", compat_xen_memory_map),
    ]


class e820entry(XenStruct):
    """One BIOS E820 record as returned by memory_map (20 bytes, packed)."""

    _pack_ = 1
    _fields_ = [
        ("addr", uint64_t),
        ("size", uint64_t),
        ("type", uint32_t),
    ]


class E820Type(IntEnum):
    """E820 / ACPI address range types: the ``type`` of an ``e820entry`` and of an
    ``hvm_memmap_table_entry`` (start_info.h's ``XEN_HVM_MEMMAP_TYPE_*``, same values)."""

    RAM = 1
    RESERVED = 2
    ACPI = 3
    NVS = 4
    UNUSABLE = 5
    DISABLED = 6
    PMEM = 7


# hvm/e820.h: top of low RAM / start of the low MMIO hole.
HVM_BELOW_4G_RAM_END = 0xF0000000
HVM_BELOW_4G_MMIO_START = HVM_BELOW_4G_RAM_END
HVM_BELOW_4G_MMIO_LENGTH = (1 << 32) - HVM_BELOW_4G_MMIO_START
# Legacy firmware E820 page: entry count at +0x1E8, entries at +0x2D0.
HVM_E820_PAGE = 0x00090000
HVM_E820_NR_OFFSET = 0x000001E8
HVM_E820_OFFSET = 0x000002D0


class XenMapSpace(IntEnum):
    """``XENMAPSPACE_*``: what ``idx`` of add_to_physmap refers to."""

    shared_info = 0
    grant_table = 1
    gmfn = 2
    gmfn_range = 3
    gmfn_foreign = 4
    dev_mmio = 5


# OR into idx (space grant_table) to select a v2 status frame.
XENMAPIDX_grant_table_status = 0x80000000


class xen_add_to_physmap(XenStruct):
    """``XENMEM_add_to_physmap`` argument (24 bytes)."""

    _fields_ = [
        ("domid", domid_t),
        ("size", uint16_t),  # pages, for gmfn_range
        ("space", uint32_t),
        ("idx", xen_ulong_t),
        ("gpfn", xen_pfn_t),
    ]


class compat_xen_add_to_physmap(CompatStruct):
    """i386 ``xen_add_to_physmap`` (16 bytes)."""

    _fields_ = [
        ("domid", domid_t),
        ("size", uint16_t),
        ("space", uint32_t),
        ("idx", compat_ulong_t),
        ("gpfn", compat_pfn_t),
    ]


class xen_add_to_physmap_batch(XenStruct):
    """``XENMEM_add_to_physmap_batch`` argument (32 bytes).

    ``foreign_domid`` is the header's ``u.foreign_domid`` (alias ``u.res0``).
    """

    _fields_ = [
        ("domid", domid_t),
        ("space", uint16_t),
        ("size", uint16_t),
        ("foreign_domid", domid_t),
        ("idxs", xen_guest_handle_t),  # xen_ulong_t[]
        ("gpfns", xen_guest_handle_t),  # xen_pfn_t[]
        ("errs", xen_guest_handle_t),  # int[] (out)
    ]


class compat_xen_add_to_physmap_batch(CompatStruct):
    """i386 ``xen_add_to_physmap_batch`` (20 bytes)."""

    _fields_ = [
        ("domid", domid_t),
        ("space", uint16_t),
        ("size", uint16_t),
        ("foreign_domid", domid_t),
        ("idxs", compat_handle_t),
        ("gpfns", compat_handle_t),
        ("errs", compat_handle_t),
    ]


class xen_remove_from_physmap(XenStruct):
    """``XENMEM_remove_from_physmap`` argument (16 bytes)."""

    _fields_ = [
        ("domid", domid_t),
        ("gpfn", xen_pfn_t),
    ]


class compat_xen_remove_from_physmap(CompatStruct):
    """i386 ``xen_remove_from_physmap`` (8 bytes)."""

    _fields_ = [
        ("domid", domid_t),
        ("gpfn", compat_pfn_t),
    ]


class xen_pod_target(XenStruct):
    """``XENMEM_set/get_pod_target`` argument (40 bytes; tools)."""

    _fields_ = [
        ("target_pages", uint64_t),
        ("tot_pages", uint64_t),
        ("pod_cache_pages", uint64_t),
        ("pod_entries", uint64_t),
        ("domid", domid_t),
    ]


class compat_xen_pod_target(CompatStruct):
    """i386 ``xen_pod_target`` (36 bytes: no tail padding to 8)."""

    _fields_ = xen_pod_target._fields_


class xen_vnuma_topology_info(XenStruct):
    """``XENMEM_get_vnumainfo`` argument (40 bytes).

    Each handle sits in a union with a ``uint64_t`` pad, so the layout is
    the same for 32-bit callers (only the low 4 bytes of a handle count).
    """

    _fields_ = [
        ("domid", domid_t),
        ("pad", uint16_t),
        ("nr_vnodes", uint32_t),
        ("nr_vcpus", uint32_t),
        ("nr_vmemranges", uint32_t),
        ("vdistance", uint64_t),  # handle: uint[]
        ("vcpu_to_vnode", uint64_t),  # handle: uint[]
        ("vmemrange", uint64_t),  # handle: xen_vmemrange_t[]
    ]


class xen_vmemrange(XenStruct):
    """One vNUMA memory range (24 bytes)."""

    _fields_ = [
        ("start", uint64_t),
        ("end", uint64_t),
        ("flags", uint32_t),
        ("nid", uint32_t),
    ]
