"""A KVM virtual machine fd: memory slots, MSR filter, vCPU creation."""

from __future__ import annotations

import ctypes
import fcntl
import os
from collections.abc import Sequence

from pyxen.kvm import ioctls as k
from pyxen.kvm import structs as s
from pyxen.kvm.errors import KvmError
from pyxen.kvm.system import System

_libc = ctypes.CDLL(None, use_errno=True)


class Vm:
    """One KVM VM.  Owns its fd; ``close`` releases it."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.fd = system.create_vm_fd()
        self._msr_bitmaps: list[ctypes.Array[ctypes.c_uint8]] = []
        # VMX without unrestricted guest needs these three pages; elsewhere it is a no-op.
        # fcntl.ioctl cannot pass an integer above INT_MAX, so call libc directly.
        _libc.ioctl(self.fd, ctypes.c_ulong(k.KVM_SET_TSS_ADDR), ctypes.c_ulong(0xFFFBD000))

    def enable_cap(self, cap: int, *args: int) -> None:
        arg = s.kvm_enable_cap()
        arg.cap = cap
        for i, v in enumerate(args):
            arg.args[i] = v
        try:
            fcntl.ioctl(self.fd, k.KVM_ENABLE_CAP, arg)
        except OSError as e:
            raise KvmError(f"KVM_ENABLE_CAP({cap}) failed: {e.strerror}") from None

    def set_memory_region(self, slot: int, gpa: int, size: int, host_addr: int,
                          readonly: bool = False) -> None:
        """Map ``size`` bytes at host address ``host_addr`` at guest-physical ``gpa``.

        A size of 0 deletes the slot.  A read-only slot (KVM_CAP_READONLY_MEM)
        turns guest writes into MMIO exits.
        """
        flags = k.KVM_MEM_READONLY if readonly else 0
        region = s.kvm_userspace_memory_region(slot, flags, gpa, size, host_addr)
        try:
            fcntl.ioctl(self.fd, k.KVM_SET_USER_MEMORY_REGION, region)
        except OSError as e:
            raise KvmError(
                f"KVM_SET_USER_MEMORY_REGION slot {slot} gpa {gpa:#x} size {size:#x}: {e.strerror}"
            ) from None

    def filter_msrs(self, msrs: Sequence[int | range], invalid_to_user: bool = False) -> None:
        """Send reads and writes of ``msrs`` to user space; everything else stays in KVM.

        Each item is one MSR or a contiguous ``range`` of them (step 1); KVM
        takes at most ``KVM_MSR_FILTER_MAX_RANGES`` items, one bitmap each.
        KVM never filters the x2APIC MSRs (0x800-0x8FF: "always allowed",
        Documentation/virt/kvm/api.rst); without an in-kernel APIC it fails
        them, so ``invalid_to_user`` asks for an exit instead of the #GP KVM
        would inject for every access it refuses (KVM_MSR_EXIT_REASON_INVAL
        and _UNKNOWN): user space must then answer those itself.
        """
        if len(msrs) > s.KVM_MSR_FILTER_MAX_RANGES:
            raise KvmError(f"an MSR filter holds at most {s.KVM_MSR_FILTER_MAX_RANGES} ranges")
        reasons = k.KVM_MSR_EXIT_REASON_FILTER
        if invalid_to_user:
            reasons |= k.KVM_MSR_EXIT_REASON_INVAL | k.KVM_MSR_EXIT_REASON_UNKNOWN
        self.enable_cap(k.KVM_CAP_X86_USER_SPACE_MSR, reasons)
        filt = s.kvm_msr_filter()
        filt.flags = k.KVM_MSR_FILTER_DEFAULT_ALLOW
        bitmaps: list[ctypes.Array[ctypes.c_uint8]] = []
        for i, item in enumerate(msrs):
            span = range(item, item + 1) if isinstance(item, int) else item
            if not span or span.step != 1:
                raise KvmError(f"bad MSR filter range {item!r}")
            # All bits clear: denied, so every access exits to user space.
            bitmap = (ctypes.c_uint8 * ((len(span) + 7) // 8))()
            bitmaps.append(bitmap)
            rng = filt.ranges[i]
            rng.flags = k.KVM_MSR_FILTER_READ | k.KVM_MSR_FILTER_WRITE
            rng.nmsrs = len(span)
            rng.base = span.start
            rng.bitmap = ctypes.addressof(bitmap)
        try:
            fcntl.ioctl(self.fd, k.KVM_X86_SET_MSR_FILTER, filt)
        except OSError as e:
            raise KvmError(f"KVM_X86_SET_MSR_FILTER failed: {e.strerror}") from None
        self._msr_bitmaps = bitmaps  # KVM copies them, but keep them alive with the filter

    def create_vcpu_fd(self, vcpu_id: int) -> int:
        try:
            return int(fcntl.ioctl(self.fd, k.KVM_CREATE_VCPU, vcpu_id))
        except OSError as e:
            raise KvmError(f"KVM_CREATE_VCPU {vcpu_id} failed: {e.strerror}") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
