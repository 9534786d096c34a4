"""A KVM virtual machine fd: memory slots, MSR filter, vCPU creation."""

from __future__ import annotations

import ctypes
import fcntl
import os

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

    def filter_msrs(self, msrs: list[int]) -> None:
        """Send reads and writes of ``msrs`` to user space; everything else stays in KVM."""
        self.enable_cap(k.KVM_CAP_X86_USER_SPACE_MSR, k.KVM_MSR_EXIT_REASON_FILTER)
        filt = s.kvm_msr_filter()
        filt.flags = k.KVM_MSR_FILTER_DEFAULT_ALLOW
        for i, msr in enumerate(msrs):
            bitmap = (ctypes.c_uint8 * 1)(0)  # bit clear = denied = exit to user space
            self._msr_bitmaps.append(bitmap)
            rng = filt.ranges[i]
            rng.flags = k.KVM_MSR_FILTER_READ | k.KVM_MSR_FILTER_WRITE
            rng.nmsrs = 1
            rng.base = msr
            rng.bitmap = ctypes.addressof(bitmap)
        try:
            fcntl.ioctl(self.fd, k.KVM_X86_SET_MSR_FILTER, filt)
        except OSError as e:
            raise KvmError(f"KVM_X86_SET_MSR_FILTER failed: {e.strerror}") from None

    def create_vcpu_fd(self, vcpu_id: int) -> int:
        try:
            return int(fcntl.ioctl(self.fd, k.KVM_CREATE_VCPU, vcpu_id))
        except OSError as e:
            raise KvmError(f"KVM_CREATE_VCPU {vcpu_id} failed: {e.strerror}") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
