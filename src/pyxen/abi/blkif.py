"""Block device interface: mirrors ``xen/include/public/io/blkif.h``
(Xen 4.12).

The ``compat_*`` variants are the "x86_32-abi" protocol layouts, where
``uint64_t`` is 4-byte aligned.
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import (
    CompatStruct,
    XenStruct,
    XenUnion,
    grant_ref_t,
    int16_t,
    uint8_t,
    uint16_t,
    uint32_t,
    uint64_t,
)

blkif_vdev_t = uint16_t
blkif_sector_t = uint64_t


class BlkifOp(IntEnum):
    """``BLKIF_OP_*`` request operations."""

    READ = 0
    WRITE = 1
    WRITE_BARRIER = 2
    FLUSH_DISKCACHE = 3
    RESERVED_1 = 4
    DISCARD = 5
    INDIRECT = 6


class BlkifRsp(IntEnum):
    """``BLKIF_RSP_*`` response status codes."""

    EOPNOTSUPP = -2
    ERROR = -1
    OKAY = 0


BLKIF_MAX_SEGMENTS_PER_REQUEST = 11
BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8
# Segments described by one indirect page (4096 / 8).
BLKIF_SEGS_PER_INDIRECT_FRAME = 512
BLKIF_DISCARD_SECURE = 1 << 0

# Units of sector_number / first_sect / last_sect.
BLKIF_SECTOR_SIZE = 512

# "info" node bits.
VDISK_CDROM = 0x1
VDISK_REMOVABLE = 0x2
VDISK_READONLY = 0x4

# "protocol" node values.
XEN_IO_PROTO_ABI_X86_32 = "x86_32-abi"
XEN_IO_PROTO_ABI_X86_64 = "x86_64-abi"


class blkif_request_segment(XenStruct):
    """One data segment: a granted frame and a sector range (8 bytes)."""

    _fields_ = [
        ("gref", grant_ref_t),
        ("first_sect", uint8_t),
        ("last_sect", uint8_t),  # inclusive
        ("_pad", uint16_t),
    ]


class blkif_request(XenStruct):
    """Read/write/barrier/flush request (112 bytes)."""

    _fields_ = [
        ("operation", uint8_t),
        ("nr_segments", uint8_t),
        ("handle", blkif_vdev_t),
        ("id", uint64_t),
        ("sector_number", blkif_sector_t),
        ("seg", blkif_request_segment * BLKIF_MAX_SEGMENTS_PER_REQUEST),
    ]


class blkif_request_discard(XenStruct):
    """``BLKIF_OP_DISCARD`` request (32 bytes)."""

    _fields_ = [
        ("operation", uint8_t),
        ("flag", uint8_t),  # BLKIF_DISCARD_SECURE
        ("handle", blkif_vdev_t),
        ("id", uint64_t),
        ("sector_number", blkif_sector_t),
        ("nr_sectors", uint64_t),
    ]


class blkif_request_indirect(XenStruct):
    """``BLKIF_OP_INDIRECT`` request (64 bytes)."""

    _fields_ = [
        ("operation", uint8_t),
        ("indirect_op", uint8_t),
        ("nr_segments", uint16_t),
        ("_pad1", uint32_t),
        ("id", uint64_t),
        ("sector_number", blkif_sector_t),
        ("handle", blkif_vdev_t),
        ("_pad2", uint16_t),
        ("indirect_grefs", grant_ref_t * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST),
        ("_pad3", uint32_t),
    ]


class blkif_response(XenStruct):
    """Response (16 bytes)."""

    _fields_ = [
        ("id", uint64_t),
        ("operation", uint8_t),
        ("status", int16_t),  # BlkifRsp
    ]


class blkif_sring_entry(XenUnion):
    """One ring slot: request or response (112 bytes)."""

    _fields_ = [
        ("req", blkif_request),
        ("rsp", blkif_response),
    ]


class compat_blkif_request(CompatStruct):
    """x86_32-abi ``blkif_request`` (108 bytes)."""

    _fields_ = [
        ("operation", uint8_t),
        ("nr_segments", uint8_t),
        ("handle", blkif_vdev_t),
        ("id", uint64_t),
        ("sector_number", blkif_sector_t),
        ("seg", blkif_request_segment * BLKIF_MAX_SEGMENTS_PER_REQUEST),
    ]


class compat_blkif_response(CompatStruct):
    """x86_32-abi ``blkif_response`` (12 bytes)."""

    _fields_ = [
        ("id", uint64_t),
        ("operation", uint8_t),
        ("status", int16_t),
    ]


def blkif_vdev_xvd(disk: int, partition: int = 0) -> int:
    """``virtual-device`` number of xvd disk ``disk``, partition ``partition``."""
    if disk < 16 and partition < 16:
        return (202 << 8) | (disk << 4) | partition
    return (1 << 28) | (disk << 8) | partition
