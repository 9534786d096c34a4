"""The local APIC timer of one vCPU, as Xen 4.12's vlapic presents it.

Modes (LVT timer bits 18:17): one-shot (0), periodic (1), TSC-deadline (2).
Mode 3 is reserved: like Xen, neither TMICT nor the deadline MSR arms it and
both read 0.

Counting: Xen's vlapic runs the APIC bus at 100 MHz (``APIC_BUS_CYCLE_NS``
= 10 in xen/include/asm-x86/hvm/vlapic.h), so one count of the initial
count register (TMICT) lasts 10 ns times the divisor chosen by TDCR (bits 0,
1 and 3; SDM Vol. 3 §10.5.4: 0b0000 = 2 ... 0b1010 = 128, 0b1011 = 1).  The
current count (TMCCT) is not stored: it is computed from ``last_update``,
the system time at which the current count started (0: the timer is
stopped, TMCCT reads 0), exactly as Xen's vlapic_get_tmcct does.

Re-programming follows Xen's vlapic_update_timer: a new TMICT starts a full
period; a change of LVTT (mode, mask, vector) or of the divisor keeps the
time already counted (scaled to the new divisor); a one-shot count that has
run out stays at 0.  In TSC-deadline mode the deadline MSR arms the timer:
a deadline in the guest's future is converted to system time with the
vCPU's TSC frequency (``guest_tsc``/``tsc_hz``), a past one fires at once,
0 disarms; TMICT writes are ignored there and reads give 0, and switching
into or out of the mode clears TMICT and the deadline.

Limits: like Xen's vpt.c, a periodic timer never ticks faster than every
100 us (``MIN_PERIOD_NS``; the counter still reads as programmed), so a
guest cannot make the timer thread spin.  A TSC deadline is checked
against the guest's TSC when it expires and re-armed for the rest if the
frequency estimate made it early, so it is never early in TSC terms.

Deviation from Xen: Xen's periodic timer (vpt.c) can deliver ticks missed
while the vCPU was not running as a burst; here a tick whose interrupt is
still pending, or ticks missed because the timer thread ran late, coalesce
into one (the next deadline stays on the original grid, so the period does
not drift).

Locking: none here.  The owning ``Lapic`` calls every method with its lock
held; the timer service's callback goes through the ``Lapic``, which takes
the lock and then asks ``expired`` whether the expiry is still current (a
re-arm or cancel may have raced with it).
"""

from __future__ import annotations

from collections.abc import Callable

from pyxen.hv.timers import Timer

APIC_BUS_CYCLE_NS = 10
TIMER_MODE_SHIFT = 17
MODE_ONESHOT = 0
MODE_PERIODIC = 1
MODE_TSC_DEADLINE = 2
TDCR_MASK = 0xB  # bits 0, 1 and 3 are the divide value; the rest are reserved
MIN_PERIOD_NS = 100_000  # Xen's vpt.c: "Periodic timer must be at least 0.1ms"
_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF


def timer_mode(lvtt: int) -> int:
    return (lvtt >> TIMER_MODE_SHIFT) & 3


def divisor_of(tdcr: int) -> int:
    """The divide value encoded in TDCR (SDM Figure 10-10)."""
    code = ((tdcr & 3) | ((tdcr & 8) >> 1)) + 1
    return 1 << (code & 7)


