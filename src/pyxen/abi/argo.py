"""Argo interdomain messaging: mirrors ``xen/include/public/argo.h``
(Xen 4.12).

Only ``xen_argo_iov`` carries a guest handle; every other structure is built
from fixed-width types and is shared by both ABIs.
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import (
    CompatStruct,
    XenStruct,
    compat_handle_t,
    domid_t,
    uint8_t,
    uint16_t,
    uint32_t,
    uint64_t,
    xen_guest_handle_t,
)
from pyxen.abi.xen import DOMID_INVALID


class ArgoOp(IntEnum):
    """``XEN_ARGO_OP_*`` commands of hypercall 39."""

    register_ring = 1
    unregister_ring = 2
    sendv = 3
    notify = 4


XEN_ARGO_DOMID_ANY = DOMID_INVALID
XEN_ARGO_MAX_RING_SIZE = 0x1000000
XEN_ARGO_MAXIOV = 8
XEN_ARGO_MSG_SLOT_SIZE = 0x10
XEN_ARGO_REGISTER_FLAG_FAIL_EXIST = 0x1
XEN_ARGO_REGISTER_FLAG_MASK = XEN_ARGO_REGISTER_FLAG_FAIL_EXIST

# Notify flags written by Xen into xen_argo_ring_data_ent.flags.
XEN_ARGO_RING_EXISTS = 1 << 0
XEN_ARGO_RING_SHARED = 1 << 1
XEN_ARGO_RING_EMPTY = 1 << 2
XEN_ARGO_RING_SUFFICIENT = 1 << 3
XEN_ARGO_RING_EMSGSIZE = 1 << 4
XEN_ARGO_RING_EBUSY = 1 << 5

xen_argo_port_t = uint32_t
xen_argo_gfn_t = uint64_t


class xen_argo_iov(XenStruct):
    """One send buffer (16 bytes)."""

    _fields_ = [
        ("iov_hnd", xen_guest_handle_t),  # uint8_t[]
        ("iov_len", uint32_t),
        ("pad", uint32_t),  # must be 0
    ]


class compat_xen_argo_iov(CompatStruct):
    """i386 ``xen_argo_iov`` (12 bytes)."""

    _fields_ = [
        ("iov_hnd", compat_handle_t),
        ("iov_len", uint32_t),
        ("pad", uint32_t),
    ]


class xen_argo_addr(XenStruct):
    """Argo address: (port, domain) (8 bytes)."""

    _fields_ = [
        ("aport", xen_argo_port_t),
        ("domain_id", domid_t),
        ("pad", uint16_t),  # must be 0
    ]


class xen_argo_send_addr(XenStruct):
    """``sendv`` source and destination (16 bytes)."""

    _fields_ = [
        ("src", xen_argo_addr),
        ("dst", xen_argo_addr),
    ]


XEN_ARGO_RING_HEADER_RESERVED = 56


class xen_argo_ring(XenStruct):
    """Ring header at the start of page 0 (64 bytes); data follows."""

    _fields_ = [
        ("rx_ptr", uint32_t),
        ("tx_ptr", uint32_t),
        ("reserved", uint8_t * XEN_ARGO_RING_HEADER_RESERVED),
    ]


class xen_argo_register_ring(XenStruct):
    """``register_ring`` arg1 (12 bytes)."""

    _fields_ = [
        ("aport", xen_argo_port_t),
        ("partner_id", domid_t),
        ("pad", uint16_t),
        ("len", uint32_t),
    ]


class xen_argo_unregister_ring(XenStruct):
    """``unregister_ring`` arg1 (8 bytes)."""

    _fields_ = [
        ("aport", xen_argo_port_t),
        ("partner_id", domid_t),
        ("pad", uint16_t),
    ]


class xen_argo_ring_data_ent(XenStruct):
    """One ``notify`` query (20 bytes)."""

    _fields_ = [
        ("ring", xen_argo_addr),
        ("flags", uint16_t),  # OUT: XEN_ARGO_RING_*
        ("pad", uint16_t),
        ("space_required", uint32_t),  # IN
        ("max_message_size", uint32_t),  # OUT
    ]


class xen_argo_ring_data(XenStruct):
    """``notify`` header (8 bytes); ``nent`` entries follow."""

    _fields_ = [
        ("nent", uint32_t),
        ("pad", uint32_t),
    ]


class xen_argo_ring_message_header(XenStruct):
    """Header of a message in a ring (16 bytes); payload follows."""

    _fields_ = [
        ("len", uint32_t),  # payload length + 16
        ("source", xen_argo_addr),
        ("message_type", uint32_t),
    ]


# Largest payload: ring max minus ring header slot and message header.
MAX_ARGO_MESSAGE_SIZE = XEN_ARGO_MAX_RING_SIZE - 2 * XEN_ARGO_MSG_SLOT_SIZE
# Implementation limits of the 4.12 hypervisor.
MAX_RINGS_PER_DOMAIN = 128
MAX_PENDING_PER_RING = 32
MAX_NOTIFY_COUNT = 256
