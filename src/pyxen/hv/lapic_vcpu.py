"""A vCPU thread's side of its local APIC: exits in, interrupts and INIT/SIPI out.

``VcpuApic`` owns the vCPU's ``Lapic`` model (hv/lapic.py) and is its
``LapicHost``.  ``VcpuRunner`` calls it from a few places only:

- MMIO exits: an access inside the 4 KiB APIC page of a vCPU whose APIC is
  in xAPIC mode goes to the model; anything else stays "nothing there"
  (reads all ones), as do APIC-page accesses while the APIC is disabled or
  in x2APIC mode (Xen's vlapic_range claims the page only in xAPIC mode).
- MSR exits for IA32_APIC_BASE, IA32_TSC_DEADLINE and 0x800-0x8FF: the
  model answers or refuses (#GP through ``kvm_run.msr.error``).
- Injection, from ``_attend`` after the NMI and the callback vector, in
  Xen's order (hvm_vcpu_has_pending_irq): on vCPU 0 of an HVM domain
  (``domain.platform`` set) first the 8259's interrupt when the platform
  says vCPU 0 accepts it (LVT0 ExtINT, APIC disabled, or IOAPIC pin 0
  ExtINT): the INTA cycle (``ext_int_acknowledge``) is run only once KVM
  can take an interrupt, and a vector KVM then refuses is held and retried
  first.  Then the highest IRR vector that beats PPR is injected with
  KVM_INTERRUPT when the guest can take it and moves IRR -> ISR; otherwise
  an interrupt window is requested.  The vCPU keeps looking after each exit
  while something is deliverable.  PVH domains (no platform) and other
  vCPUs pay one attribute test.
- Signals: INIT and SIPI from another vCPU (or itself) are queued here and
  applied by this vCPU's own thread, the only one that may change its KVM
  state.  INIT: an initialised vCPU goes down (the last one down powers the
  domain off), becomes uninitialised and its APIC takes the INIT state (Xen:
  hvm_vcpu_down, vcpu_reset, vlapic_do_init); an uninitialised vCPU is
  already waiting for a SIPI.  SIPI: an uninitialised vCPU starts in real
  mode at CS = vector << 8 (base vector << 12), IP 0, EDX 0xF00, and comes
  up (Xen: hvm_vcpu_reset_state); a SIPI to an initialised vCPU is ignored.
  After INIT, VCPUOP_initialise works again, as in Xen.
- NMI IPIs use the vCPU's NMI path; like Xen's vlapic, one also brings an
  initialised vCPU that went down (HLT with IF=0) back up.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from pyxen.hv import atomic
from pyxen.hv.lapic import APIC_PAGE_SIZE, Lapic, is_lapic_msr
from pyxen.hv.vcpu_control import Req
from pyxen.kvm import Vcpu
from pyxen.kvm import exits as ex
from pyxen.kvm import structs as ks

if TYPE_CHECKING:
    from pyxen.hv.platform import Platform
    from pyxen.hv.vcpu import VcpuRunner

INIT = -1  # in the signal queue; anything else is a SIPI vector
# Signals a vCPU keeps before it applies them; more are dropped (a sender
# cannot make a target that waits for a pCPU hold unbounded memory).
MAX_SIGNALS = 16
_CR0_ET = 1 << 4


class VcpuApic:
    def __init__(self, runner: VcpuRunner) -> None:
        self.runner = runner
        self.signals: collections.deque[int] = collections.deque()
        self.bsp = runner.vcpu_id == 0  # only vCPU 0 can take the 8259's interrupt
        self.held_ext_int: int | None = None  # acknowledged at the PIC, not yet injected
        hv = runner.domain.hv
        self.lapic = Lapic(runner.vcpu_id, runner.domain.lapic_bus, self, hv.timers.timer,
                           hv.system_time_ns, self._guest_tsc, lambda: hv.tsc.hz)

    def _guest_tsc(self) -> int:
        return int(atomic.read_tsc()) + (self.runner.time.tsc_offset or 0)

    # -- LapicHost ---------------------------------------------------------------

    def kick(self) -> None:
        self.runner.request(Req.APIC)

    def nmi(self) -> None:
        runner = self.runner
        with runner.domain.lock:
            if runner.initialised and not runner.online:
                runner.online = True
        runner.request(Req.NMI | Req.STATE)

    def init_signal(self) -> None:
        self._queue(INIT)

    def startup_signal(self, vector: int) -> None:
        self._queue(vector)

    def _queue(self, signal: int) -> None:
        if len(self.signals) >= MAX_SIGNALS:
            self.log_once("lapic-signals", f"vcpu {self.runner.vcpu_id}: INIT/SIPI flood, "
                          "dropping signals until it catches up")
            return
        self.signals.append(signal)
        self.runner.request(Req.APIC)

    def crash(self, why: str) -> None:
        self.runner.domain.crash(why)

    def log_once(self, key: str, message: str) -> None:
        self.runner.domain.log_once(key, message)

    # -- exits ---------------------------------------------------------------------

    def mmio(self, mmio: ex.MmioExit) -> bool:
        """Handle an MMIO exit in the APIC page; False if it is not the APIC's."""
        lapic = self.lapic
        offset = mmio.phys_addr - lapic.mmio_base
        if not (0 <= offset < APIC_PAGE_SIZE and lapic.xapic):
            return False
        if mmio.is_write:
            lapic.mmio_write(offset, mmio.length, int.from_bytes(mmio.data, "little"))
        else:
            value = lapic.mmio_read(offset, mmio.length)
            data = self.runner.kvm.kvm_run.exit.mmio.data
            for i in range(mmio.length):
                data[i] = (value >> (8 * i)) & 0xFF
        return True

    def msr(self, msr: ex.MsrExit) -> None:
        """RDMSR/WRMSR of an APIC MSR, or one KVM refused; a refusal is a #GP in the guest."""
        run = self.runner.kvm.kvm_run.exit.msr
        if not is_lapic_msr(msr.number):
            run.error = 1  # what KVM would have done (KVM_MSR_EXIT_REASON_INVAL/UNKNOWN)
            return
        if msr.is_write:
            ok = self.lapic.wrmsr(msr.number, msr.data)
        else:
            value = self.lapic.rdmsr(msr.number)
            ok = value is not None
            if value is not None:
                run.data = value
        run.error = 0 if ok else 1

    # -- injection -------------------------------------------------------------------

    def _platform(self) -> Platform | None:
        """The domain's HVM platform devices (None for PVH, and for vCPUs other than 0)."""
        if not self.bsp:
            return None
        return self.runner.domain.platform

    def ext_int_waiting(self) -> bool:
        """The 8259's interrupt waits for this vCPU (always False off vCPU 0 / PVH)."""
        if not self.bsp:
            return False
        if self.held_ext_int is not None:
            return True
        platform = self._platform()
        return platform is not None and platform.ext_int_pending(0)

    def _inject_ext_int(self) -> bool | None:
        """ExtINT first (hvm_vcpu_has_pending_irq); None when there is none."""
        kvm = self.runner.kvm
        vector = self.held_ext_int
        if vector is None:
            platform = self._platform()
            if platform is None or not platform.ext_int_pending(0):
                return None
            if not kvm.ready_for_interrupt():
                kvm.set_interrupt_window(True)
                return True
            vector = platform.ext_int_acknowledge()
            if vector is None:  # the line dropped in between
                return None
        elif not kvm.ready_for_interrupt():
            kvm.set_interrupt_window(True)
            return True
        try:
            kvm.inject_interrupt(vector)
        except OSError:  # KVM still holds an earlier injection: keep this one
            self.held_ext_int = vector
            kvm.set_interrupt_window(True)
            return True
        self.held_ext_int = None
        kvm.set_interrupt_window(False)
        return True  # look again after the next exit: the PIC may have more

    def inject(self) -> bool:
        """Inject the PIC's or the APIC's deliverable vector; True while one waits."""
        if self.bsp:
            ext = self._inject_ext_int()
            if ext is not None:
                return ext
        lapic = self.lapic
        kvm = self.runner.kvm
        vector = lapic.pending_vector()
        if vector is None:
            kvm.set_interrupt_window(False)
            return False
        if not kvm.ready_for_interrupt():
            kvm.set_interrupt_window(True)
            return True
        try:
            kvm.inject_interrupt(vector)
        except OSError:  # KVM still holds an earlier injection: try after the next exit
            kvm.set_interrupt_window(True)
            return True
        lapic.ack(vector)
        kvm.set_interrupt_window(False)
        return True

    def deliverable(self) -> bool:
        """An interrupt would be injected if the guest had IF = 1 (block's test)."""
        return self.lapic.pending_vector() is not None or self.ext_int_waiting()

    # -- INIT / SIPI (own thread) ------------------------------------------------------

    def apply_signals(self) -> None:
        while self.signals:
            signal = self.signals.popleft()
            if signal == INIT:
                self._init()
            else:
                self._startup(signal)

    def _init(self) -> None:
        runner = self.runner
        domain = runner.domain
        with domain.lock:
            if not runner.initialised:
                return  # already reset: waiting for a SIPI
        runner.take_down()
        if domain.shutdown_reason is not None:
            return  # it was the last vCPU up: the domain powered off
        with domain.lock:
            runner.initialised = False
        self.lapic.apply_init()
        # A later SIPI or VCPUOP_initialise sets the state: let KVM finish the
        # exit's instruction first (its completion would clobber that state).
        runner.control.complete_pending_io(runner.kvm.run)

    def _startup(self, vector: int) -> None:
        runner = self.runner
        domain = runner.domain
        with domain.lock:
            if runner.initialised:
                return
            try:
                set_real_mode(runner.kvm, vector)
            except OSError as e:
                domain.log(f"vcpu {runner.vcpu_id}: KVM refused the SIPI state "
                           f"(vector {vector:#x}): {e.strerror}")
                return
            runner.initialised = True
            runner.online = True


