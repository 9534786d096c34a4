"""The local APIC timer (hv/lapic_timer.py) through the APIC, on a fake clock."""

from __future__ import annotations

import pytest
from lapic_fakes import TSC_HZ, Rig, enable, read, take, write

from pyxen.hv import lapic as la
from pyxen.hv import lapic_timer as lt
from pyxen.hv.timers import COMPACT_MIN

ONESHOT, PERIODIC, DEADLINE = 0, 1 << 17, 2 << 17


def armed(rig: Rig, mode: int, vector: int, tdcr: int, count: int) -> la.Lapic:
    a = rig.apics[0]
    enable(a)
    write(a, la.LVTT, mode | vector)
    write(a, la.TDCR, tdcr)
    write(a, la.TMICT, count)
    return a


@pytest.mark.parametrize("tdcr,divisor", [(0x0, 2), (0x1, 4), (0x2, 8), (0x3, 16), (0x8, 32),
                                          (0x9, 64), (0xA, 128), (0xB, 1), (0xF4, 2)])
def test_divide_values(tdcr: int, divisor: int) -> None:
    assert lt.divisor_of(tdcr & lt.TDCR_MASK) == divisor


def test_one_shot() -> None:
    rig = Rig()
    a = armed(rig, ONESHOT, 0x80, 0xB, 1000)  # 1000 counts of 10 ns: 10 us
    assert read(a, la.TMICT) == 1000 and read(a, la.TMCCT) == 1000
    rig.advance(2_500)
    assert read(a, la.TMCCT) == 750
    assert rig.advance(7_499) == 0 and a.irr == 0  # never early
    assert rig.advance(1) == 1
    assert take(a) == 0x80
    assert read(a, la.TMCCT) == 0
    assert rig.advance(1_000_000) == 0 and a.irr == 0  # fires once


def test_reprogramming_far_ahead_does_not_grow_the_timer_service() -> None:
    """Each TMICT write re-arms the timer ~90 minutes ahead (divide by 128): a guest
    doing it in a loop must not make the shared timer heap grow with every write."""
    rig = Rig()
    a = armed(rig, ONESHOT, 0x80, 0xA, 0xFFFF_FFFF)
    for _ in range(50_000):
        write(a, la.TMICT, 0xFFFF_FFFF)
    assert len(rig.timers._heap) <= 2 * COMPACT_MIN
    assert rig.advance(0xFFFF_FFFF * 10 * 128) == 1
    assert take(a) == 0x80


def test_divider_stretches_the_count() -> None:
    rig = Rig()
    a = armed(rig, ONESHOT, 0x80, 0x3, 100)  # divide by 16: 100 * 160 ns
    rig.advance(15_999)
    assert a.irr == 0 and read(a, la.TMCCT) == 1
    rig.advance(1)
    assert take(a) == 0x80


def test_divider_change_keeps_the_time_counted() -> None:
    rig = Rig()
    a = armed(rig, ONESHOT, 0x80, 0xB, 1000)  # 10 us at divide 1
    rig.advance(4_000)
    write(a, la.TDCR, 0x0)  # divide 2: the remaining 6 us become 12 us
    rig.advance(11_999)
    assert a.irr == 0
    rig.advance(1)
    assert take(a) == 0x80


def test_periodic() -> None:
    rig = Rig()
    a = armed(rig, PERIODIC, 0x81, 0xB, 100_000)  # 1 ms
    for tick in range(1, 6):
        rig.advance(999_999)
        assert a.irr == 0, tick
        rig.advance(1)
        assert take(a) == 0x81
        write(a, la.EOI, 0)
    rig.advance(250_000)
    assert read(a, la.TMCCT) == 75_000  # counts restart every period
    write(a, la.TMICT, 0)  # stop
    assert read(a, la.TMCCT) == 0
    rig.advance(10_000_000)
    assert a.irr == 0


def test_periodic_missed_ticks_coalesce_on_the_grid() -> None:
    rig = Rig()
    a = armed(rig, PERIODIC, 0x81, 0xB, 100_000)
    rig.advance(3_500_000)  # three periods pass while the timer thread sleeps
    assert take(a) == 0x81
    write(a, la.EOI, 0)
    rig.advance(499_999)  # the next tick stays at 4 ms
    assert a.irr == 0
    rig.advance(1)
    assert take(a) == 0x81


def test_periodic_minimum_period() -> None:
    rig = Rig()
    a = armed(rig, PERIODIC, 0x81, 0xB, 1)  # 10 ns asked for
    assert read(a, la.TMICT) == 1
    fired = rig.advance(1_000_000)
    assert 1 <= fired <= 11  # at most every 100 us (Xen's vpt limit)


