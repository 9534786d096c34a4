"""A vCPU's local APIC (xAPIC and x2APIC), emulated in pyxen as Xen 4.12's vlapic.

Why in user space: with KVM's in-kernel LAPIC (KVM_CREATE_IRQCHIP or the
split irqchip) KVM handles HLT itself and never tells pyxen that a vCPU
blocked, so pyxen's schedulers (hv/sched: the dispatcher gives the pCPU back
when a vCPU blocks) and its runstate accounting would stop seeing idle
vCPUs; KVM_INTERRUPT, which Xen's callback vector needs (it must bypass the
APIC's IRR/ISR, fact sheet §4.3), is refused or changes meaning there; and
one implementation then behaves the same on every host.  The price is an
exit to Python for every APIC access (an EOI, each timer programming).  A
split irqchip (APIC in KVM, pyxen keeping HLT through a userspace exit) is
possible future work.

This module is the pure model (no KVM): registers, priorities, delivery
between the vCPUs of a domain (``LapicBus``), errors, APIC_BASE and the
x2APIC MSR rules.  ``lapic_timer`` holds the timer; ``lapic_vcpu`` connects
the model to a vCPU thread (MMIO and MSR exits, injection, INIT/SIPI).

What the guest sees (read from Xen 4.12's xen/arch/x86/hvm/vlapic.c):
- Version register 0x00050014: version 0x14, six LVT entries (max LVT 5),
  no directed EOI.  APIC ID (vcpu_id * 2) << 24 in xAPIC mode, vcpu_id * 2
  in x2APIC mode, where the LDR is ((vcpu_id & ~0xf) << 12) |
  (1 << (vcpu_id & 0xf)) (Xen derives it from the vCPU id, not the APIC ID).
- APIC_BASE resets to 0xFEE00000 | enable, plus BSP on vCPU 0.  #GP for
  reserved bits, for moving the xAPIC window away from 0xFEE00000 (Xen's
  documented refusal), and for the transitions the SDM forbids (disabled ->
  x2APIC, x2APIC -> xAPIC, enable/disable with EXTD set).  Enabling a
  disabled APIC resets it.
- xAPIC MMIO: any access that fits inside one 32-bit register is done (a
  narrower write merges with the current value); others, and offsets past
  TDCR, read 0 and are dropped.  Reserved and write-only registers read
  0 (EOI, RRD, APR, CMCI ...); writes to read-only registers are dropped.
  The ID is writable in xAPIC mode (as in Xen).
- x2APIC MSRs 0x800-0x83F: reads of write-only or reserved registers, and
  writes of read-only ones, reserved bits, or a non-zero EOI/ESR, raise
  #GP; every x2APIC MSR raises #GP outside x2APIC mode.  ICR is one 64-bit
  MSR (destination in bits 63:32); SELF_IPI (0x83F) sends a fixed self-IPI.
- Priority: PPR from TPR and the highest in-service vector; a vector is
  deliverable when its class is above the highest in-service class and
  above TPR's (Xen: vlapic_has_pending_irq and hvm_interrupt_blocked).
  Taking it moves it IRR -> ISR; EOI clears the highest ISR bit.
- Errors: vector < 16 sent (ICR, SELF_IPI) is "send illegal vector" (ESR
  bit 5) on the sender; one received (an LVT, an upcall vector) is "receive
  illegal vector" (bit 6) on the receiver.  A new error raises the LVT error
  vector.  Deviation: Xen 4.12 accumulates errors straight into ESR and
  never clears it; pyxen latches them as the SDM says (a write to ESR makes
  the errors logged since the previous write readable and clears the log),
  as Xen itself does since its 2024 fix.
- IPIs: fixed, lowest priority (the matching enabled APIC with the lowest
  PPR, round robin from the last one chosen), NMI, INIT, SIPI; SMI and
  remote read are ignored and logged; ExtINT crashes the domain, as in
  Xen.  Physical, logical (flat/cluster, x2APIC cluster) destinations and
  the self/all/all-but-self shorthands.  Delivery is immediate, so the
  delivery-status bit always reads 0.
- IOAPIC messages (HVM platform, ``LapicBus.deliver_irq``): fixed and
  lowest-priority vectors, edge or level; NMI and INIT.  A level-triggered
  vector sets its TMR bit; the EOI that retires it clears the bit and, once
  the APIC lock is released, calls ``LapicBus.eoi_hook(vector)`` (the
  IOAPIC's remote-IRR handling, Xen's vioapic_update_EOI).  Edge vectors,
  IPIs and local sources clear the TMR bit, as before.

Locking: each ``Lapic`` has one lock for its registers; its own vCPU
thread, other vCPUs' IPIs, the timer thread and event delivery all take it.
No lock is held while calling into another APIC (an IPI releases the
sender's lock before taking the target's), so two vCPUs IPI-ing each other
cannot deadlock; nor into the host, except the timer's ``kick`` (which
takes no APIC lock), so that ``close`` also waits for an expiry in flight.
The event lock may be held when ``set_irq`` is called (raise_upcall);
nothing here takes the event lock.  The platform lock (hv/platform) may be
held when the IOAPIC delivers here; the EOI hook is called with no APIC
lock held, so the order is always platform lock, then an APIC lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from pyxen.hv import lapic_timer as lt
from pyxen.hv.timers import Timer

# MSRs.
MSR_IA32_APICBASE = 0x1B
MSR_IA32_TSC_DEADLINE = 0x6E0
MSR_X2APIC_FIRST = 0x800
MSR_X2APIC_LAST = 0x8FF
# What the domain's MSR filter must send to user space for the APIC (KVM
# does not filter the x2APIC range, see Vm.filter_msrs; listing it is harmless).
LAPIC_MSRS = (MSR_IA32_APICBASE, MSR_IA32_TSC_DEADLINE,
              range(MSR_X2APIC_FIRST, MSR_X2APIC_LAST + 1))


def is_lapic_msr(index: int) -> bool:
    return index in (MSR_IA32_APICBASE, MSR_IA32_TSC_DEADLINE) or (
        MSR_X2APIC_FIRST <= index <= MSR_X2APIC_LAST)

# IA32_APIC_BASE bits.
APIC_BASE_BSP = 1 << 8
APIC_BASE_EXTD = 1 << 10
APIC_BASE_ENABLE = 1 << 11
APIC_BASE_ADDR_MASK = 0x000F_FFFF_FFFF_F000
APIC_DEFAULT_BASE = 0xFEE0_0000

VLAPIC_VERSION = 0x0005_0014
APIC_PAGE_SIZE = 0x1000

# Register offsets in the xAPIC page (x2APIC MSR = 0x800 + offset / 16).
ID, LVR, TPR, APR, PPR, EOI, RRD, LDR, DFR, SVR = (
    0x020, 0x030, 0x080, 0x090, 0x0A0, 0x0B0, 0x0C0, 0x0D0, 0x0E0, 0x0F0)
ISR, TMR, IRR, ESR, CMCI, ICR, ICR2 = 0x100, 0x180, 0x200, 0x280, 0x2F0, 0x300, 0x310
LVTT, LVTTHMR, LVTPC, LVT0, LVT1, LVTERR = 0x320, 0x330, 0x340, 0x350, 0x360, 0x370
TMICT, TMCCT, TDCR, SELF_IPI = 0x380, 0x390, 0x3E0, 0x3F0
LVTS = (LVTT, LVTTHMR, LVTPC, LVT0, LVT1, LVTERR)

# Register bits.
VECTOR_MASK = 0xFF
LVT_MASKED = 1 << 16
SEND_PENDING = 1 << 12
MODE_MASK = 0x700
INPUT_POLARITY = 1 << 13
REMOTE_IRR = 1 << 14
LEVEL_TRIGGER = 1 << 15
TIMER_MODE_MASK = 3 << 17
SVR_ENABLED = 1 << 8
SVR_FOCUS_DISABLED = 1 << 9
LDR_MASK = 0xFF00_0000
DFR_FLAT = 0xFFFF_FFFF
DFR_CLUSTER = 0x0FFF_FFFF
ICR_DEST_LOGICAL = 1 << 11
ICR_ASSERT = 1 << 14
ICR_LEVEL = 1 << 15
ICR_SHORTHAND_SHIFT = 18
ESR_SEND_ILLEGAL = 1 << 5
ESR_RECEIVE_ILLEGAL = 1 << 6

# Delivery modes (ICR and LVT bits 10:8).
DM_FIXED, DM_LOWEST, DM_SMI, DM_REMRD, DM_NMI, DM_INIT, DM_STARTUP, DM_EXTINT = range(8)
# Destination shorthands (ICR bits 19:18).
SH_NONE, SH_SELF, SH_ALL, SH_ALL_BUT_SELF = range(4)

_LVT_BASE = LVT_MASKED | SEND_PENDING | VECTOR_MASK
_LINT = _LVT_BASE | MODE_MASK | INPUT_POLARITY | REMOTE_IRR | LEVEL_TRIGGER
LVT_WRITABLE = {
    LVTT: _LVT_BASE | TIMER_MODE_MASK,
    LVTTHMR: _LVT_BASE | MODE_MASK,
    LVTPC: _LVT_BASE | MODE_MASK,
    LVT0: _LINT,
    LVT1: _LINT,
    LVTERR: _LVT_BASE,
}
# x2APIC: registers an RDMSR may read (else #GP), and what a WRMSR may set.
X2APIC_READABLE = frozenset(
    {ID, LVR, TPR, PPR, LDR, SVR, ESR, ICR, CMCI, TMICT, TMCCT, TDCR, *LVTS}
    | {base + 0x10 * i for base in (ISR, TMR, IRR) for i in range(8)})
_ICR_LOW_WRITABLE = (VECTOR_MASK | MODE_MASK | ICR_DEST_LOGICAL | ICR_ASSERT | ICR_LEVEL
                     | 3 << ICR_SHORTHAND_SHIFT)
X2APIC_WRITABLE = {
    TPR: 0xFF,
    SVR: VECTOR_MASK | SVR_ENABLED | SVR_FOCUS_DISABLED,
    LVTT: _LVT_BASE | TIMER_MODE_MASK,
    LVTTHMR: _LVT_BASE | MODE_MASK,
    LVTPC: _LVT_BASE | MODE_MASK,
    CMCI: _LVT_BASE | MODE_MASK,
    LVT0: _LINT,
    LVT1: _LINT,
    LVTERR: _LVT_BASE,
    TMICT: 0xFFFF_FFFF_FFFF_FFFF,  # Xen accepts any value and keeps the low 32 bits
    TDCR: lt.TDCR_MASK,
    SELF_IPI: VECTOR_MASK,
    EOI: 0,
    ESR: 0,
}

_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF


class LapicHost(Protocol):
    """What the APIC asks of its vCPU (implemented in ``lapic_vcpu``)."""

    def kick(self) -> None:
        """An interrupt may have become deliverable: look before the next entry."""

    def nmi(self) -> None:
        """An NMI IPI arrived."""

    def init_signal(self) -> None:
        """An INIT IPI arrived (processed in the vCPU's own thread)."""

    def startup_signal(self, vector: int) -> None:
        """A start-up IPI arrived."""

    def crash(self, why: str) -> None:
        """Crash the domain (an IPI Xen cannot deliver)."""

    def log_once(self, key: str, message: str) -> None: ...


TimerFactory = Callable[[Callable[[], None]], Timer]


class LapicBus:
    """The APICs of one domain, for IPIs, and the lowest-priority round robin."""

    def __init__(self) -> None:
        self.lapics: list[Lapic] = []
        self._lock = threading.Lock()
        self._last_lowest = 0
        # Called with the vector when a level-triggered (TMR) vector is EOI'd
        # (the HVM platform's IOAPIC); None for PVH domains.
        self.eoi_hook: Callable[[int], None] | None = None

    def add(self, lapic: Lapic) -> None:
        with self._lock:
            self.lapics.append(lapic)

    def deliver(self, source: Lapic, icr: int, dest: int) -> None:
        """Send the IPI described by ICR low ``icr`` to ``dest`` (vlapic_ipi)."""
        mode = (icr >> 8) & 7
        shorthand = (icr >> ICR_SHORTHAND_SHIFT) & 3
        logical = bool(icr & ICR_DEST_LOGICAL)
        vector = icr & VECTOR_MASK
        lapics = list(self.lapics)
        targets = [t for t in lapics if t.matches(source, shorthand, dest, logical)]
        if mode in (DM_FIXED, DM_LOWEST) and vector < 16:
            source.error(ESR_SEND_ILLEGAL)
            return
        if mode == DM_LOWEST:
            target = self._lowest_priority(lapics, targets)
            if target is not None:
                target.accept_fixed(vector)
            return
        for target in targets:
            if mode == DM_FIXED:
                target.accept_fixed(vector)
            elif mode == DM_NMI:
                target.host.nmi()
            elif mode == DM_INIT:
                if icr & (ICR_LEVEL | ICR_ASSERT) != ICR_LEVEL:  # not a level de-assert
                    target.host.init_signal()
            elif mode == DM_STARTUP:
                target.host.startup_signal(vector)
            elif mode == DM_EXTINT:
                target.host.crash(f"vcpu {source.vcpu_id} sent an ExtINT IPI "
                                  f"(ICR {icr:#x}), which Xen cannot deliver")
                return
            else:
                name = "SMI" if mode == DM_SMI else "remote read"
                source.host.log_once(f"lapic-dm{mode}",
                                     f"vcpu {source.vcpu_id}: ignoring {name} IPI")

    def destinations(self, dest: int, logical: bool) -> list[Lapic]:
        """The APICs an IOAPIC/MSI message for ``dest`` reaches (no shorthand)."""
        return [t for t in list(self.lapics) if t.matches(t, SH_NONE, dest, logical)]

    def deliver_irq(self, dest: int, logical: bool, mode: int, vector: int,
                    level: bool) -> int:
        """An interrupt message from the IOAPIC; returns how many APICs took it.

        Fixed goes to every matching APIC, lowest priority to one of them
        (round robin among the lowest PPR), NMI and INIT to every match;
        other modes (SMI, ExtINT, reserved) are not delivered here: the
        caller handles ExtINT through the PIC's INTA.  Vectors below 16 are
        refused by the receiving APIC (receive-illegal-vector)."""
        lapics = list(self.lapics)
        targets = [t for t in lapics if t.matches(t, SH_NONE, dest, logical)]
        if mode == DM_LOWEST:
            target = self._lowest_priority(lapics, targets)
            targets = [target] if target is not None else []
        if mode in (DM_FIXED, DM_LOWEST):
            taken = 0
            for target in targets:
                taken += target.accept_irq(vector, level)
            return taken
        if mode == DM_NMI:
            for target in targets:
                target.host.nmi()
            return len(targets)
        if mode == DM_INIT:
            for target in targets:
                target.host.init_signal()
            return len(targets)
        return 0

    def _lowest_priority(self, lapics: list[Lapic], targets: list[Lapic]) -> Lapic | None:
        """The enabled target with the lowest PPR, searching round robin (vlapic_lowest_prio)."""
        if not targets:
            return None
        with self._lock:
            start = self._last_lowest
            order = lapics[start + 1:] + lapics[:start + 1]
            best, best_ppr = None, 1 << 32
            for lapic in order:
                if lapic in targets and lapic.enabled:
                    ppr = lapic.ppr()
                    if ppr < best_ppr:
                        best, best_ppr = lapic, ppr
            if best is not None:
                self._last_lowest = lapics.index(best)
            return best


class Lapic:
    """One vCPU's local APIC.  Guest input never raises: bad values are masked or #GP."""

    def __init__(self, vcpu_id: int, bus: LapicBus, host: LapicHost, timers: TimerFactory,
                 clock: Callable[[], int], guest_tsc: Callable[[], int],
                 tsc_hz: Callable[[], int]) -> None:
        self.vcpu_id = vcpu_id
        self.bus = bus
        self.host = host
        self._lock = threading.Lock()
        self._regs = [0] * (APIC_PAGE_SIZE // 16)  # plain registers, by offset / 16
        self.irr = 0  # 256-bit maps, bit n = vector n
        self.isr = 0
        self.tmr = 0
        self.pending_esr = 0  # errors logged since the last ESR write
        self.apic_base = 0
        self.hw_disabled = False
        self.sw_disabled = True
        self.upcall_vector = 0  # HVMOP_set_evtchn_upcall_vector (0: none)
        self.timer = lt.LapicTimer(timers(self._timer_fired), clock, guest_tsc, tsc_hz)
        self._reset()
        bus.add(self)

    # -- state -------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return not (self.hw_disabled or self.sw_disabled)

    @property
    def x2apic(self) -> bool:
        return self.apic_base & (APIC_BASE_ENABLE | APIC_BASE_EXTD) == (
            APIC_BASE_ENABLE | APIC_BASE_EXTD)

    @property
    def xapic(self) -> bool:
        """The xAPIC MMIO window is live (hardware-enabled, not in x2APIC mode)."""
        return self.apic_base & (APIC_BASE_ENABLE | APIC_BASE_EXTD) == APIC_BASE_ENABLE

    @property
    def mmio_base(self) -> int:
        return self.apic_base & APIC_BASE_ADDR_MASK

    def apic_id(self) -> int:
        reg = self._regs[ID >> 4]
        return reg if self.x2apic else reg >> 24

    def reg(self, offset: int) -> int:
        """A stored register (for tests and the glue); no side effects."""
        with self._lock:
            return self._read(offset & 0xFF0)

    def accepts_pic(self) -> bool:
        """LINT0 passes the 8259's INTR through: the APIC is hardware-disabled
        (the pin then goes straight to the CPU) or LVT0 is unmasked ExtINT
        (Xen's vlapic_accept_pic_intr, less its IOAPIC half)."""
        if self.hw_disabled:
            return True
        return self._regs[LVT0 >> 4] & (LVT_MASKED | MODE_MASK) == DM_EXTINT << 8

    def ppr(self) -> int:
        tpr = self._regs[TPR >> 4]
        isrv = max(self.isr.bit_length() - 1, 0)
        return tpr & 0xFF if tpr & 0xF0 >= isrv & 0xF0 else isrv & 0xF0

    def _reset(self) -> None:
        """vlapic_reset: power-on state (lock held or not yet shared)."""
        self.apic_base = APIC_BASE_ENABLE | APIC_DEFAULT_BASE | (
            APIC_BASE_BSP if self.vcpu_id == 0 else 0)
        self._regs[ID >> 4] = (self.vcpu_id * 2 << 24) & _M32
        self._do_init()

    def _do_init(self) -> None:
        """vlapic_do_init: the INIT state; ID, APIC_BASE and ESR are kept."""
        regs = self._regs
        regs[LVR >> 4] = VLAPIC_VERSION
        self.irr = self.isr = self.tmr = 0
        regs[ICR >> 4] = regs[ICR2 >> 4] = 0
        if not self.x2apic:  # the x2APIC LDR is read-only and survives INIT
            regs[LDR >> 4] = 0
        regs[TPR >> 4] = 0
        self.timer.reset()
        regs[DFR >> 4] = DFR_FLAT
        for lvt in LVTS:
            regs[lvt >> 4] = LVT_MASKED
        regs[SVR >> 4] = 0xFF
        self.sw_disabled = True

    def apply_init(self) -> None:
        """An INIT reached this vCPU (its own thread; the caller resets the vCPU itself)."""
        with self._lock:
            self._do_init()

    def close(self) -> None:
        with self._lock:
            self.timer.stop()

    def stop_timer(self) -> None:
        """vCPU down: the timer stops (its registers keep their values)."""
        with self._lock:
            self.timer.stop()

    # -- interrupts ----------------------------------------------------------------

    def set_irq(self, vector: int) -> None:
        """An edge-triggered interrupt from a local source (vlapic_set_irq)."""
        with self._lock:
            kick = self._set_irq(vector)
        if kick:
            self.host.kick()

    def accept_fixed(self, vector: int) -> None:
        """A fixed or lowest-priority IPI: dropped unless the APIC is enabled."""
        with self._lock:
            kick = self.enabled and self._set_irq(vector)
        if kick:
            self.host.kick()

    def accept_irq(self, vector: int, level: bool) -> bool:
        """A fixed or lowest-priority IOAPIC message (vlapic_set_irq with its
        trigger mode); dropped unless the APIC is enabled.  True if taken."""
        with self._lock:
            if not self.enabled:
                return False
            kick = self._set_irq(vector, level)
        if kick:
            self.host.kick()
        return True

    def _set_irq(self, vector: int, level: bool = False) -> bool:
        """Lock held.  True if the vCPU should look again."""
        if vector < 16:
            return self._error(ESR_RECEIVE_ILLEGAL)
        bit = 1 << vector
        if level:
            self.tmr |= bit
        else:
            self.tmr &= ~bit
        if self.irr & bit:
            return False
        self.irr |= bit
        return True

    def error(self, bits: int) -> None:
        with self._lock:
            kick = self._error(bits)
        if kick:
            self.host.kick()

    def _error(self, bits: int) -> bool:
        """Log an error; a new one raises the LVT error vector (vlapic_error).  Lock held."""
        if self.pending_esr & bits == bits:
            return False
        self.pending_esr |= bits
        lvterr = self._regs[LVTERR >> 4]
        if lvterr & LVT_MASKED:
            return False
        vector = lvterr & VECTOR_MASK
        if vector < 16:  # the error vector itself is illegal: log that, no recursion
            self.pending_esr |= ESR_RECEIVE_ILLEGAL
            return False
        return self._set_irq(vector)

    def pending_vector(self) -> int | None:
        """The vector to inject now, or None (vlapic_has_pending_irq + TPR blocking)."""
        irr = self.irr
        if not irr or not self.enabled:
            return None
        vector = irr.bit_length() - 1
        isr = self.isr
        if isr and vector & 0xF0 <= (isr.bit_length() - 1) & 0xF0:
            return None
        if self._regs[TPR >> 4] >> 4 & 0xF >= vector >> 4:
            return None
        return vector

    def ack(self, vector: int) -> None:
        """The vector was injected: IRR -> ISR (vlapic_ack_pending_irq)."""
        bit = 1 << vector
        with self._lock:
            self.irr &= ~bit
            self.isr |= bit

    def _eoi(self) -> Callable[[], None] | None:
        """Lock held: clear the highest in-service vector.  Returns the work to do
        once the lock is released: the IOAPIC's EOI for a level-triggered
        vector, and a kick if other vectors are waiting."""
        level_vector = -1
        if self.isr:
            vector = self.isr.bit_length() - 1
            bit = 1 << vector
            self.isr &= ~bit
            if self.tmr & bit:
                self.tmr &= ~bit
                level_vector = vector
        hook = self.bus.eoi_hook if level_vector >= 0 else None
        kick = self.host.kick if self.irr else None
        if hook is None:
            return kick

        def then() -> None:
            hook(level_vector)
            if kick is not None:
                kick()
        return then

    def _timer_fired(self) -> None:
        """The timer service's callback (its thread, not the vCPU's).  It kicks with
        the lock held: ``close`` takes the lock, so once it has returned no expiry
        is still on its way to a vCPU whose KVM state is being closed."""
        with self._lock:
            lvtt = self._regs[LVTT >> 4]
            if (self.timer.expired(lvtt) and self.enabled and not lvtt & LVT_MASKED
                    and self._set_irq(lvtt & VECTOR_MASK)):
                self.host.kick()

    # -- destinations ----------------------------------------------------------------

    def matches(self, source: Lapic, shorthand: int, dest: int, logical: bool) -> bool:
        """Whether this APIC is a destination of ``source``'s IPI (vlapic_match_dest)."""
        if shorthand == SH_SELF:
            return self is source
        if shorthand == SH_ALL:
            return True
        if shorthand == SH_ALL_BUT_SELF:
            return self is not source
        if logical:
            return self._match_logical(dest)
        return dest == (_M32 if self.x2apic else 0xFF) or dest == self.apic_id()

    def _match_logical(self, mda: int) -> bool:
        ldr = self._regs[LDR >> 4]
        if self.x2apic:
            return ldr >> 16 == mda >> 16 and bool(ldr & mda & 0xFFFF)
        logical_id = ldr >> 24
        mda &= 0xFF
        dfr = self._regs[DFR >> 4]
        if dfr == DFR_FLAT:
            return bool(logical_id & mda)
        if dfr == DFR_CLUSTER:
            return logical_id >> 4 == mda >> 4 and bool(logical_id & mda & 0xF)
        return False

    # -- register access -----------------------------------------------------------

    def _read(self, offset: int) -> int:
        """vlapic_read_aligned (lock held); ``offset`` is 16-byte aligned."""
        if offset == PPR:
            return self.ppr()
        lvtt = self._regs[LVTT >> 4]
        if offset == TMCCT:
            return self.timer.current_count(lvtt)
        if offset == TMICT:
            return self.timer.read_tmict(lvtt)
        if offset == TDCR:
            return self.timer.tdcr
        if ISR <= offset < IRR + 0x80:
            bitmap = (self.isr, self.tmr, self.irr)[(offset - ISR) >> 7]
            return (bitmap >> ((offset >> 4 & 7) * 32)) & _M32
        if offset < APIC_PAGE_SIZE:
            return self._regs[offset >> 4]
        return 0

    def _write(self, offset: int, value: int) -> Callable[[], None] | None:
        """vlapic_reg_write (lock held).  Returns work to do once the lock is released."""
        regs = self._regs
        value &= _M32
        if offset == ID:
            regs[ID >> 4] = value
        elif offset == TPR:
            regs[TPR >> 4] = value & 0xFF
            return self._kick_if_irr()
        elif offset == EOI:
            return self._eoi()
        elif offset == LDR:
            regs[LDR >> 4] = value & LDR_MASK
        elif offset == DFR:
            regs[DFR >> 4] = value | DFR_CLUSTER
        elif offset == SVR:
            regs[SVR >> 4] = value & 0x3FF
            if value & SVR_ENABLED:
                self.sw_disabled = False
                return self._kick_if_irr()
            self.sw_disabled = True
            for lvt in LVTS:
                regs[lvt >> 4] |= LVT_MASKED
        elif offset == ESR:
            regs[ESR >> 4] = self.pending_esr  # latch (SDM §10.5.3)
            self.pending_esr = 0
        elif offset == ICR:
            value &= ~SEND_PENDING  # delivered at once
            regs[ICR >> 4] = value
            high = regs[ICR2 >> 4]
            dest = high if self.x2apic else high >> 24
            return lambda: self.bus.deliver(self, value, dest)
        elif offset == ICR2:
            regs[ICR2 >> 4] = value & 0xFF00_0000
        elif offset in LVT_WRITABLE:
            if offset == LVTT:
                self.timer.write_lvtt(regs[LVTT >> 4], value)
            if self.sw_disabled:
                value |= LVT_MASKED
            old = regs[offset >> 4]
            regs[offset >> 4] = value & LVT_WRITABLE[offset]
            if offset == LVT0 and old != regs[offset >> 4]:
                return self.host.kick  # the 8259's INTR may now reach (or not) this vCPU
        elif offset == TMICT:
            self.timer.write_tmict(value, regs[LVTT >> 4])
        elif offset == TDCR:
            self.timer.write_tdcr(value, regs[LVTT >> 4])
        # Anything else (LVR, APR, PPR, RRD, ISR/TMR/IRR, TMCCT, CMCI, reserved): dropped.
        return None

    def _kick_if_irr(self) -> Callable[[], None] | None:
        return self.host.kick if self.irr else None

    # -- xAPIC MMIO ------------------------------------------------------------------

    def mmio_read(self, offset: int, size: int) -> int:
        """A read of ``size`` bytes at ``offset`` in the APIC page (vlapic_mmio_read)."""
        alignment = offset & 0xF
        if alignment + size > 4 or offset > TDCR + 3 or size <= 0:
            return 0
        with self._lock:
            reg = self._read(offset & ~0xF)
        return (reg >> (alignment * 8)) & ((1 << (size * 8)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        """A write of ``size`` bytes at ``offset`` in the APIC page (vlapic_mmio_write)."""
        alignment = offset & 0xF
        offset &= ~0xF
        if alignment + size > 4 or offset > TDCR or size <= 0:
            return
        with self._lock:
            if size < 4:
                shift = alignment * 8
                mask = ((1 << (size * 8)) - 1) << shift
                value = (self._read(offset) & ~mask) | ((value << shift) & mask)
            then = self._write(offset, value)
        if then is not None:
            then()

    # -- MSRs ------------------------------------------------------------------------

    def rdmsr(self, index: int) -> int | None:
        """RDMSR of an APIC MSR; None means #GP."""
        if index == MSR_IA32_APICBASE:
            return self.apic_base
        if index == MSR_IA32_TSC_DEADLINE:
            with self._lock:
                return self.timer.read_deadline(self._regs[LVTT >> 4])
        offset = (index - MSR_X2APIC_FIRST) << 4
        if not (self.x2apic and offset in X2APIC_READABLE):
            return None
        with self._lock:
            value = self._read(offset)
            if offset == ICR:
                value |= self._regs[ICR2 >> 4] << 32
        return value

    def wrmsr(self, index: int, value: int) -> bool:
        """WRMSR of an APIC MSR; False means #GP."""
        value &= _M64
        if index == MSR_IA32_APICBASE:
            with self._lock:
                return self._write_apic_base(value)
        if index == MSR_IA32_TSC_DEADLINE:
            with self._lock:
                if not self.hw_disabled:
                    self.timer.write_deadline(value, self._regs[LVTT >> 4])
            return True
        offset = (index - MSR_X2APIC_FIRST) << 4
        if not self.x2apic:
            return False
        if offset == ICR:
            if value & _M32 & ~_ICR_LOW_WRITABLE:
                return False
        elif offset not in X2APIC_WRITABLE or value & ~X2APIC_WRITABLE[offset]:
            return False
        with self._lock:
            if offset == ICR:
                self._regs[ICR2 >> 4] = value >> 32
            elif offset == SELF_IPI:
                offset, value = ICR, SH_SELF << ICR_SHORTHAND_SHIFT | value
            then = self._write(offset, value)
        if then is not None:
            then()
        return True

    def _write_apic_base(self, value: int) -> bool:
        """guest_wrmsr_apic_base (lock held); False means #GP."""
        if value & ~(APIC_BASE_ADDR_MASK | APIC_BASE_ENABLE | APIC_BASE_BSP | APIC_BASE_EXTD):
            return False
        if value & (APIC_BASE_EXTD | APIC_BASE_ENABLE) == APIC_BASE_ENABLE and (
                value & APIC_BASE_ADDR_MASK != APIC_DEFAULT_BASE):
            self.host.log_once("lapic-move", f"vcpu {self.vcpu_id} tried to move the APIC "
                               f"MMIO window ({value:#x}): #GP, as Xen")
            return False
        changed = self.apic_base ^ value
        if changed & APIC_BASE_ENABLE:
            if value & APIC_BASE_EXTD:
                return False
            if value & APIC_BASE_ENABLE:
                self._reset()
                self.hw_disabled = False
            else:
                self.hw_disabled = True
        elif changed & APIC_BASE_EXTD and not self.xapic:
            return False
        self.apic_base = value
        if self.x2apic:
            vcpu = self.vcpu_id
            self._regs[ID >> 4] = vcpu * 2 & _M32
            self._regs[LDR >> 4] = ((vcpu & ~0xF) << 12 | 1 << (vcpu & 0xF)) & _M32
        return True
