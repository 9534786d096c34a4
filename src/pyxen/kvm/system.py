"""The /dev/kvm file descriptor: API version, capabilities, supported CPUID."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os

from pyxen.kvm import ioctls as k
from pyxen.kvm import structs as s
from pyxen.kvm.errors import KvmError, KvmUnavailable

KVM_DEVICE = "/dev/kvm"

# Capabilities pyxen cannot work without, and why.
REQUIRED_CAPS: tuple[tuple[int, str, str], ...] = (
    (k.KVM_CAP_X86_USER_SPACE_MSR, "KVM_CAP_X86_USER_SPACE_MSR", "hypercall-page MSR exits"),
    (k.KVM_CAP_X86_MSR_FILTER, "KVM_CAP_X86_MSR_FILTER", "catching the Xen hypercall MSR"),
    (k.KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "kicking vCPUs out of KVM_RUN"),
    (k.KVM_CAP_SYNC_REGS, "KVM_CAP_SYNC_REGS", "hypercall registers in the kvm_run page"),
)


class System:
    """The KVM system fd.  Opening it checks everything pyxen needs."""

    def __init__(self, path: str = KVM_DEVICE) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KvmUnavailable(
                f"{path} does not exist: load the kvm module (modprobe kvm_intel or kvm_amd) "
                "or run pyxen on a host with hardware virtualization"
            ) from None
        except PermissionError:
            raise KvmUnavailable(
                f"{path}: permission denied: run pyxen as root or add your user to the kvm group"
            ) from None
        except OSError as e:
            raise KvmUnavailable(f"{path}: cannot open: {e.strerror}") from None
        version = fcntl.ioctl(self.fd, k.KVM_GET_API_VERSION)
        if version != k.KVM_API_VERSION:
            os.close(self.fd)
            raise KvmUnavailable(f"{path}: KVM API version {version}, pyxen needs 12")
        for cap, name, why in REQUIRED_CAPS:
            if self.check_extension(cap) <= 0:
                os.close(self.fd)
                raise KvmUnavailable(
                    f"{path}: the host KVM lacks {name} (needed for {why}); "
                    "use Linux 5.10 or newer with KVM for x86"
                )
        self.vcpu_mmap_size = fcntl.ioctl(self.fd, k.KVM_GET_VCPU_MMAP_SIZE)
        self._supported_cpuid: list[s.kvm_cpuid_entry2] | None = None

    def check_extension(self, cap: int) -> int:
        return int(fcntl.ioctl(self.fd, k.KVM_CHECK_EXTENSION, cap))

    def supported_cpuid(self) -> list[s.kvm_cpuid_entry2]:
        """The host's supported CPUID leaves (copies; callers may modify them)."""
        if self._supported_cpuid is None:
            n = 128
            while True:
                buf = s.cpuid2_array(n)()
                buf.nent = n
                try:
                    fcntl.ioctl(self.fd, k.KVM_GET_SUPPORTED_CPUID, buf)
                except OSError as e:
                    if e.errno == errno.E2BIG and n < 4096:
                        n *= 2
                        continue
                    raise KvmError(f"KVM_GET_SUPPORTED_CPUID failed: {e.strerror}") from None
                break
            self._supported_cpuid = [buf.entries[i] for i in range(buf.nent)]
        return [_copy_entry(e) for e in self._supported_cpuid]

    def create_vm_fd(self) -> int:
        try:
            return int(fcntl.ioctl(self.fd, k.KVM_CREATE_VM, 0))
        except OSError as e:
            raise KvmError(f"KVM_CREATE_VM failed: {e.strerror}") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _copy_entry(e: s.kvm_cpuid_entry2) -> s.kvm_cpuid_entry2:
    c = s.kvm_cpuid_entry2()
    ctypes.pointer(c)[0] = e
    return c
