"""Core guest ABI: mirrors ``xen/include/public/xen.h`` and ``arch-x86/xen.h``
(plus ``arch-x86/xen-x86_64.h`` / ``xen-x86_32.h``) from Xen 4.12.

Holds the hypercall numbers, the special domain ids, VIRQ numbers, shutdown
reasons and the ``shared_info`` / ``vcpu_info`` page layouts.  The 64-bit
layouts are used once a guest latches the 64-bit ABI (hypercall-page MSR
write or ``HVM_PARAM_CALLBACK_IRQ`` from long mode); otherwise the
``compat_*`` (i386) layouts apply.
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import (
    CompatStruct,
    XenStruct,
    compat_pfn_t,
    compat_ulong_t,
    int8_t,
    uint8_t,
    uint32_t,
    uint64_t,
    xen_pfn_t,
    xen_ulong_t,
)


class Hypercall(IntEnum):
    """``__HYPERVISOR_*`` hypercall numbers."""

    set_trap_table = 0
    mmu_update = 1
    set_gdt = 2
    stack_switch = 3
    set_callbacks = 4
    fpu_taskswitch = 5
    sched_op_compat = 6
    platform_op = 7  # formerly dom0_op
    set_debugreg = 8
    get_debugreg = 9
    update_descriptor = 10
    # 11 is unassigned.
    memory_op = 12
    multicall = 13
    update_va_mapping = 14
    set_timer_op = 15
    event_channel_op_compat = 16
    xen_version = 17
    console_io = 18
    physdev_op_compat = 19
    grant_table_op = 20
    vm_assist = 21
    update_va_mapping_otherdomain = 22
    iret = 23
    vcpu_op = 24
    set_segment_base = 25
    mmuext_op = 26
    xsm_op = 27
    nmi_op = 28
    sched_op = 29
    callback_op = 30
    xenoprof_op = 31
    event_channel_op = 32
    physdev_op = 33
    hvm_op = 34
    sysctl = 35
    domctl = 36
    kexec_op = 37
    tmem_op = 38
    argo_op = 39
    xenpmu_op = 40
    dm_op = 41
    arch_0 = 48
    arch_1 = 49
    arch_2 = 50
    arch_3 = 51
    arch_4 = 52
    arch_5 = 53
    arch_6 = 54
    arch_7 = 55


# x86 names for the architecture-specific slots.
HYPERVISOR_mca = Hypercall.arch_0
HYPERVISOR_paging_domctl_cont = Hypercall.arch_1

# Interface version of the 4.12.0 headers (0x00040a01 from 4.12.2).
XEN_LATEST_INTERFACE_VERSION = 0x00040A00

# Special domain ids (domid_t is u16).
DOMID_FIRST_RESERVED = 0x7FF0
DOMID_SELF = 0x7FF0
DOMID_IO = 0x7FF1
DOMID_XEN = 0x7FF2
DOMID_COW = 0x7FF3
DOMID_INVALID = 0x7FF4
DOMID_IDLE = 0x7FFF
# Domain 0, the control domain.  In pyxen it is the hypervisor process itself
# (there is no dom0 guest): its event-channel ends and grant mappings are
# served through the control socket.
CONTROL_DOMID = 0


class ShutdownReason(IntEnum):
    """``SHUTDOWN_*`` reasons (sched_op shutdown, watchdog, triple fault)."""

    poweroff = 0
    reboot = 1
    suspend = 2
    crash = 3
    watchdog = 4
    soft_reset = 5


SHUTDOWN_MAX = 5


class Virq(IntEnum):
    """``VIRQ_*`` numbers for ``EVTCHNOP_bind_virq``."""

    TIMER = 0
    DEBUG = 1
    CONSOLE = 2
    DOM_EXC = 3
    TBUF = 4
    # 5 is unused.
    DEBUGGER = 6
    XENOPROF = 7
    CON_RING = 8
    PCPU_STATE = 9
    MEM_EVENT = 10
    ARGO = 11
    ENOMEM = 12
    XENPMU = 13
    ARCH_0 = 16
    ARCH_1 = 17
    ARCH_2 = 18
    ARCH_3 = 19
    ARCH_4 = 20
    ARCH_5 = 21
    ARCH_6 = 22
    ARCH_7 = 23


NR_VIRQS = 24

# Per-vCPU VIRQs: bound once per vCPU, never re-bindable with bind_vcpu.
# Every other VIRQ is global (bound on vCPU 0).
PER_VCPU_VIRQS = frozenset({Virq.TIMER, Virq.DEBUG, Virq.XENOPROF, Virq.XENPMU})

# vm_assist types (the hypercall is PV-only in 4.12).
VMASST_TYPE_4gb_segments = 0
VMASST_TYPE_4gb_segments_notify = 1
VMASST_TYPE_writable_pagetables = 2
VMASST_TYPE_pae_extended_cr3 = 3
VMASST_TYPE_architectural_iopl = 4
VMASST_TYPE_runstate_update_flag = 5
VMASST_TYPE_m2p_strict = 32

XEN_LEGACY_MAX_VCPUS = 32

# Longest guest command line, including the NUL.
MAX_GUEST_CMDLINE = 1024

# "ud2; .ascii 'xen'": followed by CPUID, forces Xen to emulate it (PV).
XEN_EMULATE_PREFIX = bytes((0x0F, 0x0B, 0x78, 0x65, 0x6E))

# vcpu_time_info.flags bits.
XEN_PVCLOCK_TSC_STABLE_BIT = 1 << 0
XEN_PVCLOCK_GUEST_STOPPED = 1 << 1


class vcpu_time_info(XenStruct):
    """Per-vCPU pvclock parameters (32 bytes, same layout in both ABIs)."""

    _fields_ = [
        ("version", uint32_t),
        ("pad0", uint32_t),
        ("tsc_timestamp", uint64_t),
        ("system_time", uint64_t),
        ("tsc_to_system_mul", uint32_t),
        ("tsc_shift", int8_t),
        ("flags", uint8_t),
        ("pad1", uint8_t * 2),
    ]


# No uint64_t member is misaligned at 4 bytes, so i386 shares the layout.
compat_vcpu_time_info = vcpu_time_info


class arch_vcpu_info(XenStruct):
    """x86_64 ``arch_vcpu_info`` (16 bytes)."""

    _fields_ = [
        ("cr2", xen_ulong_t),
        ("pad", xen_ulong_t),
    ]


class vcpu_info(XenStruct):
    """x86_64 ``vcpu_info`` (64 bytes)."""

    _fields_ = [
        ("evtchn_upcall_pending", uint8_t),
        ("evtchn_upcall_mask", uint8_t),
        ("evtchn_pending_sel", xen_ulong_t),
        ("arch", arch_vcpu_info),
        ("time", vcpu_time_info),
    ]


class arch_shared_info(XenStruct):
    """x86_64 ``arch_shared_info`` (48 bytes, PV-oriented)."""

    _fields_ = [
        ("max_pfn", xen_ulong_t),
        ("pfn_to_mfn_frame_list_list", xen_pfn_t),
        ("nmi_reason", xen_ulong_t),
        ("p2m_cr3", xen_ulong_t),
        ("p2m_vaddr", xen_ulong_t),
        ("p2m_generation", xen_ulong_t),
    ]


class shared_info(XenStruct):
    """x86_64 ``shared_info`` (3136 bytes at the start of its page)."""

    _fields_ = [
        ("vcpu_info", vcpu_info * XEN_LEGACY_MAX_VCPUS),
        ("evtchn_pending", xen_ulong_t * 64),
        ("evtchn_mask", xen_ulong_t * 64),
        ("wc_version", uint32_t),
        ("wc_sec", uint32_t),
        ("wc_nsec", uint32_t),
        ("wc_sec_hi", uint32_t),
        ("arch", arch_shared_info),
    ]


class compat_arch_vcpu_info(CompatStruct):
    """i386 ``arch_vcpu_info``: cr2 plus five padding words (24 bytes)."""

    _fields_ = [
        ("cr2", compat_ulong_t),
        ("pad", compat_ulong_t * 5),
    ]


class compat_vcpu_info(CompatStruct):
    """i386 ``vcpu_info`` (64 bytes)."""

    _fields_ = [
        ("evtchn_upcall_pending", uint8_t),
        ("evtchn_upcall_mask", uint8_t),
        ("evtchn_pending_sel", compat_ulong_t),
        ("arch", compat_arch_vcpu_info),
        ("time", vcpu_time_info),
    ]


class compat_arch_shared_info(CompatStruct):
    """i386 ``arch_shared_info``; ``wc_sec_hi`` lives here (28 bytes)."""

    _fields_ = [
        ("max_pfn", compat_ulong_t),
        ("pfn_to_mfn_frame_list_list", compat_pfn_t),
        ("nmi_reason", compat_ulong_t),
        ("p2m_cr3", compat_ulong_t),
        ("p2m_vaddr", compat_ulong_t),
        ("p2m_generation", compat_ulong_t),
        ("wc_sec_hi", uint32_t),
    ]


class compat_shared_info(CompatStruct):
    """i386 ``shared_info`` (2344 bytes): 32-bit event words, 1024 ports."""

    _fields_ = [
        ("vcpu_info", compat_vcpu_info * XEN_LEGACY_MAX_VCPUS),
        ("evtchn_pending", compat_ulong_t * 32),
        ("evtchn_mask", compat_ulong_t * 32),
        ("wc_version", uint32_t),
        ("wc_sec", uint32_t),
        ("wc_nsec", uint32_t),
        ("arch", compat_arch_shared_info),
    ]


class multicall_entry(XenStruct):
    """x86_64 ``multicall_entry`` (64 bytes); not callable from HVM in 4.12."""

    _fields_ = [
        ("op", xen_ulong_t),
        ("result", xen_ulong_t),
        ("args", xen_ulong_t * 6),
    ]


class compat_multicall_entry(CompatStruct):
    """i386 ``multicall_entry`` (32 bytes)."""

    _fields_ = [
        ("op", compat_ulong_t),
        ("result", compat_ulong_t),
        ("args", compat_ulong_t * 6),
    ]


class mmu_update(XenStruct):
    """``mmu_update`` (16 bytes, both ABIs; PV only)."""

    _fields_ = [
        ("ptr", uint64_t),
        ("val", uint64_t),
    ]

