"""KVM ioctl numbers, each with the capability it needs (from <linux/kvm.h>).

The numbers are computed with the kernel's ``_IOC`` encoding so that every
one can be checked against its definition: direction in bits 31:30, the size
of the argument in bits 29:16, the type (``KVMIO`` = 0xAE) in bits 15:8 and
the command number in bits 7:0.
"""

from __future__ import annotations

import ctypes

from pyxen.kvm import structs as s

_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2
KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _ior(nr: int, ctype: type) -> int:
    return _ioc(_IOC_READ, nr, ctypes.sizeof(ctype))


def _iow(nr: int, ctype: type) -> int:
    return _ioc(_IOC_WRITE, nr, ctypes.sizeof(ctype))


def _iowr(nr: int, ctype: type) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, ctypes.sizeof(ctype))


# System fd (/dev/kvm)
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, s.kvm_cpuid2)  # KVM_CAP_EXT_CPUID

# VM fd
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, s.kvm_userspace_memory_region)
KVM_SET_TSS_ADDR = _io(0x47)  # KVM_CAP_SET_TSS_ADDR (VMX only needs it)
KVM_SET_IDENTITY_MAP_ADDR = _iow(0x48, ctypes.c_uint64)
KVM_ENABLE_CAP = _iow(0xA3, s.kvm_enable_cap)  # KVM_CAP_ENABLE_CAP(_VM)
KVM_X86_SET_MSR_FILTER = _iow(0xC6, s.kvm_msr_filter)  # KVM_CAP_X86_MSR_FILTER

# vCPU fd
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, s.kvm_regs)
KVM_SET_REGS = _iow(0x82, s.kvm_regs)
KVM_GET_SREGS = _ior(0x83, s.kvm_sregs)
KVM_SET_SREGS = _iow(0x84, s.kvm_sregs)
KVM_INTERRUPT = _iow(0x86, s.kvm_interrupt)
KVM_GET_MSRS = _iowr(0x88, s.kvm_msrs)
KVM_SET_MSRS = _iow(0x89, s.kvm_msrs)
KVM_SET_CPUID2 = _iow(0x90, s.kvm_cpuid2)
KVM_NMI = _io(0x9A)  # KVM_CAP_USER_NMI
KVM_SET_GUEST_DEBUG = _iow(0x9B, s.kvm_guest_debug)  # KVM_CAP_SET_GUEST_DEBUG
KVM_GET_FPU = _ior(0x8C, s.kvm_fpu)
KVM_SET_FPU = _iow(0x8D, s.kvm_fpu)
KVM_GET_VCPU_EVENTS = _ior(0x9F, s.kvm_vcpu_events)  # KVM_CAP_VCPU_EVENTS
KVM_SET_VCPU_EVENTS = _iow(0xA0, s.kvm_vcpu_events)
KVM_GET_XSAVE = _ior(0xA4, s.kvm_xsave)  # KVM_CAP_XSAVE
KVM_SET_XSAVE = _iow(0xA5, s.kvm_xsave)
KVM_GET_XCRS = _ior(0xA6, s.kvm_xcrs)  # KVM_CAP_XCRS
KVM_SET_XCRS = _iow(0xA7, s.kvm_xcrs)
KVM_GET_XSAVE2 = _ior(0xCF, s.kvm_xsave)  # KVM_CAP_XSAVE2 (a buffer of its size)
KVM_GET_TSC_KHZ = _io(0xA3)  # KVM_CAP_GET_TSC_KHZ
KVM_GET_DEVICE_ATTR = _iow(0xE2, s.kvm_device_attr)  # KVM_CAP_VCPU_ATTRIBUTES on a vCPU
KVM_HAS_DEVICE_ATTR = _iow(0xE3, s.kvm_device_attr)
KVM_VCPU_TSC_CTRL = 0  # attribute group
KVM_VCPU_TSC_OFFSET = 0  # attribute: guest TSC = host TSC (scaled) + offset

KVM_API_VERSION = 12

# Capabilities (KVM_CHECK_EXTENSION arguments)
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_SET_GUEST_DEBUG = 23
KVM_CAP_XEN_HVM = 38
KVM_CAP_VCPU_EVENTS = 41
KVM_CAP_XSAVE = 55
KVM_CAP_XCRS = 56
KVM_CAP_SYNC_REGS = 74
KVM_CAP_READONLY_MEM = 81
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_EXCEPTION_PAYLOAD = 164
KVM_CAP_X86_USER_SPACE_MSR = 188
KVM_CAP_X86_MSR_FILTER = 189
KVM_CAP_XSAVE2 = 208

# kvm_userspace_memory_region.flags
KVM_MEM_READONLY = 1 << 1

# kvm_run.kvm_valid_regs / kvm_dirty_regs bits
KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1
KVM_SYNC_X86_EVENTS = 1 << 2

# KVM_CAP_X86_USER_SPACE_MSR argument
KVM_MSR_EXIT_REASON_INVAL = 1 << 0
KVM_MSR_EXIT_REASON_UNKNOWN = 1 << 1
KVM_MSR_EXIT_REASON_FILTER = 1 << 2

# kvm_msr_filter flags
KVM_MSR_FILTER_DEFAULT_ALLOW = 0
KVM_MSR_FILTER_DEFAULT_DENY = 1
KVM_MSR_FILTER_READ = 1 << 0
KVM_MSR_FILTER_WRITE = 1 << 1

# kvm_cpuid_entry2.flags
KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 << 0

# kvm_vcpu_events.flags: which optional fields are valid
KVM_VCPUEVENT_VALID_NMI_PENDING = 1 << 0
KVM_VCPUEVENT_VALID_SIPI_VECTOR = 1 << 1
KVM_VCPUEVENT_VALID_SHADOW = 1 << 2
KVM_VCPUEVENT_VALID_SMM = 1 << 3
KVM_VCPUEVENT_VALID_PAYLOAD = 1 << 4
KVM_VCPUEVENT_VALID_TRIPLE_FAULT = 1 << 5

# kvm_run.internal.suberror
KVM_INTERNAL_ERROR_EMULATION = 1
# data[0] of an emulation failure: data[1..2] hold insn_size and the instruction bytes
KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1 << 0

# kvm_guest_debug.control
KVM_GUESTDBG_ENABLE = 1 << 0
KVM_GUESTDBG_SINGLESTEP = 1 << 1
# x86 (asm/kvm.h)
KVM_GUESTDBG_USE_SW_BP = 0x0001_0000
KVM_GUESTDBG_USE_HW_BP = 0x0002_0000
KVM_GUESTDBG_INJECT_DB = 0x0004_0000
KVM_GUESTDBG_INJECT_BP = 0x0008_0000
