"""Generic shared rings: mirrors ``xen/include/public/io/ring.h`` (Xen 4.12).

A ring page starts with a 64-byte header; the entries (a union of request
and response) follow.  ``RING_IDX`` counters are free-running u32.
"""

from __future__ import annotations

from pyxen.abi._types import XenStruct, XenUnion, uint8_t, uint32_t

RING_IDX = uint32_t
SRING_HEADER_SIZE = 64


class sring_pvt(XenUnion):
    """The driver-private ``pvt`` union (4 bytes)."""

    _fields_ = [("pvt_pad", uint8_t * 4)]


class sring_header(XenStruct):
    """Shared ring header (64 bytes); ``ring[]`` starts right after it."""

    _fields_ = [
        ("req_prod", RING_IDX),
        ("req_event", RING_IDX),
        ("rsp_prod", RING_IDX),
        ("rsp_event", RING_IDX),
        ("pvt", sring_pvt),
        ("__pad", uint8_t * 44),
    ]


def ring_size(area_size: int, entry_size: int) -> int:
    """Entries in a ring of ``area_size`` bytes: rounded down to a power of 2."""
    count = (area_size - SRING_HEADER_SIZE) // entry_size
    if count <= 0:
        return 0
    return 1 << (count.bit_length() - 1)


def ring_need_notify(old: int, new: int, event: int) -> bool:
    """Producer check after publishing ``new`` (was ``old``): notify the peer?"""
    mask = 0xFFFFFFFF
    return ((new - event) & mask) < ((new - old) & mask)
