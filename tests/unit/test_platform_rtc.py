"""The RTC/CMOS (hv/platform/rtc.py) on a fake clock."""

from __future__ import annotations

from lapic_fakes import FakeClock

from pyxen.hv.platform import rtc as rt
from pyxen.hv.timers import TimerService

MIB = 1 << 20
# 2023-11-14 22:13:20 UTC, a Tuesday, 0.5 s into the second.
WALL = 1_700_000_000 * rt.NS + rt.NS // 2


class RtcRig:
    def __init__(self, below: int = 512 * MIB, above: int = 0, vcpus: int = 4) -> None:
        self.clock = FakeClock()
        self.timers = TimerService(self.clock, start_thread=False)
        self.levels: list[int] = []
        self.rtc = rt.Rtc(self.clock, WALL, self.timers.timer, self.levels.append,
                          vcpus=vcpus, ram_below_4g=below, ram_above_4g=above)

    def advance(self, ns: int) -> int:
        self.clock.now += ns
        return self.timers.run_due(self.clock.now)

    def read(self, index: int) -> int:
        self.rtc.write_index(index)
        return self.rtc.read_data()

    def write(self, index: int, value: int) -> None:
        self.rtc.write_index(index)
        self.rtc.write_data(value)


def test_clock_registers_in_bcd_24h() -> None:
    r = RtcRig()
    values = [r.read(i) for i in (0, 2, 4, 6, 7, 8, 9, 0x32)]
    assert values == [0x20, 0x13, 0x22, 0x03, 0x14, 0x11, 0x23, 0x20]
    r.advance(rt.NS // 2)
    assert r.read(0) == 0x21  # the second ticked over


def test_binary_and_12_hour_modes() -> None:
    r = RtcRig()
    r.write(rt.REG_B, rt.B_DM_BINARY)  # binary, 12-hour
    assert r.read(rt.HOURS) == 0x80 | 10  # 22:xx = 10 PM
    assert r.read(rt.MINUTES) == 13 and r.read(rt.YEAR) == 23
    r.write(rt.REG_B, 0)  # BCD, 12-hour
    assert r.read(rt.HOURS) == 0x80 | 0x10


def test_set_bit_freezes_and_then_moves_the_guest_clock() -> None:
    r = RtcRig()
    r.write(rt.REG_B, rt.B_SET | rt.B_24H)
    r.advance(5 * rt.NS)
    assert r.read(rt.SECONDS) == 0x20  # frozen while SET
    for reg, value in ((rt.SECONDS, 0x00), (rt.MINUTES, 0x30), (rt.HOURS, 0x08),
                       (rt.DAY, 0x01), (rt.MONTH, 0x02), (rt.YEAR, 0x24), (0x32, 0x20)):
        r.write(reg, value)
    r.write(rt.REG_B, rt.B_24H)
    assert r.rtc.guest_ns() == 1_706_776_200 * rt.NS  # 2024-02-01 08:30:00 UTC
    r.advance(61 * rt.NS)
    assert (r.read(rt.HOURS), r.read(rt.MINUTES), r.read(rt.SECONDS)) == (0x08, 0x31, 0x01)
    assert r.read(rt.WEEKDAY) == 5  # a Thursday (Sunday = 1)


def test_garbage_dates_do_not_raise() -> None:
    r = RtcRig()
    r.write(rt.REG_B, rt.B_SET)
    for reg in (0, 2, 4, 6, 7, 8, 9, 0x32):
        r.write(reg, 0xFF)
    r.write(rt.REG_B, 0)
    for reg in (0, 2, 4, 6, 7, 8, 9, 0x32):
        assert 0 <= r.read(reg) <= 0xFF


def test_uip_is_set_only_just_before_the_update() -> None:
    r = RtcRig()
    assert not r.read(rt.REG_A) & rt.A_UIP  # 0.5 s into the second
    r.advance(rt.NS // 2 - rt.UIP_NS)
    assert r.read(rt.REG_A) & rt.A_UIP
    assert r.read(rt.REG_A) & 0x7F == 0x26
    r.advance(rt.UIP_NS)
    assert not r.read(rt.REG_A) & rt.A_UIP


def test_periodic_interrupt_rate_and_acknowledge() -> None:
    r = RtcRig()
    r.write(rt.REG_A, 0x26)  # rate 6: 976.5625 us
    r.write(rt.REG_B, rt.B_24H | rt.B_PIE)
    assert r.advance(976_561) == 0
    assert r.advance(2) == 1
    assert r.levels == [1]
    assert r.advance(10 * rt.NS) == 0  # not acknowledged: no more wake-ups
    assert r.read(rt.REG_C) == rt.C_IRQF | rt.C_PF | rt.C_UF  # UF: seconds went by (polled)
    assert r.levels == [1, 0]
    assert r.read(rt.REG_C) == 0
    assert r.advance(976_563) == 1 and r.levels == [1, 0, 1]


def test_rate_zero_is_off_and_slow_rates_alias() -> None:
    assert rt.period_ns(0) == 0
    assert rt.period_ns(1) == rt.period_ns(8) == 3_906_250
    assert rt.period_ns(3) == 122_070
    assert rt.period_ns(15) == 500_000_000
    r = RtcRig()
    r.write(rt.REG_A, 0x20)
    r.write(rt.REG_B, rt.B_24H | rt.B_PIE)
    assert r.timers.next_deadline() is None


def test_update_ended_interrupt_once_a_second() -> None:
    r = RtcRig()
    r.write(rt.REG_B, rt.B_24H | rt.B_UIE)
    assert r.advance(rt.NS // 2 - 1) == 0
    assert r.advance(1) == 1 and r.levels == [1]
    assert r.read(rt.REG_C) & ~rt.C_PF == rt.C_IRQF | rt.C_UF  # PF runs at rate 6 anyway
    assert r.advance(rt.NS) == 1 and r.levels == [1, 0, 1]


def test_alarm_interrupt() -> None:
    r = RtcRig()
    r.write(rt.SECONDS_ALARM, 0x23)
    r.write(rt.MINUTES_ALARM, 0xC0)  # don't care
    r.write(rt.HOURS_ALARM, 0xFF)
    r.write(rt.REG_B, rt.B_24H | rt.B_AIE)
    r.advance(rt.NS // 2)  # :21
    r.advance(rt.NS)  # :22
    assert r.levels == []
    r.advance(rt.NS)  # :23
    assert r.levels == [1]
    assert r.read(rt.REG_C) & (rt.C_IRQF | rt.C_AF) == rt.C_IRQF | rt.C_AF


def test_polled_flags_without_interrupts() -> None:
    r = RtcRig()
    r.read(rt.REG_C)
    r.advance(rt.NS)
    assert r.read(rt.REG_C) & rt.C_UF and not r.levels
    assert r.timers.next_deadline() is None  # nothing armed for it


def test_memory_size_bytes() -> None:
    r = RtcRig(below=3 * 1024 * MIB, above=2 * 1024 * MIB, vcpus=4)
    assert r.read(0x15) | r.read(0x16) << 8 == 640
    assert r.read(0x17) | r.read(0x18) << 8 == 0xFFFF  # capped
    assert r.read(0x30) | r.read(0x31) << 8 == 0xFFFF
    assert r.read(0x34) | r.read(0x35) << 8 == (3 * 1024 - 16) * 16
    assert r.read(0x5B) | r.read(0x5C) << 8 | r.read(0x5D) << 16 == 2 * 1024 * 16
    assert r.read(0x5F) == 3
    small = RtcRig(below=32 * MIB)
    assert small.read(0x17) | small.read(0x18) << 8 == 31 * 1024


def test_registers_c_d_read_only_and_cmos_storage() -> None:
    r = RtcRig()
    r.write(rt.REG_D, 0)
    assert r.read(rt.REG_D) == rt.D_VRT
    r.write(0x0F, 0x0A)  # shutdown status byte
    r.rtc.write_index(0x8F)  # NMI-mask bit is ignored
    assert r.rtc.read_data() == 0x0A
    for index in range(128):
        for value in (0, 0xFF, 0x5A):
            r.write(index, value)
            r.read(index)
    r.rtc.close()
    assert r.timers.next_deadline() is None
