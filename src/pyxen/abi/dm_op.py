"""Device-model operations: mirrors ``xen/include/public/hvm/dm_op.h``
(Xen 4.12).

Call form ``dm_op(domid, nr_bufs, bufs[])``; ``bufs[0]`` holds a
``xen_dm_op``.  Only ``xen_dm_op_buf`` differs in the 32-bit ABI.
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import (
    CompatStruct,
    XenStruct,
    XenUnion,
    compat_handle_t,
    compat_ulong_t,
    evtchn_port_t,
    uint8_t,
    uint16_t,
    uint32_t,
    uint64_t,
    xen_guest_handle_t,
    xen_ulong_t,
)

ioservid_t = uint16_t


class DmOp(IntEnum):
    """``XEN_DMOP_*`` operations."""

    create_ioreq_server = 1
    get_ioreq_server_info = 2
    map_io_range_to_ioreq_server = 3
    unmap_io_range_from_ioreq_server = 4
    set_ioreq_server_state = 5
    destroy_ioreq_server = 6
    track_dirty_vram = 7
    set_pci_intx_level = 8
    set_isa_irq_level = 9
    set_pci_link_route = 10
    modified_memory = 11
    set_mem_type = 12
    inject_event = 13
    inject_msi = 14
    map_mem_type_to_ioreq_server = 15
    remote_shutdown = 16
    relocate_memory = 17
    pin_memory_cacheattr = 18


HVM_IOREQSRV_BUFIOREQ_OFF = 0
HVM_IOREQSRV_BUFIOREQ_LEGACY = 1
HVM_IOREQSRV_BUFIOREQ_ATOMIC = 2
XEN_DMOP_no_gfns = 1 << 0
XEN_DMOP_IO_RANGE_PORT = 0
XEN_DMOP_IO_RANGE_MEMORY = 1
XEN_DMOP_IO_RANGE_PCI = 2
XEN_DMOP_IOREQ_MEM_ACCESS_READ = 1 << 0
XEN_DMOP_IOREQ_MEM_ACCESS_WRITE = 1 << 1
XEN_DMOP_MEM_CACHEATTR_UC = 0
XEN_DMOP_MEM_CACHEATTR_WC = 1
XEN_DMOP_MEM_CACHEATTR_WT = 4
XEN_DMOP_MEM_CACHEATTR_WP = 5
XEN_DMOP_MEM_CACHEATTR_WB = 6
XEN_DMOP_MEM_CACHEATTR_UCM = 7
XEN_DMOP_DELETE_MEM_CACHEATTR = 0xFFFFFFFF


def XEN_DMOP_PCI_SBDF(seg: int, bus: int, dev: int, fn: int) -> int:
    """Encode a PCI address for ``XEN_DMOP_IO_RANGE_PCI``."""
    return (seg << 16) | (bus << 8) | (dev << 3) | fn


class xen_dm_op_buf(XenStruct):
    """One hypercall buffer descriptor (16 bytes)."""

    _fields_ = [("h", xen_guest_handle_t), ("size", xen_ulong_t)]


class compat_xen_dm_op_buf(CompatStruct):
    """i386 ``xen_dm_op_buf`` (8 bytes)."""

    _fields_ = [("h", compat_handle_t), ("size", compat_ulong_t)]


class xen_dm_op_create_ioreq_server(XenStruct):
    _fields_ = [("handle_bufioreq", uint8_t), ("pad", uint8_t * 3), ("id", ioservid_t)]


class xen_dm_op_get_ioreq_server_info(XenStruct):
    _fields_ = [
        ("id", ioservid_t),
        ("flags", uint16_t),
        ("bufioreq_port", evtchn_port_t),
        ("ioreq_gfn", uint64_t),
        ("bufioreq_gfn", uint64_t),
    ]


class xen_dm_op_ioreq_server_range(XenStruct):
    _fields_ = [
        ("id", ioservid_t),
        ("pad", uint16_t),
        ("type", uint32_t),
        ("start", uint64_t),
        ("end", uint64_t),  # inclusive
    ]


class xen_dm_op_set_ioreq_server_state(XenStruct):
    _fields_ = [("id", ioservid_t), ("enabled", uint8_t), ("pad", uint8_t)]


class xen_dm_op_destroy_ioreq_server(XenStruct):
    _fields_ = [("id", ioservid_t), ("pad", uint16_t)]


class xen_dm_op_track_dirty_vram(XenStruct):
    _fields_ = [("nr", uint32_t), ("pad", uint32_t), ("first_pfn", uint64_t)]


class xen_dm_op_set_pci_intx_level(XenStruct):
    _fields_ = [
        ("domain", uint16_t),
        ("bus", uint8_t),
        ("device", uint8_t),
        ("intx", uint8_t),
        ("level", uint8_t),
    ]


class xen_dm_op_set_isa_irq_level(XenStruct):
    _fields_ = [("isa_irq", uint8_t), ("level", uint8_t)]


class xen_dm_op_set_pci_link_route(XenStruct):
    _fields_ = [("link", uint8_t), ("isa_irq", uint8_t)]


class xen_dm_op_modified_memory(XenStruct):
    _fields_ = [("nr_extents", uint32_t), ("opaque", uint32_t)]


class xen_dm_op_modified_memory_extent(XenStruct):
    _fields_ = [("nr", uint32_t), ("pad", uint32_t), ("first_pfn", uint64_t)]


class xen_dm_op_set_mem_type(XenStruct):
    _fields_ = [
        ("nr", uint32_t),
        ("mem_type", uint16_t),
        ("pad", uint16_t),
        ("first_pfn", uint64_t),
    ]


class xen_dm_op_inject_event(XenStruct):
    _fields_ = [
        ("vcpuid", uint32_t),
        ("vector", uint8_t),
        ("type", uint8_t),
        ("insn_len", uint8_t),
        ("pad0", uint8_t),
        ("error_code", uint32_t),  # ~0 = none
        ("pad1", uint32_t),
        ("cr2", uint64_t),
    ]


class xen_dm_op_inject_msi(XenStruct):
    _fields_ = [("data", uint32_t), ("pad", uint32_t), ("addr", uint64_t)]


class xen_dm_op_map_mem_type_to_ioreq_server(XenStruct):
    _fields_ = [
        ("id", ioservid_t),
        ("type", uint16_t),
        ("flags", uint32_t),
        ("opaque", uint64_t),
    ]


class xen_dm_op_remote_shutdown(XenStruct):
    _fields_ = [("reason", uint32_t)]


class xen_dm_op_relocate_memory(XenStruct):
    _fields_ = [
        ("size", uint32_t),
        ("pad", uint32_t),
        ("src_gfn", uint64_t),
        ("dst_gfn", uint64_t),
    ]


class xen_dm_op_pin_memory_cacheattr(XenStruct):
    _fields_ = [
        ("start", uint64_t),
        ("end", uint64_t),
        ("type", uint32_t),
        ("pad", uint32_t),
    ]


class xen_dm_op_u(XenUnion):
    """The payload union ``u`` of ``xen_dm_op`` (24 bytes)."""

    _fields_ = [
        ("create_ioreq_server", xen_dm_op_create_ioreq_server),
        ("get_ioreq_server_info", xen_dm_op_get_ioreq_server_info),
        ("map_io_range_to_ioreq_server", xen_dm_op_ioreq_server_range),
        ("unmap_io_range_from_ioreq_server", xen_dm_op_ioreq_server_range),
        ("set_ioreq_server_state", xen_dm_op_set_ioreq_server_state),
        ("destroy_ioreq_server", xen_dm_op_destroy_ioreq_server),
        ("track_dirty_vram", xen_dm_op_track_dirty_vram),
        ("set_pci_intx_level", xen_dm_op_set_pci_intx_level),
        ("set_isa_irq_level", xen_dm_op_set_isa_irq_level),
        ("set_pci_link_route", xen_dm_op_set_pci_link_route),
        ("modified_memory", xen_dm_op_modified_memory),
        ("set_mem_type", xen_dm_op_set_mem_type),
        ("inject_event", xen_dm_op_inject_event),
        ("inject_msi", xen_dm_op_inject_msi),
        ("map_mem_type_to_ioreq_server", xen_dm_op_map_mem_type_to_ioreq_server),
        ("remote_shutdown", xen_dm_op_remote_shutdown),
        ("relocate_memory", xen_dm_op_relocate_memory),
        ("pin_memory_cacheattr", xen_dm_op_pin_memory_cacheattr),
    ]


class xen_dm_op(XenStruct):
    """``bufs[0]`` of a dm_op call (32 bytes)."""

    _fields_ = [("op", uint32_t), ("pad", uint32_t), ("u", xen_dm_op_u)]
