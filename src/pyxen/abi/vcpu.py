"""``vcpu_op`` hypercall: mirrors ``xen/include/public/vcpu.h`` (Xen 4.12).

The HVM/PVH ``VCPUOP_initialise`` context lives in :mod:`pyxen.abi.hvm`.
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import (
    CompatStruct,
    CompatUnion,
    XenStruct,
    XenUnion,
    compat_handle_t,
    int32_t,
    uint32_t,
    uint64_t,
    xen_guest_handle_t,
)


class VcpuOp(IntEnum):
    """``VCPUOP_*`` sub-commands of hypercall 24."""

    initialise = 0
    up = 1
    down = 2
    is_up = 3
    get_runstate_info = 4
    register_runstate_memory_area = 5
    set_periodic_timer = 6
    stop_periodic_timer = 7
    set_singleshot_timer = 8
    stop_singleshot_timer = 9
    register_vcpu_info = 10
    send_nmi = 11
    get_physid = 12
    register_vcpu_time_memory_area = 13


class RunstateState(IntEnum):
    """``RUNSTATE_*`` values of ``vcpu_runstate_info.state``."""

    running = 0
    runnable = 1
    blocked = 2
    offline = 3


# Set in state_entry_time while Xen updates the area (needs
# VMASST_TYPE_runstate_update_flag).
XEN_RUNSTATE_UPDATE = 1 << 63


class vcpu_runstate_info(XenStruct):
    """x86_64 ``vcpu_runstate_info`` (48 bytes)."""

    _fields_ = [
        ("state", int32_t),
        ("state_entry_time", uint64_t),
        ("time", uint64_t * 4),
    ]


class compat_vcpu_runstate_info(CompatStruct):
    """i386 ``vcpu_runstate_info`` (44 bytes: uint64_t is 4-byte aligned)."""

    _fields_ = [
        ("state", int32_t),
        ("state_entry_time", uint64_t),
        ("time", uint64_t * 4),
    ]


class vcpu_register_runstate_memory_area_addr(XenUnion):
    """The ``addr`` union: handle, pointer or raw u64 (8 bytes)."""

    _fields_ = [
        ("h", xen_guest_handle_t),
        ("v", xen_guest_handle_t),
        ("p", uint64_t),
    ]


class vcpu_register_runstate_memory_area(XenStruct):
    """``VCPUOP_register_runstate_memory_area`` argument (8 bytes)."""

    _fields_ = [("addr", vcpu_register_runstate_memory_area_addr)]


class compat_vcpu_register_runstate_memory_area_addr(CompatUnion):
    """i386 ``addr`` union (8 bytes because of ``p``)."""

    _fields_ = [
        ("h", compat_handle_t),
        ("v", compat_handle_t),
        ("p", uint64_t),
    ]


class compat_vcpu_register_runstate_memory_area(CompatStruct):
    """i386 ``vcpu_register_runstate_memory_area`` (8 bytes)."""

    _fields_ = [("addr", compat_vcpu_register_runstate_memory_area_addr)]


# VCPUOP_register_vcpu_time_memory_area uses the same union shape.
vcpu_register_time_memory_area = vcpu_register_runstate_memory_area
compat_vcpu_register_time_memory_area = compat_vcpu_register_runstate_memory_area


class vcpu_set_periodic_timer(XenStruct):
    """``VCPUOP_set_periodic_timer`` argument (8 bytes)."""

    _fields_ = [("period_ns", uint64_t)]


class vcpu_set_singleshot_timer(XenStruct):
    """x86_64 ``VCPUOP_set_singleshot_timer`` argument (16 bytes)."""

    _fields_ = [
        ("timeout_abs_ns", uint64_t),
        ("flags", uint32_t),
    ]


class compat_vcpu_set_singleshot_timer(CompatStruct):
    """i386 ``vcpu_set_singleshot_timer`` (12 bytes)."""

    _fields_ = [
        ("timeout_abs_ns", uint64_t),
        ("flags", uint32_t),
    ]


# vcpu_set_singleshot_timer.flags: fail with -ETIME if the deadline passed.
VCPU_SSHOTTMR_future = 1 << 0


class vcpu_register_vcpu_info(XenStruct):
    """``VCPUOP_register_vcpu_info`` argument (16 bytes, both ABIs)."""

    _fields_ = [
        ("mfn", uint64_t),  # a GFN for HVM/PVH
        ("offset", uint32_t),  # must be <= PAGE_SIZE - sizeof(vcpu_info)
        ("rsvd", uint32_t),
    ]


class vcpu_get_physid(XenStruct):
    """``VCPUOP_get_physid`` argument (8 bytes)."""

    _fields_ = [("phys_id", uint64_t)]


def xen_vcpu_physid_to_x86_apicid(phys_id: int) -> int:
    """APIC id from ``vcpu_get_physid.phys_id`` (bits 31:0)."""
    return phys_id & 0xFFFFFFFF


def xen_vcpu_physid_to_x86_acpiid(phys_id: int) -> int:
    """ACPI id from ``vcpu_get_physid.phys_id`` (bits 63:32)."""
    return (phys_id >> 32) & 0xFFFFFFFF
