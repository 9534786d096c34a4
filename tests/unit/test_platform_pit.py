"""The 8254 PIT (hv/platform/pit.py) on a fake clock."""

from __future__ import annotations

from lapic_fakes import FakeClock

from pyxen.hv.platform import pit as pt
from pyxen.hv.timers import TimerService


class PitRig:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.timers = TimerService(self.clock, start_thread=False)
        self.levels: list[int] = []
        self.masked = False
        self.pit = pt.Pit(self.clock, self.timers.timer, self.levels.append,
                          lambda: self.masked)

    def advance(self, ns: int) -> int:
        self.clock.now += ns
        return self.timers.run_due(self.clock.now)

    def rising(self) -> int:
        """Rising edges of IRQ 0 so far."""
        return sum(1 for a, b in zip(self.levels, self.levels[1:], strict=False)
                   if a == 0 and b == 1)

    def program(self, channel: int, mode: int, count: int, access: int = 3) -> None:
        self.pit.write_port(0x43, channel << 6 | access << 4 | mode << 1)
        if access in (1, 3):
            self.pit.write_port(0x40 + channel, count & 0xFF)
        if access in (2, 3):
            self.pit.write_port(0x40 + channel, count >> 8 & 0xFF)


def ns_for(counts: int) -> int:
    return -(-counts * pt.NS // pt.PIT_HZ)


def test_mode2_ticks_every_period_without_drift() -> None:
    r = PitRig()
    r.program(0, 2, 11932)  # ~10 ms
    load = r.clock.now
    for k in range(1, 101):
        deadline = load + ns_for(k * 11932)
        assert r.advance(deadline - 1 - r.clock.now) == 0, k
        assert r.advance(1) == 1, k
    assert r.pit.ticks == 100 and r.rising() == 100
    # 100 periods of 11932 counts end exactly on the grid (no accumulated rounding).
    assert r.clock.now == load + ns_for(100 * 11932)


def test_counter_reads_down_in_mode2() -> None:
    r = PitRig()
    r.program(0, 2, 1000)
    r.advance(ns_for(250))
    r.pit.write_port(0x43, 0x00)  # latch channel 0
    low = r.pit.read_port(0x40)
    high = r.pit.read_port(0x40)
    assert (high << 8 | low) == 750
    r.advance(ns_for(100))  # the latched value was consumed: live count now
    assert r.pit.read_port(0x40) | r.pit.read_port(0x40) << 8 == 650


def test_mode3_counts_twice_as_fast_and_square_wave_out() -> None:
    r = PitRig()
    r.program(2, 3, 1000)
    r.pit.write_61(1)  # gate on
    r.advance(ns_for(100))
    assert r.pit.current_count(r.pit.channels[2]) == 800
    assert r.pit.read_61() & 0x20  # first half: OUT high
    r.advance(ns_for(500))
    assert not r.pit.read_61() & 0x20


def test_mode0_one_shot_raises_and_holds_irq0() -> None:
    r = PitRig()
    r.program(0, 0, 5000)
    assert r.advance(ns_for(5000) - 1) == 0
    assert r.advance(1) == 1
    assert r.levels[-1] == 1 and r.rising() == 1
    assert r.advance(10 * pt.NS) == 0  # fires once
    r.program(0, 0, 5000)  # reprogramming lowers the line
    assert r.levels[-1] == 0


def test_channel2_mode0_out_for_calibration_loops() -> None:
    r = PitRig()
    r.pit.write_61(1)
    r.program(2, 0, 0xFFFF)
    assert not r.pit.read_61() & 0x20
    r.advance(ns_for(0xFFFF))
    assert r.pit.read_61() & 0x20
    assert r.pit.read_61() & 1


def test_reload_zero_is_65536() -> None:
    r = PitRig()
    r.program(0, 2, 0)
    assert r.pit.channels[0].count == 0x10000
    assert r.advance(ns_for(0x10000)) == 1


def test_tiny_periods_are_floored() -> None:
    r = PitRig()
    r.program(0, 2, 1)  # 838 ns requested
    fired = r.advance(pt.NS // 100)  # 10 ms with a fake clock: missed ticks collapse
    assert fired == 1
    ticks_before = r.pit.ticks
    for _ in range(1000):
        r.advance(10_000)  # 10 us steps for 10 ms
    assert r.pit.ticks - ticks_before <= 10_000_000 // pt.MIN_PERIOD_NS + 1
    assert r.pit.ticks - ticks_before >= 10_000_000 // pt.MIN_PERIOD_NS - 1


def test_missed_ticks_are_not_replayed() -> None:
    r = PitRig()
    r.program(0, 2, 11932)
    assert r.advance(50 * ns_for(11932)) == 1  # ran 50 periods late: one tick
    assert r.pit.ticks == 1
    assert r.advance(ns_for(11932)) == 1  # then back on the grid
    assert r.pit.ticks == 2


def test_masked_irq0_parks_the_timer_until_unmasked() -> None:
    r = PitRig()
    r.program(0, 2, 11932)
    r.masked = True
    assert r.advance(ns_for(11932)) == 1
    assert r.pit.parked and r.pit.ticks == 0
    assert r.advance(pt.NS) == 0  # no wake-ups while masked
    r.masked = False
    r.pit.unmasked()
    assert r.advance(ns_for(11932)) == 1 and r.pit.ticks == 1


def test_lsb_msb_access_modes_and_read_back_status() -> None:
    r = PitRig()
    r.program(1, 2, 0x34, access=1)
    assert r.pit.channels[1].count == 0x34
    r.program(1, 2, 0x1200, access=2)
    assert r.pit.channels[1].count == 0x1200
    r.pit.write_port(0x43, 0xC0 | 0x20 | 0x04)  # read-back: status only, channel 1
    status = r.pit.read_port(0x41)
    assert status & 0x3F == (2 << 4) | (2 << 1)
    assert r.pit.read_port(0x41) == 0x12  # then the live count, MSB only (no time passed)
    r.advance(ns_for(0x100))
    r.pit.write_port(0x43, 0xC0 | 0x10 | 0x04)  # read-back: count only
    assert r.pit.read_port(0x41) == 0x11


def test_bcd_counting() -> None:
    r = PitRig()
    r.pit.write_port(0x43, 2 << 6 | 3 << 4 | 2 << 1 | 1)  # channel 2, mode 2, BCD
    r.pit.write_port(0x42, 0x00)
    r.pit.write_port(0x42, 0x10)  # BCD 1000
    assert r.pit.channels[2].count == 1000
    r.pit.write_61(1)
    r.advance(ns_for(1))
    r.advance(ns_for(1))
    r.pit.write_port(0x43, 0x80)  # latch channel 2
    assert r.pit.read_port(0x42) == 0x98 and r.pit.read_port(0x42) == 0x09  # 998


def test_port61_gate_speaker_and_refresh_bits() -> None:
    r = PitRig()
    r.pit.write_61(0xFF)
    assert r.pit.read_61() & 0x03 == 0x03
    first = r.pit.read_61() & 0x10
    r.advance(pt.REFRESH_NS)
    assert r.pit.read_61() & 0x10 != first


def test_every_byte_to_every_port_is_harmless() -> None:
    r = PitRig()
    for value in range(256):
        for port in (0x43, 0x40, 0x41, 0x42):
            r.pit.write_port(port, value)
            r.pit.read_port(port)
        r.pit.write_61(value)
        r.pit.read_61()
        r.advance(1000)
    r.pit.close()
    assert r.timers.next_deadline() is None
