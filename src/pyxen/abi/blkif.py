"""PV block devices: mirrors ``xen/include/public/io/blkif.h`` and the blkif
instance of ``io/ring.h``'s ``DEFINE_RING_TYPES`` (Xen 4.12, spec section 12).

The frontend puts requests on a shared ring (``blkif_sring``: a 64-byte
header of four free-running u32 indices, then a power-of-two array of
``blkif_sring_entry`` slots, each a union of a request and a response); the
backend answers in the same slots.  Data travels in granted pages named by
``blkif_request_segment`` (grant ref, first and last 512-byte sector used in
the page, inclusive).

Two layouts: x86_64 guests use the natural one (a 112-byte request), i386
guests -- the "x86_32-abi" protocol, which GRUB uses -- the ``compat_*``
twins, where ``uint64_t`` is only 4-byte aligned (a 108-byte request, a
12-byte response).  ``blkif_request_segment`` is the same in both.
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import (
    CompatStruct,
    CompatUnion,
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
RING_IDX = uint32_t


class BlkifOp(IntEnum):
    """``BLKIF_OP_*`` request operations."""

    READ = 0
    WRITE = 1
    WRITE_BARRIER = 2
    FLUSH_DISKCACHE = 3
    RESERVED_1 = 4  # reserved for a vendor's device-specific command; not served
    DISCARD = 5
    INDIRECT = 6


class BlkifRsp(IntEnum):
    """``BLKIF_RSP_*`` response status values (an s16 in the response)."""

    EOPNOTSUPP = -2
    ERROR = -1
    OKAY = 0


BLKIF_MAX_SEGMENTS_PER_REQUEST = 11
BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8
BLKIF_DISCARD_SECURE = 1 << 0

# pyxen's names for facts the header states in prose.
BLKIF_SECTOR_SIZE = 512  # sector_number, first_sect, last_sect units
BLKIF_PAGE_SIZE = 4096  # a granted frame; first/last_sect run 0..7
BLKIF_SECTORS_PER_PAGE = BLKIF_PAGE_SIZE // BLKIF_SECTOR_SIZE
BLKIF_SEGMENTS_PER_INDIRECT_PAGE = 512  # 4096 / sizeof(blkif_request_segment)

# VDISK_* bits of the backend's ``info`` node.
VDISK_CDROM = 0x1
VDISK_REMOVABLE = 0x2
VDISK_READONLY = 0x4

# Offset of ring[] in every sring: four indices, pvt (4), __pad[44].
SRING_HEADER_SIZE = 64


class blkif_request_segment(XenStruct):
    """One granted data page of a request (8 bytes, both ABIs)."""

    _fields_ = [
        ("gref", grant_ref_t),
        ("first_sect", uint8_t),  # first 512-byte sector in the page (inclusive)
        ("last_sect", uint8_t),  # last one (inclusive)
    ]


class blkif_request(XenStruct):
    """READ / WRITE / WRITE_BARRIER / FLUSH_DISKCACHE request (112 bytes)."""

    _fields_ = [
        ("operation", uint8_t),
        ("nr_segments", uint8_t),
        ("handle", blkif_vdev_t),
        ("id", uint64_t),  # echoed in the response
        ("sector_number", blkif_sector_t),
        ("seg", blkif_request_segment * BLKIF_MAX_SEGMENTS_PER_REQUEST),
    ]


class compat_blkif_request(CompatStruct):
    """i386 ``blkif_request`` (108 bytes)."""

    _fields_ = [
        ("operation", uint8_t),
        ("nr_segments", uint8_t),
        ("handle", blkif_vdev_t),
        ("id", uint64_t),
        ("sector_number", blkif_sector_t),
        ("seg", blkif_request_segment * BLKIF_MAX_SEGMENTS_PER_REQUEST),
    ]


class blkif_request_discard(XenStruct):
    """DISCARD request (32 bytes)."""

    _fields_ = [
        ("operation", uint8_t),
        ("flag", uint8_t),  # BLKIF_DISCARD_SECURE or 0
        ("handle", blkif_vdev_t),
        ("id", uint64_t),
        ("sector_number", blkif_sector_t),
        ("nr_sectors", uint64_t),
    ]


class compat_blkif_request_discard(CompatStruct):
    """i386 ``blkif_request_discard`` (28 bytes)."""

    _fields_ = [
        ("operation", uint8_t),
        ("flag", uint8_t),
        ("handle", blkif_vdev_t),
        ("id", uint64_t),
        ("sector_number", blkif_sector_t),
        ("nr_sectors", uint64_t),
    ]


class blkif_request_indirect(XenStruct):
    """INDIRECT request: segments listed in granted pages (64 bytes)."""

    _fields_ = [
        ("operation", uint8_t),
        ("indirect_op", uint8_t),  # READ or WRITE
        ("nr_segments", uint16_t),
        ("id", uint64_t),
        ("sector_number", blkif_sector_t),
        ("handle", blkif_vdev_t),
        ("indirect_grefs", grant_ref_t * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST),
    ]


class compat_blkif_request_indirect(CompatStruct):
    """i386 ``blkif_request_indirect`` (64 bytes: an explicit trailing pad)."""

    _fields_ = [
        ("operation", uint8_t),
        ("indirect_op", uint8_t),
        ("nr_segments", uint16_t),
        ("id", uint64_t),
        ("sector_number", blkif_sector_t),
        ("handle", blkif_vdev_t),
        ("indirect_grefs", grant_ref_t * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST),
        ("pad", uint64_t),
    ]


class blkif_response(XenStruct):
    """A response (16 bytes)."""

    _fields_ = [
        ("id", uint64_t),  # the request's
        ("operation", uint8_t),  # the request's
        ("status", int16_t),  # BlkifRsp
    ]


class compat_blkif_response(CompatStruct):
    """i386 ``blkif_response`` (12 bytes)."""

    _fields_ = [
        ("id", uint64_t),
        ("operation", uint8_t),
        ("status", int16_t),
    ]


class blkif_sring_entry(XenUnion):
    """One ring slot (112 bytes)."""

    _fields_ = [
        ("req", blkif_request),
        ("rsp", blkif_response),
    ]


class compat_blkif_sring_entry(CompatUnion):
    """i386 ring slot (108 bytes)."""

    _fields_ = [
        ("req", compat_blkif_request),
        ("rsp", compat_blkif_response),
    ]


class blkif_sring_pvt(XenUnion):
    """``pvt`` of the sring header (4 bytes; unused by blkif)."""

    _fields_ = [("pvt_pad", uint8_t * 4)]


class blkif_sring(XenStruct):
    """Shared ring page: header then ``ring[]`` (declared with one entry)."""

    _fields_ = [
        ("req_prod", RING_IDX),
        ("req_event", RING_IDX),
        ("rsp_prod", RING_IDX),
        ("rsp_event", RING_IDX),
        ("pvt", blkif_sring_pvt),
        ("__pad", uint8_t * 44),
        ("ring", blkif_sring_entry * 1),
    ]


class compat_blkif_sring(CompatStruct):
    """i386 shared ring page (the header is the same; slots are 108 bytes)."""

    _fields_ = [
        ("req_prod", RING_IDX),
        ("req_event", RING_IDX),
        ("rsp_prod", RING_IDX),
        ("rsp_event", RING_IDX),
        ("pvt", blkif_sring_pvt),
        ("__pad", uint8_t * 44),
        ("ring", compat_blkif_sring_entry * 1),
    ]
