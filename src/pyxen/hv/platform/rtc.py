"""The MC146818 RTC and CMOS RAM at ports 0x70 (index) / 0x71 (data).

Design: 128 bytes of CMOS.  The clock (registers 0-9 and the century byte
0x32) is not stored while it runs: the guest's time is ``epoch_ns`` at
hypervisor time ``ref_ns`` plus the time since, and the registers are
encoded from it on each read, in BCD or binary (register B bit 2) and 12
or 24 hour (bit 1; 12-hour PM is bit 7 of the hour).  It starts as the
host's wall clock.  With SET (register B bit 7) the clock stops: reads
return the stored registers, writes store; clearing SET makes the stored
date/time the guest's time from that moment (an offset from the host
clock; nothing is written back to the host).  A clock register written
while SET is clear sets the time at once.  Invalid values (bad BCD, month
0) never raise: they decode to some date.

Register A: bits 6-0 writable (divider and rate, stored), UIP (bit 7)
reads 1 during the last 244 us of each guest second while SET is clear.
Register B: all bits; setting SET clears UIE (MC146818).  Register C
(read-only): IRQF 7, PF 6, AF 5, UF 4; reading it returns and clears the
flags and lowers IRQ 8.  Register D: VRT (0x80), read-only.

Interrupts on ISA IRQ 8, a level: raised while IRQF is set (a flag whose
enable bit in B is set), lowered by reading C.  Timers are only armed
when an interrupt can result:
- periodic (PIE and rate != 0): every 2^(rate-1) / 32768 s (rates 1 and 2
  behave as 8 and 9), on a grid from when PIE/the rate last changed; the
  fastest, rate 3, is 122 us.  While an interrupt waits for the guest to
  read C no further periodic tick is armed (one missed-tick policy for
  every timer here: no backlog); reading C re-arms at the next boundary.
  Rate 0 is off.
- update-ended and alarm (UIE or AIE): once per guest second, at the
  second boundary; the alarm compares seconds, minutes and hours in the
  current encoding, a value with bits 7:6 set matching anything.
PF and UF are also set when C is read after a boundary passed with the
interrupt disabled (guests that poll C see them).

Bytes set at construction as a PC BIOS leaves them (hvmloader/SeaBIOS
read some): 0x15/0x16 base memory 640 KiB; 0x17/0x18 and 0x30/0x31 KiB
above 1 MiB (below 4 GiB, capped 0xFFFF); 0x34/0x35 64 KiB units above 16
MiB below 4 GiB (capped 0xFFFF); 0x5B-0x5D 64 KiB units above 4 GiB;
0x5F vCPUs - 1.  Every other byte (0x0E-0x7F except 0x32) is plain
storage (0x0F: the shutdown status byte).  Bit 7 of the index port is
the NMI mask: ignored.  Reading the index port gives 0xFF.

No locking: the ``Platform`` lock is held around every call.
"""

from __future__ import annotations

from collections.abc import Callable

from pyxen.hv.timers import Timer

NS = 1_000_000_000
UIP_NS = 244_000
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
CENTURY = 0x32
A_UIP = 0x80
B_SET, B_PIE, B_AIE, B_UIE, B_DM_BINARY, B_24H = 0x80, 0x40, 0x20, 0x10, 0x04, 0x02
C_IRQF, C_PF, C_AF, C_UF = 0x80, 0x40, 0x20, 0x10
D_VRT = 0x80
SECONDS, SECONDS_ALARM, MINUTES, MINUTES_ALARM, HOURS, HOURS_ALARM = 0, 1, 2, 3, 4, 5
WEEKDAY, DAY, MONTH, YEAR = 6, 7, 8, 9
CLOCK_REGS = frozenset({SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR, CENTURY})

TimerFactory = Callable[[Callable[[], None]], Timer]


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any integers)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (m <= 2), m, d


def period_ns(rate: int) -> int:
    """The periodic interrupt's period for register A's rate (0: off)."""
    if rate == 0:
        return 0
    if rate <= 2:
        rate += 7
    return (1 << (rate - 1)) * NS // 32768


