"""ioreq and dm_op: mirrors ``xen/include/public/hvm/ioreq.h`` and ``hvm/dm_op.h`` (4.12).

Fact sheet §4.4-4.5.  ``struct ioreq`` is 32 bytes; the shared page holds
one per vCPU, indexed by vCPU id.  Byte 30 packs state (bits 0-3),
data_is_ptr (4), dir (5: 1 = read) and df (6).
"""

from __future__ import annotations

import struct
from enum import IntEnum

IOREQ_SIZE = 32
IOREQ_ADDR = 0
IOREQ_DATA = 8
IOREQ_COUNT = 16
IOREQ_SIZE_FIELD = 20
IOREQ_VP_EPORT = 24
IOREQ_FLAGS = 30
IOREQ_TYPE = 31
# addr u64, data u64, count u32, size u32, vp_eport u32, pad u16, flags u8, type u8
IOREQ_STRUCT = struct.Struct("<QQIIIHBB")
assert IOREQ_STRUCT.size == IOREQ_SIZE

FLAG_STATE_MASK = 0x0F
FLAG_DATA_IS_PTR = 1 << 4
FLAG_DIR_READ = 1 << 5
FLAG_DF = 1 << 6


class IoreqState(IntEnum):
    """``STATE_*``: a slot's state."""

    IOREQ_NONE = 0
    IOREQ_READY = 1
    IOREQ_INPROCESS = 2
    IORESP_READY = 3


class IoreqType(IntEnum):
    """``IOREQ_TYPE_*``."""

    PIO = 0
    COPY = 1  # MMIO
    PCI_CONFIG = 2
    TIMEOFFSET = 7
    INVALIDATE = 8


class DmOp(IntEnum):
    """``XEN_DMOP_*`` numbers (hypercall 41)."""

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


XEN_DM_OP_SIZE = 32  # op u32, pad u32, union u (24 bytes)
DM_OP_HEAD = struct.Struct("<II")
# Payloads within the union (offsets from byte 8 of xen_dm_op).
SET_PCI_INTX_LEVEL = struct.Struct("<HBBBB")  # domain, bus, device, intx, level
SET_ISA_IRQ_LEVEL = struct.Struct("<BB")  # isa_irq, level
SET_PCI_LINK_ROUTE = struct.Struct("<BB")  # link, isa_irq
REMOTE_SHUTDOWN = struct.Struct("<I")  # reason (SHUTDOWN_*)
