"""A KVM vCPU fd and its kvm_run page.

Registers reach user space through the kvm_run page (KVM_CAP_SYNC_REGS):
``kvm_valid_regs`` asks KVM to copy the general and segment registers into
``kvm_run.s`` on every exit, and setting ``kvm_dirty_regs`` makes KVM load the
general registers back on the next entry.  ``regs`` and ``sregs`` are ctypes
views straight into that page (no copies); they describe the vCPU as of the
last exit and are only meaningful between an exit and the next ``run()``.

``run()`` calls ``fcntl.ioctl(fd, KVM_RUN)`` without a third argument: that
releases the GIL and, on Python 3.11, is about 2 µs cheaper per exit than
passing 0.

``RUN_ONCE`` is the C fast path (pyxen.kvm._runloop, see _runloop.c): one
KVM_RUN that also decodes and answers a hypercall exit, calling Python
once with the hypercall's number and arguments.  It is None where the
extension is not built or ``PYXEN_PURE_RUN_LOOP=1`` is set; the vCPU loop
then uses ``run()`` and decodes every exit in Python (the same behaviour,
with about 7 µs more user-space CPU per hypercall on the development
machines: bench/hypercall.py).
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import struct
from collections.abc import Callable

from pyxen.kvm import ioctls as k
from pyxen.kvm import structs as s
from pyxen.kvm.errors import KvmError
from pyxen.kvm.exits import Exit, decode_exit
from pyxen.kvm.vm import Vm

_REGS_OFFSET = s.kvm_run.s.offset + s.kvm_sync_regs.regs.offset
_SREGS_OFFSET = s.kvm_run.s.offset + s.kvm_sync_regs.sregs.offset
_DIRTY_OFFSET = s.kvm_run.kvm_dirty_regs.offset
_RAX = struct.Struct("<Q")
_REGS = struct.Struct("<18Q")
# CS.l, SS.dpl, CR0 and EFER out of the synced kvm_sregs, in one unpack.
_MODE = struct.Struct(
    "<" + "".join(
        f"{pad}x{fmt}" if pad else fmt
        for pad, fmt in (
            (s.kvm_sregs.cs.offset + s.kvm_segment.l.offset, "B"),
            (s.kvm_sregs.ss.offset + s.kvm_segment.dpl.offset
             - (s.kvm_sregs.cs.offset + s.kvm_segment.l.offset + 1), "B"),
            (s.kvm_sregs.cr0.offset
             - (s.kvm_sregs.ss.offset + s.kvm_segment.dpl.offset + 1), "Q"),
            (s.kvm_sregs.efer.offset - (s.kvm_sregs.cr0.offset + 8), "Q"),
        )
    )
)
_DIRTY_REGS = struct.pack("<Q", k.KVM_SYNC_X86_REGS)

RunOnce = Callable[[int, int, int, Callable[[int, bool, int, int, int, int, int, int], int]],
                   bool]


def _load_run_once() -> RunOnce | None:
    if os.environ.get("PYXEN_PURE_RUN_LOOP", "") not in ("", "0"):
        return None
    try:
        from pyxen.kvm._runloop import run_once
    except ImportError:
        return None
    return run_once


RUN_ONCE = _load_run_once()


class Vcpu:
    """One vCPU: its fd, the shared kvm_run page and views of the synced registers."""

    def __init__(self, vm: Vm, vcpu_id: int) -> None:
        self.vcpu_id = vcpu_id
        self.vm = vm
        self.fd = vm.create_vcpu_fd(vcpu_id)
        self._xsave_size: int | None = None
        self.run_page = mmap.mmap(self.fd, vm.system.vcpu_mmap_size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        self.kvm_run = s.kvm_run.from_buffer(self.run_page)
        self.run_addr = ctypes.addressof(self.kvm_run)  # for RUN_ONCE
        self.regs = s.kvm_regs.from_buffer(self.run_page, _REGS_OFFSET)
        self.sregs = s.kvm_sregs.from_buffer(self.run_page, _SREGS_OFFSET)
        self.kvm_run.kvm_valid_regs = k.KVM_SYNC_X86_REGS | k.KVM_SYNC_X86_SREGS

    # -- the hot path -------------------------------------------------------

    def run(self) -> Exit:
        """Enter the guest until the next exit; return it decoded.

        Raises InterruptedError when a signal or ``immediate_exit`` stopped the
        entry (callers treat it like an ``InterruptedExit``).
        """
        fcntl.ioctl(self.fd, k.KVM_RUN)
        return decode_exit(self.kvm_run, self.run_page)

    def last_exit(self) -> Exit:
        """The exit in the kvm_run page, decoded (after a RUN_ONCE that did not serve it)."""
        return decode_exit(self.kvm_run, self.run_page)

    def unpack_regs(self) -> tuple[int, ...]:
        """The 18 synced general registers, in kvm_regs order (rax … rip, rflags)."""
        return _REGS.unpack_from(self.run_page, _REGS_OFFSET)

    def unpack_mode(self) -> tuple[int, int, int, int]:
        """(CS.l, SS.dpl, CR0, EFER) from the synced segment registers."""
        cs_l, ss_dpl, cr0, efer = _MODE.unpack_from(self.run_page, _SREGS_OFFSET)
        return cs_l, ss_dpl, cr0, efer

    def set_rax(self, value: int) -> None:
        """Write RAX (only) back into the guest on the next entry."""
        _RAX.pack_into(self.run_page, _REGS_OFFSET, value & 0xFFFF_FFFF_FFFF_FFFF)
        self.run_page[_DIRTY_OFFSET : _DIRTY_OFFSET + 8] = _DIRTY_REGS

    def mark_regs_dirty(self) -> None:
        """Load the (modified) synced general registers on the next entry."""
        self.run_page[_DIRTY_OFFSET : _DIRTY_OFFSET + 8] = _DIRTY_REGS

    def io_data(self, offset: int, size: int) -> memoryview:
        """The data buffer of a port-I/O exit, inside the kvm_run mapping."""
        return memoryview(self.run_page)[offset : offset + size]

    # -- slow-path ioctls ---------------------------------------------------

    def get_regs(self) -> s.kvm_regs:
        regs = s.kvm_regs()
        fcntl.ioctl(self.fd, k.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: s.kvm_regs) -> None:
        fcntl.ioctl(self.fd, k.KVM_SET_REGS, regs)

    def get_sregs(self) -> s.kvm_sregs:
        sregs = s.kvm_sregs()
        fcntl.ioctl(self.fd, k.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: s.kvm_sregs) -> None:
        fcntl.ioctl(self.fd, k.KVM_SET_SREGS, sregs)

    def set_guest_debug(self, debug: s.kvm_guest_debug) -> None:
        """KVM_SET_GUEST_DEBUG (single-step, DR0-3 breakpoints; control 0 turns it off).

        Only from the vCPU's own thread (or while it cannot be in KVM_RUN): a
        vCPU ioctl waits for a KVM_RUN in progress on another thread."""
        try:
            fcntl.ioctl(self.fd, k.KVM_SET_GUEST_DEBUG, debug)
        except OSError as e:
            raise KvmError(f"KVM_SET_GUEST_DEBUG failed: {e.strerror}") from None

    def regs_dirty(self) -> bool:
        """A sync-regs write-back is pending for the next entry."""
        return self.run_page[_DIRTY_OFFSET : _DIRTY_OFFSET + 8] != bytes(8)

    def set_cpuid(self, entries: list[s.kvm_cpuid_entry2]) -> None:
        buf = s.cpuid2_array(len(entries))()
        buf.nent = len(entries)
        for i, e in enumerate(entries):
            buf.entries[i] = e
        try:
            fcntl.ioctl(self.fd, k.KVM_SET_CPUID2, buf)
        except OSError as e:
            raise KvmError(f"KVM_SET_CPUID2 failed: {e.strerror}") from None

    def get_msr(self, index: int) -> int:
        buf = s.msrs_array(1)()
        buf.nmsrs = 1
        buf.entries[0].index = index
        if fcntl.ioctl(self.fd, k.KVM_GET_MSRS, buf) != 1:
            raise KvmError(f"KVM_GET_MSRS could not read MSR {index:#x}")
        return int(buf.entries[0].data)

    def set_msrs(self, values: dict[int, int]) -> None:
        buf = s.msrs_array(len(values))()
        buf.nmsrs = len(values)
        for i, (index, data) in enumerate(values.items()):
            buf.entries[i].index = index
            buf.entries[i].data = data
        done = fcntl.ioctl(self.fd, k.KVM_SET_MSRS, buf)
        if done != len(values):
            raise KvmError(f"KVM_SET_MSRS set {done} of {len(values)} MSRs")

    def flush_regs(self) -> None:
        """Load the synced general registers now (KVM_SET_REGS) instead of at the next
        entry: a pending exception set afterwards survives (a sync-regs write-back at
        entry would drop it)."""
        fcntl.ioctl(self.fd, k.KVM_SET_REGS, self.regs)
        self.clear_dirty_regs()

    # -- extended state (KVM_CAP_XSAVE, KVM_CAP_XCRS) -------------------------

    def get_fpu(self) -> s.kvm_fpu:
        fpu = s.kvm_fpu()
        fcntl.ioctl(self.fd, k.KVM_GET_FPU, fpu)
        return fpu

    def set_fpu(self, fpu: s.kvm_fpu) -> None:
        fcntl.ioctl(self.fd, k.KVM_SET_FPU, fpu)

    def xsave_size(self) -> int:
        """Bytes of the XSAVE area KVM_GET_XSAVE(2) returns (4096 unless KVM_CAP_XSAVE2
        asks for more, e.g. for AMX)."""
        if self._xsave_size is None:
            needed = self.vm.system.check_extension(k.KVM_CAP_XSAVE2)
            self._xsave_size = max(needed, s.KVM_XSAVE_SIZE)
        return self._xsave_size

    def get_xsave(self) -> bytearray:
        """The vCPU's x87/SSE/AVX... state as an XSAVE area in the standard format."""
        size = self.xsave_size()
        buf = s.xsave_buffer(size)
        request = k.KVM_GET_XSAVE2 if size > s.KVM_XSAVE_SIZE else k.KVM_GET_XSAVE
        try:
            fcntl.ioctl(self.fd, request, buf)
        except OSError as e:
            raise KvmError(f"KVM_GET_XSAVE failed: {e.strerror}") from None
        return bytearray(buf.raw)

    def set_xsave(self, area: bytes | bytearray) -> None:
        """Load an XSAVE area (as get_xsave returns it); KvmError if KVM refuses it."""
        buf = s.xsave_buffer(len(area))
        ctypes.memmove(buf, bytes(area), len(area))
        try:
            fcntl.ioctl(self.fd, k.KVM_SET_XSAVE, buf)
        except OSError as e:
            raise KvmError(f"KVM_SET_XSAVE failed: {e.strerror}") from None

    def get_xcrs(self) -> dict[int, int]:
        """The extended control registers (XCR0 ...) as {index: value}."""
        xcrs = s.kvm_xcrs()
        fcntl.ioctl(self.fd, k.KVM_GET_XCRS, xcrs)
        n = min(xcrs.nr_xcrs, s.KVM_MAX_XCRS)
        return {int(xcrs.xcrs[i].xcr): int(xcrs.xcrs[i].value) for i in range(n)}

    def set_xcrs(self, values: dict[int, int]) -> None:
        xcrs = s.kvm_xcrs()
        xcrs.nr_xcrs = len(values)
        for i, (index, value) in enumerate(values.items()):
            xcrs.xcrs[i].xcr = index
            xcrs.xcrs[i].value = value
        try:
            fcntl.ioctl(self.fd, k.KVM_SET_XCRS, xcrs)
        except OSError as e:
            raise KvmError(f"KVM_SET_XCRS failed: {e.strerror}") from None

    # -- events ---------------------------------------------------------------

    def get_vcpu_events(self) -> s.kvm_vcpu_events:
        events = s.kvm_vcpu_events()
        fcntl.ioctl(self.fd, k.KVM_GET_VCPU_EVENTS, events)
        return events

    def set_vcpu_events(self, events: s.kvm_vcpu_events) -> None:
        try:
            fcntl.ioctl(self.fd, k.KVM_SET_VCPU_EVENTS, events)
        except OSError as e:
            raise KvmError(f"KVM_SET_VCPU_EVENTS failed: {e.strerror}") from None

    def inject_interrupt(self, vector: int) -> None:
        fcntl.ioctl(self.fd, k.KVM_INTERRUPT, s.kvm_interrupt(vector))

    def tsc_offset(self) -> int | None:
        """KVM's TSC offset for this vCPU (KVM_VCPU_TSC_OFFSET), or None if KVM cannot say."""
        value = ctypes.c_int64()
        attr = s.kvm_device_attr(group=k.KVM_VCPU_TSC_CTRL, attr=k.KVM_VCPU_TSC_OFFSET,
                                 addr=ctypes.addressof(value))
        try:
            fcntl.ioctl(self.fd, k.KVM_HAS_DEVICE_ATTR, attr)
            fcntl.ioctl(self.fd, k.KVM_GET_DEVICE_ATTR, attr)
        except OSError:
            return None
        return value.value

    def inject_nmi(self) -> None:
        fcntl.ioctl(self.fd, k.KVM_NMI)

    def set_interrupt_window(self, wanted: bool) -> None:
        """Ask for an exit as soon as the guest can take an interrupt."""
        self.kvm_run.request_interrupt_window = int(wanted)

    def ready_for_interrupt(self) -> bool:
        """Whether an interrupt injected now would be taken at the next entry."""
        return bool(self.kvm_run.ready_for_interrupt_injection)

    def clear_dirty_regs(self) -> None:
        """Forget a pending sync-regs write-back (after KVM_SET_REGS)."""
        self.run_page[_DIRTY_OFFSET : _DIRTY_OFFSET + 8] = bytes(8)

    def tsc_khz(self) -> int:
        try:
            return int(fcntl.ioctl(self.fd, k.KVM_GET_TSC_KHZ))
        except OSError:
            return 0

    def set_immediate_exit(self, value: bool) -> None:
        self.kvm_run.immediate_exit = int(value)

    def close(self) -> None:
        if self.fd < 0:
            return
        # Drop the ctypes views before unmapping: they hold exports of the mmap.
        del self.kvm_run, self.regs, self.sregs
        self.run_page.close()
        os.close(self.fd)
        self.fd = -1