def set_real_mode(kvm: Vcpu, vector: int) -> None:
    """The state a SIPI starts a vCPU in (Xen's hvm_vcpu_reset_state, cs = vector << 8)."""
    sregs = kvm.get_sregs()
    cs = vector << 8
    sregs.cs = ks.kvm_segment(base=cs << 4, limit=0xFFFF, selector=cs, type=0xB, present=1,
                              s=1)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, ks.kvm_segment(base=0, limit=0xFFFF, selector=0, type=0x3,
                                            present=1, s=1))
    sregs.ldt = ks.kvm_segment(limit=0xFFFF, type=0x2, present=1)
    sregs.tr = ks.kvm_segment(limit=0xFFFF, type=0xB, present=1)
    sregs.gdt = ks.kvm_dtable(base=0, limit=0xFFFF)
    sregs.idt = ks.kvm_dtable(base=0, limit=0xFFFF)
    sregs.cr0 = _CR0_ET
    sregs.cr2 = sregs.cr3 = sregs.cr4 = sregs.efer = 0
    for i in range(4):
        sregs.interrupt_bitmap[i] = 0
    kvm.set_sregs(sregs)
    regs = ks.kvm_regs()
    regs.rflags = 0x2
    regs.rdx = 0xF00
    kvm.set_regs(regs)
    kvm.clear_dirty_regs()
