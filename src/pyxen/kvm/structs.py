"""ctypes mirrors of the x86_64 structures in <linux/kvm.h> and <asm/kvm.h>.

Names and fields follow the kernel headers exactly, so a reader can check
each one against its definition.  Only the structures pyxen uses are here.
"""

from __future__ import annotations

import ctypes

u8 = ctypes.c_uint8
u16 = ctypes.c_uint16
u32 = ctypes.c_uint32
u64 = ctypes.c_uint64


class _S(ctypes.LittleEndianStructure):
    pass


_REG_NAMES = (
    "rax rbx rcx rdx rsi rdi rsp rbp r8 r9 r10 r11 r12 r13 r14 r15 rip rflags"
).split()


class kvm_regs(_S):
    _fields_ = [(name, u64) for name in _REG_NAMES]


class kvm_segment(_S):
    _fields_ = [
        ("base", u64),
        ("limit", u32),
        ("selector", u16),
        ("type", u8),
        ("present", u8),
        ("dpl", u8),
        ("db", u8),
        ("s", u8),
        ("l", u8),
        ("g", u8),
        ("avl", u8),
        ("unusable", u8),
        ("padding", u8),
    ]


class kvm_dtable(_S):
    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


class kvm_sregs(_S):
    _fields_ = [
        ("cs", kvm_segment),
        ("ds", kvm_segment),
        ("es", kvm_segment),
        ("fs", kvm_segment),
        ("gs", kvm_segment),
        ("ss", kvm_segment),
        ("tr", kvm_segment),
        ("ldt", kvm_segment),
        ("gdt", kvm_dtable),
        ("idt", kvm_dtable),
        ("cr0", u64),
        ("cr2", u64),
        ("cr3", u64),
        ("cr4", u64),
        ("cr8", u64),
        ("efer", u64),
        ("apic_base", u64),
        ("interrupt_bitmap", u64 * 4),
    ]


class _exception_events(_S):
    _fields_ = [
        ("injected", u8),
        ("nr", u8),
        ("has_error_code", u8),
        ("pending", u8),
        ("error_code", u32),
    ]


class _interrupt_events(_S):
    _fields_ = [("injected", u8), ("nr", u8), ("soft", u8), ("shadow", u8)]


class _nmi_events(_S):
    _fields_ = [("injected", u8), ("pending", u8), ("masked", u8), ("pad", u8)]


class _smi_events(_S):
    _fields_ = [("smm", u8), ("pending", u8), ("smm_inside_nmi", u8), ("latched_init", u8)]


class kvm_vcpu_events(_S):
    _fields_ = [
        ("exception", _exception_events),
        ("interrupt", _interrupt_events),
        ("nmi", _nmi_events),
        ("sipi_vector", u32),
        ("flags", u32),
        ("smi", _smi_events),
        ("triple_fault_pending", u8),
        ("reserved", u8 * 26),
        ("exception_has_payload", u8),
        ("exception_payload", u64),
    ]


class kvm_sync_regs(_S):
    _fields_ = [("regs", kvm_regs), ("sregs", kvm_sregs), ("events", kvm_vcpu_events)]


class kvm_run_io(_S):
    _fields_ = [
        ("direction", u8),
        ("size", u8),
        ("port", u16),
        ("count", u32),
        ("data_offset", u64),
    ]


