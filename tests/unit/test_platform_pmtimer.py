"""ACPI PM1a and the PM timer (hv/platform/pmtimer.py) and port 0x92 (misc.py)."""

from __future__ import annotations

from lapic_fakes import FakeClock

from pyxen.hv.platform import pmtimer as pm
from pyxen.hv.platform.misc import Port92
from pyxen.hv.timers import TimerService


class PmRig:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.timers = TimerService(self.clock, start_thread=False)
        self.sci: list[int] = []
        self.poweroffs = 0
        self.logs: list[str] = []
        self.pm = pm.PmTimer(self.clock, self.timers.timer, self.sci.append, self._off,
                             lambda _key, msg: self.logs.append(msg))

    def _off(self) -> None:
        self.poweroffs += 1

    def advance(self, ns: int) -> int:
        self.clock.now += ns
        return self.timers.run_due(self.clock.now)


def test_timer_counts_at_3_579545_mhz() -> None:
    r = PmRig()
    assert r.pm.read(pm.TMR_OFFSET, 4) == 0
    r.advance(pm.NS)
    assert r.pm.read(pm.TMR_OFFSET, 4) == pm.PM_HZ
    r.advance(1_000)
    assert r.pm.read(pm.TMR_OFFSET, 4) == pm.PM_HZ + 3  # 3.58 ticks per us


def test_timer_is_32_bits_and_narrow_reads_are_ones() -> None:
    r = PmRig()
    r.advance((1 << 32) * pm.NS // pm.PM_HZ + pm.NS)
    assert r.pm.read(pm.TMR_OFFSET, 4) < pm.PM_HZ + 2  # wrapped
    assert r.pm.read(pm.TMR_OFFSET, 2) == 0xFFFF
    assert r.pm.read(pm.TMR_OFFSET + 1, 1) == 0xFF
    r.pm.write(pm.TMR_OFFSET, 4, 0)  # read-only
    assert r.pm.read(pm.TMR_OFFSET, 4) != 0


def test_cnt_reads_sci_en_and_s5_powers_off() -> None:
    r = PmRig()
    assert r.pm.read(pm.CNT_OFFSET, 2) == pm.SCI_EN
    r.pm.write(pm.CNT_OFFSET, 2, 0)
    assert r.pm.read(pm.CNT_OFFSET, 2) & pm.SCI_EN
    r.pm.write(pm.CNT_OFFSET, 2, 5 << pm.SLP_TYP_SHIFT)  # SLP_TYP alone does nothing
    assert r.poweroffs == 0 and r.pm.read(pm.CNT_OFFSET, 2) >> pm.SLP_TYP_SHIFT & 7 == 5
    r.pm.write(pm.CNT_OFFSET, 2, pm.SLP_EN | pm.SLP_TYP_S3 << pm.SLP_TYP_SHIFT)
    assert r.poweroffs == 0 and r.logs  # S3: not supported
    r.pm.write(pm.CNT_OFFSET, 2, pm.SLP_EN | pm.SLP_TYP_S5 << pm.SLP_TYP_SHIFT | pm.SCI_EN)
    assert r.poweroffs == 1
    assert not r.pm.read(pm.CNT_OFFSET, 2) & pm.SLP_EN  # write-only


def test_cnt_high_byte_write_uses_the_whole_register() -> None:
    r = PmRig()
    r.pm.write(pm.CNT_OFFSET + 1, 1, (pm.SLP_EN | pm.SLP_TYP_S5 << pm.SLP_TYP_SHIFT) >> 8)
    assert r.poweroffs == 1


def test_status_enable_and_sci_on_timer_overflow() -> None:
    r = PmRig()
    r.pm.write(2, 2, pm.TMR_STS)  # TMR_EN
    assert r.pm.read(0, 4) == pm.TMR_STS << 16
    overflow_ns = -(-(1 << 31) * pm.NS // pm.PM_HZ)
    assert r.advance(overflow_ns - 1) == 0
    assert r.advance(1) == 1
    assert r.pm.read(0, 2) & pm.TMR_STS and r.sci == [1]
    r.pm.write(0, 2, pm.TMR_STS)  # write 1 to clear
    assert r.pm.read(0, 2) == 0 and r.sci == [1, 0]
    r.pm.write(0, 4, 0)  # TMR_EN off: no timer armed
    assert r.timers.next_deadline() is None


def test_overflow_without_enable_is_seen_when_polled() -> None:
    r = PmRig()
    r.advance(-(-(1 << 31) * pm.NS // pm.PM_HZ))
    assert r.pm.read(0, 1) == pm.TMR_STS and r.sci == []


def test_block_locations() -> None:
    assert pm.block_base(0) == 0x1F40 and pm.block_base(1) == 0xB000
    assert pm.block_base(77) == 0x1F40


def test_port92_a20_and_fast_reset() -> None:
    resets: list[int] = []
    port = Port92(lambda: resets.append(1))
    assert port.read() == 0x02
    port.write(0x00)
    assert port.read() == 0x00 and not resets
    port.write(0x03)
    assert resets == [1] and port.read() == 0x02  # bit 0 reads 0