class LapicTimer:
    def __init__(self, timer: Timer, clock: Callable[[], int],
                 guest_tsc: Callable[[], int], tsc_hz: Callable[[], int]) -> None:
        self._timer = timer
        self._clock = clock
        self._guest_tsc = guest_tsc
        self._tsc_hz = tsc_hz
        self.tmict = 0
        self.tdcr = 0
        self.divisor = divisor_of(0)
        self.last_update = 0  # system time the current count started at; 0 = stopped
        self.deadline: int | None = None  # system time of the next expiry
        self.period = 0  # ns; 0 unless a periodic count is running
        self.tdt_msr = 0

    # -- registers ------------------------------------------------------------

    def read_tmict(self, lvtt: int) -> int:
        return self.tmict if timer_mode(lvtt) in (MODE_ONESHOT, MODE_PERIODIC) else 0

    def current_count(self, lvtt: int) -> int:
        """TMCCT: counts left in the current period (vlapic_get_tmcct)."""
        mode = timer_mode(lvtt)
        if mode not in (MODE_ONESHOT, MODE_PERIODIC) or not self.tmict or not self.last_update:
            return 0
        passed = max(0, self._clock() - self.last_update) // (APIC_BUS_CYCLE_NS * self.divisor)
        if mode == MODE_PERIODIC:
            passed %= self.tmict
        return self.tmict - passed if passed < self.tmict else 0

    def write_tmict(self, value: int, lvtt: int) -> None:
        if timer_mode(lvtt) not in (MODE_ONESHOT, MODE_PERIODIC):
            return  # ignored in TSC-deadline (and the reserved) mode
        self.tmict = value & _M32
        self.update(lvtt, lvtt, tmict_updated=True, old_divisor=self.divisor)

    def write_tdcr(self, value: int, lvtt: int) -> None:
        old = self.divisor
        self.tdcr = value & TDCR_MASK
        self.divisor = divisor_of(self.tdcr)
        self.update(lvtt, lvtt, tmict_updated=False, old_divisor=old)

    def write_lvtt(self, old_lvtt: int, new_lvtt: int) -> None:
        """Before the new LVT timer value is stored (vlapic_reg_write, APIC_LVTT)."""
        if (timer_mode(old_lvtt) == MODE_TSC_DEADLINE) != (
                timer_mode(new_lvtt) == MODE_TSC_DEADLINE):
            self.tmict = 0
            self.tdt_msr = 0
        self.update(old_lvtt, new_lvtt, tmict_updated=False, old_divisor=self.divisor)

    def update(self, old_lvtt: int, new_lvtt: int, tmict_updated: bool,
               old_divisor: int) -> None:
        """Re-arm after a change of TMICT, TDCR or LVTT (vlapic_update_timer)."""
        now = self._clock()
        period = self.tmict * APIC_BUS_CYCLE_NS * old_divisor
        delta = 0
        if tmict_updated:
            delta = period
        elif period and self.last_update:
            passed = max(0, now - self.last_update)
            if timer_mode(old_lvtt) == MODE_PERIODIC:
                passed %= period
            if passed < period:
                delta = period - passed
        mode = timer_mode(new_lvtt)
        if delta and mode in (MODE_ONESHOT, MODE_PERIODIC):
            if self.divisor != old_divisor:
                period = self.tmict * APIC_BUS_CYCLE_NS * self.divisor
                delta = delta * self.divisor // old_divisor
            self._arm(now + delta, max(period, MIN_PERIOD_NS) if mode == MODE_PERIODIC else 0)
            self.last_update = now - (0 if tmict_updated else period - delta)
        else:
            self.stop()
            self.last_update = 0

    # -- IA32_TSC_DEADLINE -------------------------------------------------------

    def read_deadline(self, lvtt: int) -> int:
        return self.tdt_msr if timer_mode(lvtt) == MODE_TSC_DEADLINE else 0

    def write_deadline(self, value: int, lvtt: int) -> None:
        """vlapic_tdt_msr_set (the caller ignores writes while the APIC is disabled)."""
        if timer_mode(lvtt) != MODE_TSC_DEADLINE:
            return
        value &= _M64
        now = self._clock()
        guest_tsc = self._guest_tsc()
        hz = self._tsc_hz()
        if value > guest_tsc and hz > 0:
            self.tdt_msr = value
            self._arm(now + self._tsc_to_ns(value - guest_tsc, hz), 0)
            self.last_update = now
        else:
            self.tdt_msr = 0
            if value:
                self._arm(now, 0)  # already passed: fire at once
            else:
                self.stop()

    # -- expiry ------------------------------------------------------------------

    def expired(self, lvtt: int) -> bool:
        """Called from the timer callback: True if an expiry is due now (and re-arms)."""
        now = self._clock()
        deadline = self.deadline
        if deadline is None or now < deadline:
            return False  # cancelled or re-armed after the service popped it
        if timer_mode(lvtt) == MODE_TSC_DEADLINE and self.tdt_msr:
            left = self.tdt_msr - self._guest_tsc()
            hz = self._tsc_hz()
            if left > 0 and hz > 0:  # the frequency estimate ran ahead of the TSC
                self._arm(now + self._tsc_to_ns(left, hz), 0)
                return False
        if self.period:
            missed = (now - deadline) // self.period
            self.last_update = deadline + missed * self.period
            self._arm(self.last_update + self.period, self.period)
        else:
            self.deadline = None
            if timer_mode(lvtt) == MODE_TSC_DEADLINE:
                self.tdt_msr = 0
        return True

    @staticmethod
    def _tsc_to_ns(ticks: int, hz: int) -> int:
        """Rounded up: the interrupt must never come before the guest's TSC gets there."""
        return -(-ticks * 1_000_000_000 // hz)

    def _arm(self, deadline: int, period: int) -> None:
        self.deadline = deadline
        self.period = period
        self._timer.arm(deadline)

    def stop(self) -> None:
        self.deadline = None
        self.period = 0
        self._timer.cancel()

    def reset(self) -> None:
        """vlapic_do_init: counts and divisor to their INIT values, timer stopped."""
        self.stop()
        self.tmict = 0
        self.tdcr = 0
        self.divisor = divisor_of(0)
        self.last_update = 0
