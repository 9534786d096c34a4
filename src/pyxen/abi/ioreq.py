"""Device-model I/O requests: mirrors ``xen/include/public/hvm/ioreq.h``
(Xen 4.12).

The synchronous ioreq page holds one ``ioreq`` per vCPU (indexed by vCPU
id); the buffered page is a ring of ``buf_ioreq`` slots.  Both layouts are
the same in the 32-bit ABI.
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import XenStruct, uint8_t, uint16_t, uint32_t, uint64_t


class IoreqState(IntEnum):
    """``STATE_IOREQ_*`` / ``STATE_IORESP_*`` handshake states."""

    NONE = 0
    READY = 1
    INPROCESS = 2
    RESP_READY = 3  # STATE_IORESP_READY


class IoreqType(IntEnum):
    """``IOREQ_TYPE_*``."""

    PIO = 0
    COPY = 1  # MMIO
    PCI_CONFIG = 2
    TIMEOFFSET = 7
    INVALIDATE = 8  # mapcache


IOREQ_READ = 1
IOREQ_WRITE = 0


class ioreq(XenStruct):
    """One synchronous I/O request (32 bytes); byte 30 holds bitfields."""

    _fields_ = [
        ("addr", uint64_t),  # physical address, port, or packed PCI SBDF+reg
        ("data", uint64_t),  # value, or a guest-physical address if data_is_ptr
        ("count", uint32_t),
        ("size", uint32_t),
        ("vp_eport", uint32_t),
        ("_pad0", uint16_t),
        ("state", uint8_t, 4),
        ("data_is_ptr", uint8_t, 1),
        ("dir", uint8_t, 1),  # IOREQ_READ / IOREQ_WRITE
        ("df", uint8_t, 1),
        ("_pad1", uint8_t, 1),
        ("type", uint8_t),  # IoreqType
    ]


class buf_ioreq(XenStruct):
    """One buffered request slot (8 bytes).

    The header declares type:8 then pad:1, dir:1, size:2, addr:20 sharing
    the first 32-bit word; declaring them all on ``uint32_t`` reproduces
    that bit placement.  size codes: 0 = 1, 1 = 2, 2 = 4, 3 = 8 bytes.
    """

    _fields_ = [
        ("type", uint32_t, 8),
        ("pad", uint32_t, 1),
        ("dir", uint32_t, 1),
        ("size", uint32_t, 2),
        ("addr", uint32_t, 20),
        ("data", uint32_t),
    ]


IOREQ_BUFFER_SLOT_NUM = 511


class buffered_iopage(XenStruct):
    """Buffered ioreq page (4096 bytes); slot used is pointer % 511."""

    _fields_ = [
        ("read_pointer", uint32_t),  # consumer: device model
        ("write_pointer", uint32_t),  # producer: Xen
        ("buf_ioreq", buf_ioreq * IOREQ_BUFFER_SLOT_NUM),
    ]


# HVM_PARAM_ACPI_IOPORTS_LOCATION = 1 (hvmloader) addresses.
ACPI_PM1A_EVT_BLK_ADDRESS_V1 = 0xB000
ACPI_PM1A_CNT_BLK_ADDRESS_V1 = 0xB004
ACPI_PM_TMR_BLK_ADDRESS_V1 = 0xB008
ACPI_GPE0_BLK_ADDRESS_V1 = 0xAFE0
ACPI_GPE0_BLK_LEN_V1 = 0x04