class Rtc:
    def __init__(self, clock: Callable[[], int], wall_ns: int, timers: TimerFactory,
                 irq8: Callable[[int], None], *, vcpus: int, ram_below_4g: int,
                 ram_above_4g: int) -> None:
        self._clock = clock
        self._irq8 = irq8
        self.cmos = bytearray(128)
        self.index = 0
        self.ref_ns = clock()
        self.epoch_ns = wall_ns
        self.cmos[REG_A] = 0x26
        self.cmos[REG_B] = B_24H
        self.cmos[REG_D] = D_VRT
        self.flags = 0  # register C's PF/AF/UF
        self.irq_level = 0
        self.periodic_ref = self.ref_ns  # the periodic grid's origin
        self.last_c_read = self.ref_ns
        self._periodic = timers(self._periodic_fired)
        self._second = timers(self._second_fired)
        self._fill_memory(vcpus, ram_below_4g, ram_above_4g)

    def _fill_memory(self, vcpus: int, below: int, above: int) -> None:
        c = self.cmos
        c[0x15], c[0x16] = 640 & 0xFF, 640 >> 8
        ext_kib = min(max(0, below - (1 << 20)) >> 10, 0xFFFF)
        c[0x17] = c[0x30] = ext_kib & 0xFF
        c[0x18] = c[0x31] = ext_kib >> 8
        ext16 = min(max(0, below - (16 << 20)) >> 16, 0xFFFF)
        c[0x34], c[0x35] = ext16 & 0xFF, ext16 >> 8
        high = min(max(0, above) >> 16, 0xFF_FFFF)
        c[0x5B], c[0x5C], c[0x5D] = high & 0xFF, high >> 8 & 0xFF, high >> 16
        c[0x5F] = max(0, vcpus - 1) & 0xFF

    # -- the clock ------------------------------------------------------------------------

    @property
    def set_mode(self) -> bool:
        return bool(self.cmos[REG_B] & B_SET)

    def guest_ns(self) -> int:
        return self.epoch_ns + (self._clock() - self.ref_ns)

    def _encode(self, value: int) -> int:
        if self.cmos[REG_B] & B_DM_BINARY:
            return value & 0xFF
        return ((value // 10 % 10) << 4 | value % 10) & 0xFF

    def _decode(self, value: int) -> int:
        if self.cmos[REG_B] & B_DM_BINARY:
            return value
        return (value >> 4) * 10 + (value & 0xF)

    def _encode_hour(self, hour: int) -> int:
        if self.cmos[REG_B] & B_24H:
            return self._encode(hour)
        pm = 0x80 if hour >= 12 else 0
        return self._encode(hour % 12 or 12) | pm

    def _decode_hour(self, value: int) -> int:
        if self.cmos[REG_B] & B_24H:
            return self._decode(value)
        hour = self._decode(value & 0x7F) % 12
        return hour + 12 if value & 0x80 else hour

    def _clock_bytes(self) -> dict[int, int]:
        seconds = self.guest_ns() // NS
        days, rest = divmod(seconds, 86400)
        year, month, day = civil_from_days(days)
        return {
            SECONDS: self._encode(rest % 60),
            MINUTES: self._encode(rest // 60 % 60),
            HOURS: self._encode_hour(rest // 3600),
            WEEKDAY: self._encode((days + 4) % 7 + 1),  # 1970-01-01 was a Thursday; Sunday = 1
            DAY: self._encode(day),
            MONTH: self._encode(month),
            YEAR: self._encode(year % 100),
            CENTURY: self._encode(year // 100),
        }

    def _freeze(self) -> None:
        """Copy the running clock into the stored registers."""
        for reg, value in self._clock_bytes().items():
            self.cmos[reg] = value

    def _set_from_registers(self) -> None:
        c = self.cmos
        year = self._decode(c[CENTURY]) * 100 + self._decode(c[YEAR])
        month = min(max(self._decode(c[MONTH]), 1), 12)
        days = days_from_civil(year, month, self._decode(c[DAY]))
        seconds = (days * 86400 + self._decode_hour(c[HOURS]) * 3600
                   + self._decode(c[MINUTES]) * 60 + self._decode(c[SECONDS]))
        self.epoch_ns = seconds * NS
        self.ref_ns = self._clock()
        self._arm_second()

    # -- interrupts -----------------------------------------------------------------------

    def _update_irq(self) -> None:
        enabled = self.cmos[REG_B] & (B_PIE | B_AIE | B_UIE)
        level = 1 if self.flags & enabled else 0  # the flag and enable bits line up
        if level != self.irq_level:
            self.irq_level = level
            self._irq8(level)

    def _arm_periodic(self) -> None:
        period = period_ns(self.cmos[REG_A] & 0x0F)
        if not (period and self.cmos[REG_B] & B_PIE) or self.irq_level:
            self._periodic.cancel()
            return
        now = self._clock()
        passed = max(0, now - self.periodic_ref)
        self._periodic.arm(self.periodic_ref + (passed // period + 1) * period)

    def _periodic_fired(self) -> None:
        self.flags |= C_PF
        self._update_irq()
        self._arm_periodic()

    def _arm_second(self) -> None:
        if self.set_mode or not self.cmos[REG_B] & (B_UIE | B_AIE):
            self._second.cancel()
            return
        guest = self.guest_ns()
        self._second.arm(self._clock() + NS - guest % NS)

    def _second_fired(self) -> None:
        if self.set_mode:
            return
        if self.guest_ns() % NS >= NS - UIP_NS:  # early by a rounding: not yet the boundary
            self._arm_second()
            return
        self.flags |= C_UF
        now = self._clock_bytes()
        c = self.cmos
        if all(c[alarm] & 0xC0 == 0xC0 or c[alarm] == now[reg]
               for alarm, reg in ((SECONDS_ALARM, SECONDS), (MINUTES_ALARM, MINUTES),
                                  (HOURS_ALARM, HOURS))):
            self.flags |= C_AF
        self._update_irq()
        self._arm_second()

    def _read_c(self) -> int:
        now = self._clock()
        period = period_ns(self.cmos[REG_A] & 0x0F)
        if period and (now - self.periodic_ref) // period > (
                self.last_c_read - self.periodic_ref) // period:
            self.flags |= C_PF
        if not self.set_mode and (self.guest_ns() // NS) > (
                self.guest_ns() - (now - self.last_c_read)) // NS:
            self.flags |= C_UF
        self.last_c_read = now
        enabled = self.cmos[REG_B] & (B_PIE | B_AIE | B_UIE)
        value = self.flags | (C_IRQF if self.flags & enabled else 0)
        self.flags = 0
        self._update_irq()
        self._arm_periodic()
        return value

    # -- ports ----------------------------------------------------------------------------

    def write_index(self, value: int) -> None:
        self.index = value & 0x7F

    def read_data(self) -> int:
        index = self.index
        if index in CLOCK_REGS and not self.set_mode:
            return self._clock_bytes()[index]
        if index == REG_A:
            uip = not self.set_mode and self.guest_ns() % NS >= NS - UIP_NS
            return (self.cmos[REG_A] & 0x7F) | (A_UIP if uip else 0)
        if index == REG_C:
            return self._read_c()
        return self.cmos[index]

    def write_data(self, value: int) -> None:
        index = self.index
        value &= 0xFF
        if index in CLOCK_REGS:
            if not self.set_mode:
                self._freeze()
                self.cmos[index] = value
                self._set_from_registers()
            else:
                self.cmos[index] = value
        elif index == REG_A:
            old = self.cmos[REG_A]
            self.cmos[REG_A] = value & 0x7F
            if (old ^ value) & 0x0F:
                self.periodic_ref = self._clock()
                self._arm_periodic()
        elif index == REG_B:
            self._write_b(value)
        elif index in (REG_C, REG_D):
            pass  # read-only
        else:
            self.cmos[index] = value

    def _write_b(self, value: int) -> None:
        old = self.cmos[REG_B]
        if value & B_SET:
            value &= ~B_UIE
            if not old & B_SET:
                self._freeze()
        self.cmos[REG_B] = value
        if old & B_SET and not value & B_SET:
            self._set_from_registers()
        if (old ^ value) & B_PIE and value & B_PIE:
            self.periodic_ref = self._clock()
        self._update_irq()
        self._arm_periodic()
        self._arm_second()

    def close(self) -> None:
        self._periodic.cancel()
        self._second.cancel()
