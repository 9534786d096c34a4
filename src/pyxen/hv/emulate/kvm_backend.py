"""The emulator's view of a KVM vCPU (``context.Backend`` on a ``VcpuRunner``).

Registers: general registers and RIP/RFLAGS go through the kvm_run page
(sync regs): changed values are written into the synced view and marked
dirty, so KVM loads them at the next entry.  Segment registers (after a
software interrupt) go through KVM_SET_SREGS at once, the synced view
updated to match.

Exceptions: KVM_SET_VCPU_EVENTS.  With KVM_CAP_EXCEPTION_PAYLOAD (enabled on
the VM when first needed) the exception is made *pending* with its payload,
so KVM writes CR2 (#PF) or DR6 (#DB) when it delivers it; without the
capability CR2 is set first (KVM_SET_SREGS) and the exception is injected.
Pending registers are flushed with KVM_SET_REGS before, because a sync-regs
write-back at entry would discard a pending exception.  In real mode (no
error codes) the error code is dropped.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from typing import TYPE_CHECKING

from pyxen.hv import atomic
from pyxen.hv.emulate.faults import GuestException
from pyxen.hv.emulate.state import GPR_NAMES, CpuState
from pyxen.kvm import Vm
from pyxen.kvm import ioctls as k
from pyxen.kvm import structs as s
from pyxen.kvm.errors import KvmError
from pyxen.memory import GuestMemory

if TYPE_CHECKING:
    from pyxen.hv.vcpu import VcpuRunner

MSR_IA32_TSC = 0x10
XCR0 = 0
_payload: weakref.WeakKeyDictionary[Vm, bool] = weakref.WeakKeyDictionary()
_payload_lock = threading.Lock()


class KvmBackend:
    def __init__(self, runner: VcpuRunner) -> None:
        self.runner = runner
        self.kvm = runner.kvm
        self.memory: GuestMemory = runner.domain.memory

    def get_xsave(self) -> bytearray:
        return self.kvm.get_xsave()

    def set_xsave(self, area: bytearray) -> None:
        self.kvm.set_xsave(area)

    def get_xcr0(self) -> int:
        return self.kvm.get_xcrs().get(XCR0, 1)

    def get_msr(self, index: int) -> int:
        return self.kvm.get_msr(index)

    def guest_tsc(self) -> int:
        offset = self.runner.time.tsc_offset
        if offset is None:
            return self.kvm.get_msr(MSR_IA32_TSC)
        return int(atomic.read_tsc()) + offset

    def log_once(self, key: str, message: str) -> None:
        self.runner.domain.log_once(key, f"vcpu {self.runner.vcpu_id}: {message}")

    def commit(self, old: CpuState, new: CpuState) -> None:
        regs = self.kvm.regs
        dirty = False
        for i, name in enumerate(GPR_NAMES):
            if new.gprs[i] != old.gprs[i]:
                setattr(regs, name, new.gprs[i])
                dirty = True
        if new.rip != old.rip or new.rflags != old.rflags:
            regs.rip, regs.rflags = new.rip, new.rflags
            dirty = True
        if dirty:
            self.kvm.mark_regs_dirty()
        if new.cs != old.cs or new.ss != old.ss:
            sregs = s.kvm_sregs.from_buffer_copy(bytes(self.kvm.sregs))
            new.cs.to_kvm(sregs.cs)
            new.ss.to_kvm(sregs.ss)
            self.kvm.set_sregs(sregs)
            ctypes.memmove(ctypes.addressof(self.kvm.sregs), ctypes.addressof(sregs),
                           ctypes.sizeof(sregs))

    def _payload_enabled(self) -> bool:
        """Enable KVM_CAP_EXCEPTION_PAYLOAD on the VM (once); False if KVM lacks it."""
        vm = self.runner.domain.vm
        with _payload_lock:
            if vm not in _payload:
                try:
                    vm.enable_cap(k.KVM_CAP_EXCEPTION_PAYLOAD, 1)
                    _payload[vm] = True
                except KvmError:
                    _payload[vm] = False
            return _payload[vm]

    def inject(self, exc: GuestException, state: CpuState) -> None:
        self.kvm.flush_regs()
        pending = self._payload_enabled()  # before GET: it changes what GET reports
        events = self.kvm.get_vcpu_events()
        if exc.cr2 is not None and not pending:
            sregs = s.kvm_sregs.from_buffer_copy(bytes(self.kvm.sregs))
            sregs.cr2 = exc.cr2
            self.kvm.set_sregs(sregs)
        ev = events.exception
        ev.nr = exc.vector
        has_error = exc.error_code is not None and state.protected
        ev.has_error_code = int(has_error)
        ev.error_code = (exc.error_code or 0) if has_error else 0
        events.flags &= k.KVM_VCPUEVENT_VALID_SHADOW | k.KVM_VCPUEVENT_VALID_NMI_PENDING \
            | k.KVM_VCPUEVENT_VALID_SMM
        events.exception_has_payload = 0
        events.exception_payload = 0
        if pending:
            ev.pending, ev.injected = 1, 0
            if exc.payload is not None:
                events.exception_has_payload = 1
                events.exception_payload = exc.payload
            events.flags |= k.KVM_VCPUEVENT_VALID_PAYLOAD
        else:
            ev.pending, ev.injected = 0, 1
        self.kvm.set_vcpu_events(events)
