"""Event channels: mirrors ``xen/include/public/event_channel.h`` (Xen 4.12).

Every argument structure is built from fixed-width types, so the 32-bit ABI
shares these layouts.  The 2-level pending/mask bitmaps themselves live in
``shared_info`` (:mod:`pyxen.abi.xen`).
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import (
    XenStruct,
    XenUnion,
    domid_t,
    evtchn_port_t,
    uint8_t,
    uint32_t,
    uint64_t,
)


class EvtchnOp(IntEnum):
    """``EVTCHNOP_*`` sub-commands of hypercall 32."""

    bind_interdomain = 0
    bind_virq = 1
    bind_pirq = 2
    close = 3
    send = 4
    status = 5
    alloc_unbound = 6
    bind_ipi = 7
    bind_vcpu = 8
    unmask = 9
    reset = 10
    init_control = 11
    expand_array = 12
    set_priority = 13


class evtchn_alloc_unbound(XenStruct):
    """``EVTCHNOP_alloc_unbound`` (8 bytes)."""

    _fields_ = [
        ("dom", domid_t),
        ("remote_dom", domid_t),
        ("port", evtchn_port_t),  # OUT
    ]


class evtchn_bind_interdomain(XenStruct):
    """``EVTCHNOP_bind_interdomain`` (12 bytes)."""

    _fields_ = [
        ("remote_dom", domid_t),
        ("remote_port", evtchn_port_t),
        ("local_port", evtchn_port_t),  # OUT
    ]


class evtchn_bind_virq(XenStruct):
    """``EVTCHNOP_bind_virq`` (12 bytes)."""

    _fields_ = [
        ("virq", uint32_t),
        ("vcpu", uint32_t),
        ("port", evtchn_port_t),  # OUT
    ]


BIND_PIRQ__WILL_SHARE = 1


class evtchn_bind_pirq(XenStruct):
    """``EVTCHNOP_bind_pirq`` (12 bytes)."""

    _fields_ = [
        ("pirq", uint32_t),
        ("flags", uint32_t),  # BIND_PIRQ__*
        ("port", evtchn_port_t),  # OUT
    ]


class evtchn_bind_ipi(XenStruct):
    """``EVTCHNOP_bind_ipi`` (8 bytes)."""

    _fields_ = [
        ("vcpu", uint32_t),
        ("port", evtchn_port_t),  # OUT
    ]


class evtchn_close(XenStruct):
    """``EVTCHNOP_close`` (4 bytes)."""

    _fields_ = [("port", evtchn_port_t)]


class evtchn_send(XenStruct):
    """``EVTCHNOP_send`` (4 bytes)."""

    _fields_ = [("port", evtchn_port_t)]


class EvtchnStat(IntEnum):
    """``EVTCHNSTAT_*`` values of ``evtchn_status.status``."""

    closed = 0
    unbound = 1
    interdomain = 2
    pirq = 3
    virq = 4
    ipi = 5


class evtchn_status_unbound(XenStruct):
    """``u.unbound`` of ``evtchn_status``."""

    _fields_ = [("dom", domid_t)]


class evtchn_status_interdomain(XenStruct):
    """``u.interdomain`` of ``evtchn_status`` (8 bytes)."""

    _fields_ = [
        ("dom", domid_t),
        ("port", evtchn_port_t),
    ]


class evtchn_status_u(XenUnion):
    """The ``u`` union of ``evtchn_status`` (8 bytes)."""

    _fields_ = [
        ("unbound", evtchn_status_unbound),
        ("interdomain", evtchn_status_interdomain),
        ("pirq", uint32_t),
        ("virq", uint32_t),
    ]


class evtchn_status(XenStruct):
    """``EVTCHNOP_status`` (24 bytes)."""

    _fields_ = [
        ("dom", domid_t),
        ("port", evtchn_port_t),
        ("status", uint32_t),  # OUT: EvtchnStat
        ("vcpu", uint32_t),  # OUT
        ("u", evtchn_status_u),  # OUT
    ]


class evtchn_bind_vcpu(XenStruct):
    """``EVTCHNOP_bind_vcpu`` (8 bytes)."""

    _fields_ = [
        ("port", evtchn_port_t),
        ("vcpu", uint32_t),
    ]


class evtchn_unmask(XenStruct):
    """``EVTCHNOP_unmask`` (4 bytes)."""

    _fields_ = [("port", evtchn_port_t)]


class evtchn_reset(XenStruct):
    """``EVTCHNOP_reset`` (2 bytes)."""

    _fields_ = [("dom", domid_t)]


class evtchn_init_control(XenStruct):
    """``EVTCHNOP_init_control`` (FIFO ABI, 24 bytes)."""

    _fields_ = [
        ("control_gfn", uint64_t),
        ("offset", uint32_t),
        ("vcpu", uint32_t),
        ("link_bits", uint8_t),  # OUT
        ("_pad", uint8_t * 7),
    ]


class evtchn_expand_array(XenStruct):
    """``EVTCHNOP_expand_array`` (FIFO ABI, 8 bytes)."""

    _fields_ = [("array_gfn", uint64_t)]


class evtchn_set_priority(XenStruct):
    """``EVTCHNOP_set_priority`` (FIFO ABI, 8 bytes)."""

    _fields_ = [
        ("port", evtchn_port_t),
        ("priority", uint32_t),
    ]


class evtchn_op_u(XenUnion):
    """The argument union of the legacy ``evtchn_op`` (24 bytes)."""

    _fields_ = [
        ("alloc_unbound", evtchn_alloc_unbound),
        ("bind_interdomain", evtchn_bind_interdomain),
        ("bind_virq", evtchn_bind_virq),
        ("bind_pirq", evtchn_bind_pirq),
        ("bind_ipi", evtchn_bind_ipi),
        ("close", evtchn_close),
        ("send", evtchn_send),
        ("status", evtchn_status),
        ("bind_vcpu", evtchn_bind_vcpu),
        ("unmask", evtchn_unmask),
    ]


class evtchn_op(XenStruct):
    """Legacy ``evtchn_op`` {cmd, union} (28 bytes); hypercall 16 only."""

    _fields_ = [
        ("cmd", uint32_t),
        ("u", evtchn_op_u),
    ]


# --- 2-level ABI --------------------------------------------------------

# Bits per pending/mask/selector word.
BITS_PER_EVTCHN_WORD = 64
COMPAT_BITS_PER_EVTCHN_WORD = 32
# Ports: (bits per word) ** 2.
EVTCHN_2L_NR_CHANNELS = BITS_PER_EVTCHN_WORD * BITS_PER_EVTCHN_WORD  # 4096
COMPAT_EVTCHN_2L_NR_CHANNELS = COMPAT_BITS_PER_EVTCHN_WORD * COMPAT_BITS_PER_EVTCHN_WORD  # 1024

# --- FIFO ABI -------------------------------------------------------------

EVTCHN_FIFO_PRIORITY_MAX = 0
EVTCHN_FIFO_PRIORITY_DEFAULT = 7
EVTCHN_FIFO_PRIORITY_MIN = 15
EVTCHN_FIFO_MAX_QUEUES = EVTCHN_FIFO_PRIORITY_MIN + 1

# Event word bits.
EVTCHN_FIFO_PENDING = 31
EVTCHN_FIFO_MASKED = 30
EVTCHN_FIFO_LINKED = 29
EVTCHN_FIFO_BUSY = 28
EVTCHN_FIFO_LINK_BITS = 17
EVTCHN_FIFO_LINK_MASK = (1 << EVTCHN_FIFO_LINK_BITS) - 1
EVTCHN_FIFO_NR_CHANNELS = 1 << EVTCHN_FIFO_LINK_BITS


class evtchn_fifo_control_block(XenStruct):
    """Per-vCPU FIFO control block (72 bytes)."""

    _fields_ = [
        ("ready", uint32_t),
        ("_rsvd", uint32_t),
        ("head", uint32_t * EVTCHN_FIFO_MAX_QUEUES),
    ]
