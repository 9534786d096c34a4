"""``sched_op`` hypercall: mirrors ``xen/include/public/sched.h`` (Xen 4.12)."""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import (
    CompatStruct,
    XenStruct,
    compat_handle_t,
    domid_t,
    int32_t,
    uint32_t,
    uint64_t,
    xen_guest_handle_t,
)


class SchedOp(IntEnum):
    """``SCHEDOP_*`` sub-commands of hypercall 29."""

    yield_ = 0  # SCHEDOP_yield ("yield" is a Python keyword)
    block = 1
    shutdown = 2
    poll = 3
    remote_shutdown = 4
    shutdown_code = 5
    watchdog = 6
    pin_override = 7


class sched_shutdown(XenStruct):
    """``SCHEDOP_shutdown`` / ``SCHEDOP_shutdown_code`` argument (4 bytes)."""

    _fields_ = [("reason", uint32_t)]  # ShutdownReason


class sched_poll(XenStruct):
    """``SCHEDOP_poll`` argument (24 bytes)."""

    _fields_ = [
        ("ports", xen_guest_handle_t),  # evtchn_port_t[]
        ("nr_ports", uint32_t),
        ("timeout", uint64_t),  # absolute system time in ns; 0 = none
    ]


class compat_sched_poll(CompatStruct):
    """i386 ``sched_poll`` (16 bytes)."""

    _fields_ = [
        ("ports", compat_handle_t),
        ("nr_ports", uint32_t),
        ("timeout", uint64_t),
    ]


# Largest nr_ports SCHEDOP_poll accepts.
SCHEDOP_POLL_MAX_PORTS = 128


class sched_remote_shutdown(XenStruct):
    """``SCHEDOP_remote_shutdown`` argument (8 bytes)."""

    _fields_ = [
        ("domain_id", domid_t),
        ("reason", uint32_t),
    ]


class sched_watchdog(XenStruct):
    """``SCHEDOP_watchdog`` argument (8 bytes)."""

    _fields_ = [
        ("id", uint32_t),  # 0 allocates; otherwise 1..NR_DOMAIN_WATCHDOG_TIMERS
        ("timeout", uint32_t),  # seconds; 0 destroys
    ]


class sched_pin_override(XenStruct):
    """``SCHEDOP_pin_override`` argument (4 bytes)."""

    _fields_ = [("pcpu", int32_t)]


NR_DOMAIN_WATCHDOG_TIMERS = 2