def test_masked_timer_counts_but_does_not_interrupt() -> None:
    rig = Rig()
    a = armed(rig, ONESHOT | la.LVT_MASKED, 0x80, 0xB, 1000)
    rig.advance(5_000)
    assert read(a, la.TMCCT) == 500
    rig.advance(5_000)
    assert a.irr == 0 and read(a, la.TMCCT) == 0


def test_lvtt_write_keeps_the_remaining_count() -> None:
    rig = Rig()
    a = armed(rig, ONESHOT | la.LVT_MASKED, 0x80, 0xB, 1000)
    rig.advance(3_000)
    write(a, la.LVTT, ONESHOT | 0x82)  # unmask, new vector
    assert read(a, la.TMCCT) == 700
    rig.advance(7_000)
    assert take(a) == 0x82


def test_switch_to_periodic_mid_count() -> None:
    rig = Rig()
    a = armed(rig, ONESHOT, 0x80, 0xB, 100_000)  # 1 ms
    rig.advance(400_000)
    write(a, la.LVTT, PERIODIC | 0x80)  # the current count goes on, then repeats
    rig.advance(599_999)
    assert a.irr == 0
    rig.advance(1)
    assert take(a) == 0x80
    write(a, la.EOI, 0)
    rig.advance(1_000_000)
    assert take(a) == 0x80


def test_tsc_deadline() -> None:
    rig = Rig()
    a = rig.apics[0]
    enable(a)
    write(a, la.LVTT, DEADLINE | 0x82)
    write(a, la.TMICT, 1234)
    assert read(a, la.TMICT) == 0 and read(a, la.TMCCT) == 0
    deadline = rig.clock.tsc() + 3_000  # 1 us ahead at 3 GHz
    assert a.wrmsr(la.MSR_IA32_TSC_DEADLINE, deadline)
    assert a.rdmsr(la.MSR_IA32_TSC_DEADLINE) == deadline
    rig.advance(999)
    assert a.irr == 0
    rig.advance(1)
    assert take(a) == 0x82
    write(a, la.EOI, 0)
    assert a.rdmsr(la.MSR_IA32_TSC_DEADLINE) == 0
    assert a.wrmsr(la.MSR_IA32_TSC_DEADLINE, 5)  # in the past: at once
    rig.advance(0)
    assert take(a) == 0x82
    assert a.wrmsr(la.MSR_IA32_TSC_DEADLINE, rig.clock.tsc() + 3_000)
    assert a.wrmsr(la.MSR_IA32_TSC_DEADLINE, 0)  # disarm
    rig.advance(1_000_000)
    assert a.irr == 0


def test_tsc_deadline_is_never_early() -> None:
    rig = Rig()
    a = rig.apics[0]
    enable(a)
    write(a, la.LVTT, DEADLINE | 0x82)
    deadline = rig.clock.tsc() + 3_000_000
    # Pretend the frequency estimate says 4 GHz: the timer is armed 250 us early.
    a.timer._tsc_hz = lambda: 4 * TSC_HZ // 3
    a.wrmsr(la.MSR_IA32_TSC_DEADLINE, deadline)
    rig.advance(750_000)
    assert a.irr == 0  # re-armed for the rest
    rig.advance(250_000)
    assert take(a) == 0x82


def test_deadline_msr_ignored_outside_deadline_mode() -> None:
    rig = Rig()
    a = armed(rig, ONESHOT, 0x80, 0xB, 1000)
    assert a.wrmsr(la.MSR_IA32_TSC_DEADLINE, rig.clock.tsc() + 30)
    assert a.rdmsr(la.MSR_IA32_TSC_DEADLINE) == 0
    write(a, la.LVTT, DEADLINE | 0x80)  # switching modes clears TMICT
    assert a.timer.tmict == 0
    rig.advance(1_000_000)
    assert a.irr == 0


def test_init_stops_the_timer() -> None:
    rig = Rig()
    a = armed(rig, PERIODIC, 0x81, 0xB, 1000)
    a.apply_init()
    rig.advance(1_000_000)
    assert a.irr == 0 and read(a, la.TMICT) == 0 and read(a, la.TDCR) == 0



def test_an_expiry_kicks_the_vcpu_under_the_apic_lock() -> None:
    """The timer thread's kick must not outlive close(), which takes the APIC lock:
    the vCPU's KVM state is closed right after it (VcpuRunner.close), and a kick
    arriving then touched it from the timer thread."""
    rig = Rig()
    a = armed(rig, ONESHOT, 0x80, 0xB, 1)
    held: list[bool] = []
    rig.hosts[0].kick = lambda: held.append(a._lock.locked())  # type: ignore[method-assign]
    assert rig.advance(10) == 1
    assert held == [True]
    a.close()
    assert rig.advance(10) == 0 and held == [True]