class kvm_run_mmio(_S):
    _fields_ = [("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8)]


class kvm_run_fail_entry(_S):
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class kvm_run_internal(_S):
    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class kvm_run_msr(_S):
    _fields_ = [
        ("error", u8),
        ("pad", u8 * 7),
        ("reason", u32),
        ("index", u32),
        ("data", u64),
    ]


class kvm_debug_exit_arch(_S):
    _fields_ = [("exception", u32), ("pad", u32), ("pc", u64), ("dr6", u64), ("dr7", u64)]


class kvm_run_system_event(_S):
    _fields_ = [("type", u32), ("ndata", u32), ("data", u64 * 16)]


class kvm_run_exit(ctypes.Union):
    _fields_ = [
        ("io", kvm_run_io),
        ("mmio", kvm_run_mmio),
        ("hw_exit_reason", u64),
        ("fail_entry", kvm_run_fail_entry),
        ("internal", kvm_run_internal),
        ("msr", kvm_run_msr),
        ("debug", kvm_debug_exit_arch),
        ("system_event", kvm_run_system_event),
        ("padding", ctypes.c_char * 256),
    ]


class kvm_run_s(ctypes.Union):
    _fields_ = [("regs", kvm_sync_regs), ("padding", ctypes.c_char * 2048)]


class kvm_run(_S):
    _fields_ = [
        ("request_interrupt_window", u8),
        ("immediate_exit", u8),
        ("padding1", u8 * 6),
        ("exit_reason", u32),
        ("ready_for_interrupt_injection", u8),
        ("if_flag", u8),
        ("flags", u16),
        ("cr8", u64),
        ("apic_base", u64),
        ("exit", kvm_run_exit),
        ("kvm_valid_regs", u64),
        ("kvm_dirty_regs", u64),
        ("s", kvm_run_s),
    ]


class kvm_userspace_memory_region(_S):
    _fields_ = [
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
    ]


class kvm_msr_entry(_S):
    _fields_ = [("index", u32), ("reserved", u32), ("data", u64)]


class kvm_msrs(_S):
    _fields_ = [("nmsrs", u32), ("pad", u32)]  # followed by kvm_msr_entry[nmsrs]


class kvm_cpuid_entry2(_S):
    _fields_ = [
        ("function", u32),
        ("index", u32),
        ("flags", u32),
        ("eax", u32),
        ("ebx", u32),
        ("ecx", u32),
        ("edx", u32),
        ("padding", u32 * 3),
    ]


class kvm_cpuid2(_S):
    _fields_ = [("nent", u32), ("padding", u32)]  # followed by kvm_cpuid_entry2[nent]


class kvm_msr_filter_range(_S):
    _fields_ = [
        ("flags", u32),
        ("nmsrs", u32),
        ("base", u32),
        ("bitmap", ctypes.c_void_p),
    ]


KVM_MSR_FILTER_MAX_RANGES = 16


class kvm_msr_filter(_S):
    _fields_ = [
        ("flags", u32),
        ("ranges", kvm_msr_filter_range * KVM_MSR_FILTER_MAX_RANGES),
    ]


class kvm_enable_cap(_S):
    _fields_ = [("cap", u32), ("flags", u32), ("args", u64 * 4), ("pad", u8 * 64)]


class kvm_interrupt(_S):
    _fields_ = [("irq", u32)]


class kvm_device_attr(_S):
    _fields_ = [("flags", u32), ("group", u32), ("attr", u64), ("addr", u64)]


class kvm_guest_debug_arch(_S):
    _fields_ = [("debugreg", u64 * 8)]


class kvm_guest_debug(_S):
    _fields_ = [("control", u32), ("pad", u32), ("arch", kvm_guest_debug_arch)]


class kvm_fpu(_S):
    """KVM_GET_FPU/KVM_SET_FPU: the x87 and SSE state in FXSAVE terms."""

    _fields_ = [
        ("fpr", (u8 * 16) * 8),
        ("fcw", u16),
        ("fsw", u16),
        ("ftwx", u8),  # abridged tag word, as FXSAVE stores it
        ("pad1", u8),
        ("last_opcode", u16),
        ("last_ip", u64),
        ("last_dp", u64),
        ("xmm", (u8 * 16) * 16),
        ("mxcsr", u32),
        ("pad2", u32),
    ]


KVM_XSAVE_SIZE = 4096


class kvm_xsave(_S):
    """KVM_GET_XSAVE/KVM_SET_XSAVE: an XSAVE area in the standard (non-compacted)
    format; KVM_GET_XSAVE2 takes a larger buffer (KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)
    bytes) of the same layout."""

    _fields_ = [("region", u32 * (KVM_XSAVE_SIZE // 4))]


KVM_MAX_XCRS = 16


class kvm_xcr(_S):
    _fields_ = [("xcr", u32), ("reserved", u32), ("value", u64)]


class kvm_xcrs(_S):
    _fields_ = [
        ("nr_xcrs", u32),
        ("flags", u32),
        ("xcrs", kvm_xcr * KVM_MAX_XCRS),
        ("padding", u64 * 16),
    ]


def xsave_buffer(size: int) -> ctypes.Array[ctypes.c_char]:
    """A zeroed buffer of ``size`` bytes (at least a kvm_xsave) for KVM_GET/SET_XSAVE(2)."""
    return (ctypes.c_char * max(size, KVM_XSAVE_SIZE))()


def cpuid2_array(entries: int) -> type[ctypes.Structure]:
    """A kvm_cpuid2 with room for ``entries`` entries (a variable-size ioctl argument)."""

    class kvm_cpuid2_n(_S):
        _fields_ = [
            ("nent", u32),
            ("padding", u32),
            ("entries", kvm_cpuid_entry2 * entries),
        ]

    return kvm_cpuid2_n


def msrs_array(entries: int) -> type[ctypes.Structure]:
    """A kvm_msrs with room for ``entries`` entries."""

    class kvm_msrs_n(_S):
        _fields_ = [("nmsrs", u32), ("pad", u32), ("entries", kvm_msr_entry * entries)]

    return kvm_msrs_n
