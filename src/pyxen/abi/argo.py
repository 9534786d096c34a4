"""Argo: mirrors ``xen/include/public/argo.h`` (Xen 4.12).

Every structure is built from fixed-width types, so one layout serves both
guest ABIs, except ``xen_argo_iov``, whose handle is a 32-bit pointer in a
32-bit guest (``compat_xen_argo_iov``, 12 bytes).  The ring itself
(``xen_argo_ring``: a 64-byte header, then the data) and the message header
live in guest memory; the ring arithmetic is in ``pyxen.hv.argo.ring``.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

from pyxen.abi._types import (
    CompatStruct,
    XenStruct,
    compat_handle_t,
    domid_t,
    uint8_t,
    uint16_t,
    uint32_t,
    xen_guest_handle_t,
)
from pyxen.abi.xen import DOMID_INVALID

XEN_ARGO_DOMID_ANY = DOMID_INVALID
XEN_ARGO_MAX_RING_SIZE = 0x1000000
XEN_ARGO_MAXIOV = 8
XEN_ARGO_MSG_SLOT_SIZE = 0x10
XEN_ARGO_REGISTER_FLAG_FAIL_EXIST = 0x1
XEN_ARGO_REGISTER_FLAG_MASK = XEN_ARGO_REGISTER_FLAG_FAIL_EXIST


class ArgoOp(IntEnum):
    """``XEN_ARGO_OP_*`` commands of hypercall 39."""

    register_ring = 1
    unregister_ring = 2
    sendv = 3
    notify = 4


class ArgoRingFlags(IntFlag):
    """``XEN_ARGO_RING_*``: what ``notify`` reports of one ring (``ent.flags``)."""

    EXISTS = 1 << 0
    SHARED = 1 << 1
    EMPTY = 1 << 2
    SUFFICIENT = 1 << 3
    EMSGSIZE = 1 << 4
    EBUSY = 1 << 5


class xen_argo_iov(XenStruct):
    _fields_ = [
        ("iov_hnd", xen_guest_handle_t),
        ("iov_len", uint32_t),
        ("pad", uint32_t),
    ]


class compat_xen_argo_iov(CompatStruct):
    _fields_ = [
        ("iov_hnd", compat_handle_t),
        ("iov_len", uint32_t),
        ("pad", uint32_t),
    ]


class xen_argo_addr(XenStruct):
    _fields_ = [
        ("aport", uint32_t),
        ("domain_id", domid_t),
        ("pad", uint16_t),
    ]


class xen_argo_send_addr(XenStruct):
    _fields_ = [
        ("src", xen_argo_addr),
        ("dst", xen_argo_addr),
    ]


class xen_argo_ring(XenStruct):
    """The ring header at the start of the ring's first page (data follows at 64)."""

    _fields_ = [
        ("rx_ptr", uint32_t),
        ("tx_ptr", uint32_t),
        ("reserved", uint8_t * 56),
    ]


class xen_argo_register_ring(XenStruct):
    _fields_ = [
        ("aport", uint32_t),
        ("partner_id", domid_t),
        ("pad", uint16_t),
        ("len", uint32_t),
    ]


class xen_argo_unregister_ring(XenStruct):
    _fields_ = [
        ("aport", uint32_t),
        ("partner_id", domid_t),
        ("pad", uint16_t),
    ]


class xen_argo_ring_data_ent(XenStruct):
    _fields_ = [
        ("ring", xen_argo_addr),
        ("flags", uint16_t),
        ("pad", uint16_t),
        ("space_required", uint32_t),
        ("max_message_size", uint32_t),
    ]


class xen_argo_ring_data(XenStruct):
    """The fixed part; ``nent`` ``xen_argo_ring_data_ent`` follow at offset 8."""

    _fields_ = [
        ("nent", uint32_t),
        ("pad", uint32_t),
    ]


class xen_argo_ring_message_header(XenStruct):
    """A message's header in the ring; the payload follows at offset 16."""

    _fields_ = [
        ("len", uint32_t),
        ("source", xen_argo_addr),
        ("message_type", uint32_t),
    ]
