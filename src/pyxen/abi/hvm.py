"""HVM operations and parameters: mirrors ``xen/include/public/hvm/hvm_op.h``,
``hvm/params.h`` and ``hvm/hvm_vcpu.h`` (Xen 4.12).

All structures here are built from fixed-width types, so the 32-bit ABI
shares their layout.
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import (
    CompatStruct,
    XenStruct,
    XenUnion,
    compat_handle_t,
    domid_t,
    uint8_t,
    uint16_t,
    uint32_t,
    uint64_t,
)


class HvmOp(IntEnum):
    """``HVMOP_*`` sub-commands of hypercall 34."""

    set_param = 0
    get_param = 1
    set_pci_intx_level = 2  # legacy (now a dm_op): -ENOSYS
    set_isa_irq_level = 3  # legacy: -ENOSYS
    set_pci_link_route = 4  # legacy: -ENOSYS
    flush_tlbs = 5
    pagetable_dying = 9
    get_time = 10
    xentrace = 11
    set_mem_access = 12  # deprecated, tools only
    get_mem_access = 13  # deprecated, tools only
    get_mem_type = 15
    set_evtchn_upcall_vector = 23
    guest_request_vm_event = 24
    altp2m = 25


HVMOP_ALTP2M_INTERFACE_VERSION = 0x00000001


class Altp2mCmd(IntEnum):
    """``HVMOP_altp2m_*`` commands of Xen 4.12 (14-16 came later: -EOPNOTSUPP)."""

    get_domain_state = 1
    set_domain_state = 2
    vcpu_enable_notify = 3
    create_p2m = 4
    destroy_p2m = 5
    switch_p2m = 6
    set_mem_access = 7
    change_gfn = 8
    set_mem_access_multi = 9
    set_suppress_ve = 10
    get_suppress_ve = 11
    get_mem_access = 12
    vcpu_disable_notify = 13


ALTP2M_OP_U_OFFSET = 16  # xen_hvm_altp2m_op.u: each command's member is read there


class xen_hvm_altp2m_domain_state(XenStruct):
    _fields_ = [("state", uint8_t)]


class xen_hvm_altp2m_vcpu_enable_notify(XenStruct):
    _fields_ = [("vcpu_id", uint32_t), ("pad", uint32_t), ("gfn", uint64_t)]


class xen_hvm_altp2m_vcpu_disable_notify(XenStruct):
    _fields_ = [("vcpu_id", uint32_t)]


class xen_hvm_altp2m_view(XenStruct):
    _fields_ = [("view", uint16_t), ("hvmmem_default_access", uint16_t)]


class xen_hvm_altp2m_mem_access(XenStruct):
    """Also the layout of the older ``set_mem_access`` member."""

    _fields_ = [("view", uint16_t), ("access", uint16_t), ("pad", uint32_t), ("gfn", uint64_t)]


class xen_hvm_altp2m_set_mem_access_multi(XenStruct):
    """The 64-bit layout (compat_: a 32-bit caller's, with 4-byte handles)."""

    _fields_ = [
        ("view", uint16_t),
        ("pad", uint16_t),
        ("nr", uint32_t),
        ("opaque", uint64_t),
        ("pfn_list", uint64_t),
        ("access_list", uint64_t),
    ]


class xen_hvm_altp2m_change_gfn(XenStruct):
    _fields_ = [
        ("view", uint16_t),
        ("pad1", uint16_t),
        ("pad2", uint32_t),
        ("old_gfn", uint64_t),
        ("new_gfn", uint64_t),
    ]


class xen_hvm_altp2m_suppress_ve(XenStruct):
    _fields_ = [
        ("view", uint16_t),
        ("suppress_ve", uint8_t),
        ("pad1", uint8_t),
        ("pad2", uint32_t),
        ("gfn", uint64_t),
    ]


class compat_xen_hvm_altp2m_set_mem_access_multi(CompatStruct):
    _fields_ = [
        ("view", uint16_t),
        ("pad", uint16_t),
        ("nr", uint32_t),
        ("opaque", uint64_t),
        ("pfn_list", compat_handle_t),
        ("access_list", compat_handle_t),
    ]


class xen_hvm_altp2m_op_u(XenUnion):
    """The union of ``xen_hvm_altp2m_op`` (64 bytes); ``set_mem_access_multi``,
    whose layout depends on the caller's ABI, is read as its own structure."""

    _fields_ = [
        ("domain_state", xen_hvm_altp2m_domain_state),
        ("enable_notify", xen_hvm_altp2m_vcpu_enable_notify),
        ("view", xen_hvm_altp2m_view),
        ("mem_access", xen_hvm_altp2m_mem_access),
        ("change_gfn", xen_hvm_altp2m_change_gfn),
        ("suppress_ve", xen_hvm_altp2m_suppress_ve),
        ("disable_notify", xen_hvm_altp2m_vcpu_disable_notify),
        ("pad", uint8_t * 64),
    ]


class xen_hvm_altp2m_op(XenStruct):
    """``struct xen_hvm_altp2m_op`` (80 bytes)."""

    _fields_ = [
        ("version", uint32_t),
        ("cmd", uint32_t),
        ("domain", domid_t),
        ("pad1", uint16_t),
        ("pad2", uint32_t),
        ("u", xen_hvm_altp2m_op_u),
    ]



class HvmParam(IntEnum):
    """``HVM_PARAM_*`` indices (3, 7 and 8 are unassigned)."""

    CALLBACK_IRQ = 0
    STORE_PFN = 1
    STORE_EVTCHN = 2
    PAE_ENABLED = 4
    IOREQ_PFN = 5
    BUFIOREQ_PFN = 6
    VIRIDIAN = 9
    TIMER_MODE = 10
    HPET_ENABLED = 11
    IDENT_PT = 12
    DM_DOMAIN = 13  # deprecated
    ACPI_S_STATE = 14
    VM86_TSS = 15
    VPT_ALIGN = 16
    CONSOLE_PFN = 17
    CONSOLE_EVTCHN = 18
    ACPI_IOPORTS_LOCATION = 19
    MEMORY_EVENT_CR0 = 20  # deprecated
    MEMORY_EVENT_CR3 = 21  # deprecated
    MEMORY_EVENT_CR4 = 22  # deprecated
    MEMORY_EVENT_INT3 = 23  # deprecated
    NESTEDHVM = 24
    MEMORY_EVENT_SINGLE_STEP = 25  # deprecated
    BUFIOREQ_EVTCHN = 26  # deprecated
    PAGING_RING_PFN = 27
    MONITOR_RING_PFN = 28
    SHARING_RING_PFN = 29
    MEMORY_EVENT_MSR = 30  # deprecated
    TRIPLE_FAULT_REASON = 31
    IOREQ_SERVER_PFN = 32
    NR_IOREQ_SERVER_PAGES = 33
    VM_GENERATION_ID_ADDR = 34
    ALTP2M = 35
    X87_FIP_WIDTH = 36
    VM86_TSS_SIZED = 37
    MCA_CAP = 38


HVM_NR_PARAMS = 39


class xen_hvm_param(XenStruct):
    """``HVMOP_set_param`` / ``HVMOP_get_param`` argument (16 bytes)."""

    _fields_ = [
        ("domid", domid_t),
        ("pad", uint16_t),
        ("index", uint32_t),
        ("value", uint64_t),
    ]


# HVM_PARAM_CALLBACK_IRQ: type in bits 63:56, payload in bits 55:0.
HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT = 56
HVM_PARAM_CALLBACK_IRQ_TYPE_MASK = 0xFF00000000000000


class CallbackType(IntEnum):
    """``HVM_PARAM_CALLBACK_TYPE_*`` (any other type means "none")."""

    GSI = 0
    PCI_INTX = 1
    VECTOR = 2


def callback_irq_type(value: int) -> int:
    """Delivery type encoded in an ``HVM_PARAM_CALLBACK_IRQ`` value."""
    return (value & HVM_PARAM_CALLBACK_IRQ_TYPE_MASK) >> HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT


def callback_irq_value(kind: CallbackType, payload: int) -> int:
    """Build an ``HVM_PARAM_CALLBACK_IRQ`` value."""
    payload_mask = (1 << HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT) - 1
    return (int(kind) << HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT) | (payload & payload_mask)


# HVM_PARAM_VIRIDIAN feature bits (bit 0 is mandatory).
HVMPV_base_freq = 1 << 0
HVMPV_no_freq = 1 << 1
HVMPV_time_ref_count = 1 << 2
HVMPV_reference_tsc = 1 << 3
HVMPV_hcall_remote_tlb_flush = 1 << 4
HVMPV_apic_assist = 1 << 5
HVMPV_crash_ctl = 1 << 6

# HVM_PARAM_TIMER_MODE values.
HVMPTM_delay_for_missed_ticks = 0
HVMPTM_no_delay_for_missed_ticks = 1
HVMPTM_no_missed_ticks_pending = 2
HVMPTM_one_missed_tick_pending = 3

# HVM_PARAM_ALTP2M values.
XEN_ALTP2M_disabled = 0
XEN_ALTP2M_mixed = 1
XEN_ALTP2M_external = 2
XEN_ALTP2M_limited = 3

# HVM_PARAM_MCA_CAP bits.
XEN_HVM_MCA_CAP_LMCE = 1 << 0
XEN_HVM_MCA_CAP_MASK = XEN_HVM_MCA_CAP_LMCE


class HvmmemType(IntEnum):
    """``hvmmem_type_t`` values reported by ``HVMOP_get_mem_type``."""

    ram_rw = 0
    ram_ro = 1
    mmio_dm = 2
    unused = 3  # was mmio_write_dm before interface 0x00040700
    ioreq_server = 4


class xen_hvm_pagetable_dying(XenStruct):
    """``HVMOP_pagetable_dying`` argument (16 bytes)."""

    _fields_ = [
        ("domid", domid_t),
        ("pad", uint16_t * 3),
        ("gpa", uint64_t),
    ]


class xen_hvm_get_time(XenStruct):
    """``HVMOP_get_time`` argument: Xen system time in ns (8 bytes)."""

    _fields_ = [("now", uint64_t)]


TRACE_EXTRA_MAX = 7


class xen_hvm_xentrace(XenStruct):
    """``HVMOP_xentrace`` argument (32 bytes)."""

    _fields_ = [
        ("event", uint16_t),
        ("extra_bytes", uint16_t),
        ("extra", uint8_t * (TRACE_EXTRA_MAX * 4)),
    ]


class xen_hvm_get_mem_type(XenStruct):
    """``HVMOP_get_mem_type`` argument (16 bytes)."""

    _fields_ = [
        ("domid", domid_t),
        ("mem_type", uint16_t),  # OUT: HvmmemType
        ("pad", uint16_t * 2),
        ("pfn", uint64_t),
    ]


class xen_hvm_evtchn_upcall_vector(XenStruct):
    """``HVMOP_set_evtchn_upcall_vector`` argument (8 bytes)."""

    _fields_ = [
        ("vcpu", uint32_t),
        ("vector", uint8_t),
    ]


# Lowest vector accepted by HVMOP_set_evtchn_upcall_vector.
HVM_EVTCHN_UPCALL_VECTOR_MIN = 0x10

# libxc 4.12 special-page GFNs for a domU (toolstack convention, not ABI).
SPECIAL_PFN_PAGING = 0xFEFF8
SPECIAL_PFN_ACCESS = 0xFEFF9
SPECIAL_PFN_SHARING = 0xFEFFA
SPECIAL_PFN_BUFIOREQ = 0xFEFFB
SPECIAL_PFN_XENSTORE = 0xFEFFC
SPECIAL_PFN_IOREQ = 0xFEFFD
SPECIAL_PFN_IDENT_PT = 0xFEFFE
SPECIAL_PFN_CONSOLE = 0xFEFFF
# Eight ioreq-server pages below them, for HVM domains with a device model.
SPECIAL_PFN_IOREQ_SERVER_BASE = 0xFEFF0
NR_IOREQ_SERVER_PAGES = 8

# hvm_info_table page (HVM with firmware only).
HVM_INFO_PFN = 0x9F
HVM_INFO_OFFSET = 0x800

# --- hvm_vcpu.h: VCPUOP_initialise context for HVM/PVH vCPUs ---------------

VCPU_HVM_MODE_32B = 0
VCPU_HVM_MODE_64B = 1


class vcpu_hvm_x86_32(XenStruct):
    """32-bit register block (120 bytes)."""

    _fields_ = [
        ("eax", uint32_t),
        ("ecx", uint32_t),
        ("edx", uint32_t),
        ("ebx", uint32_t),
        ("esp", uint32_t),
        ("ebp", uint32_t),
        ("esi", uint32_t),
        ("edi", uint32_t),
        ("eip", uint32_t),
        ("eflags", uint32_t),
        ("cr0", uint32_t),
        ("cr3", uint32_t),
        ("cr4", uint32_t),
        ("pad1", uint32_t),
        ("efer", uint64_t),
        ("cs_base", uint32_t),
        ("ds_base", uint32_t),
        ("ss_base", uint32_t),
        ("es_base", uint32_t),
        ("tr_base", uint32_t),
        ("cs_limit", uint32_t),
        ("ds_limit", uint32_t),
        ("ss_limit", uint32_t),
        ("es_limit", uint32_t),
        ("tr_limit", uint32_t),
        ("cs_ar", uint16_t),
        ("ds_ar", uint16_t),
        ("ss_ar", uint16_t),
        ("es_ar", uint16_t),
        ("tr_ar", uint16_t),
        ("pad2", uint16_t * 3),
    ]


class vcpu_hvm_x86_64(XenStruct):
    """64-bit register block (112 bytes)."""

    _fields_ = [
        ("rax", uint64_t),
        ("rcx", uint64_t),
        ("rdx", uint64_t),
        ("rbx", uint64_t),
        ("rsp", uint64_t),
        ("rbp", uint64_t),
        ("rsi", uint64_t),
        ("rdi", uint64_t),
        ("rip", uint64_t),
        ("rflags", uint64_t),
        ("cr0", uint64_t),
        ("cr3", uint64_t),
        ("cr4", uint64_t),
        ("efer", uint64_t),
    ]


class vcpu_hvm_cpu_regs(XenUnion):
    """The ``cpu_regs`` union of ``vcpu_hvm_context`` (120 bytes)."""

    _fields_ = [
        ("x86_32", vcpu_hvm_x86_32),
        ("x86_64", vcpu_hvm_x86_64),
    ]


class vcpu_hvm_context(XenStruct):
    """``VCPUOP_initialise`` argument for HVM/PVH (128 bytes)."""

    _fields_ = [
        ("mode", uint32_t),
        ("pad", uint32_t),
        ("cpu_regs", vcpu_hvm_cpu_regs),
    ]
