"""The 8254 PIT (ports 0x40-0x43) and port 0x61's channel 2 gate/output bits.

Counting: the counters run at 1.193182 MHz from the hypervisor's ns clock.
Nothing counts in the background: a channel remembers the count it was
loaded with and when (``load_ns``); the current count and OUT are computed
from the elapsed ticks when read, per mode (0 interrupt on terminal count,
1 one-shot, 2 rate generator, 3 square wave, 4 software strobe, 5
hardware strobe; 6 and 7 alias 2 and 3).  A reload of 0 means 65536
(10000 in BCD).  Access modes: latch command, LSB, MSB, LSB then MSB, and
the read-back command (count and/or status latches, several channels at
once); a latched value is read before live counts.  BCD counting is
supported for reads and loads.

Channel 0 drives ISA IRQ 0 through one hypervisor timer:
- modes 2 and 3: a tick at every period boundary of the loaded count,
  deadlines computed from ``load_ns`` and the tick number (no drift);
- modes 0, 1 and 4: one tick at the terminal count (mode 0 raises the line
  and keeps it up until the channel is reprogrammed);
- mode 5 (and mode 1 retriggers) need a gate edge, which channel 0 never
  gets: no tick.
A tick is a pulse, as Xen's vpt does it: the line is lowered then raised
again, so the PIC and an edge-triggered IOAPIC pin see one rising edge.

Limits (hostile guests): a periodic tick is never delivered faster than
every ``MIN_PERIOD_NS`` (100 us, Xen vpt's floor); a shorter period is
stretched to a whole number of periods >= the floor (reads still count at
the programmed rate).  Missed ticks are not replayed: when the timer runs
late, one tick is delivered and the next deadline is the next boundary on
the grid (Xen's HVM_PARAM_TIMER_MODE 2, no_missed_ticks_pending; libxl's
default is 1, no_delay_for_missed_ticks, which replays them).  While IRQ 0
is masked at both the PIC and the IOAPIC (``irq0_masked``), the timer is
not re-armed; ``unmasked`` re-arms it at the next boundary.

Port 0x61: bit 0 channel 2 gate (a rising edge restarts modes 1, 2, 3 and
5), bit 1 speaker data (stored; there is no speaker), bit 4 the refresh
toggle (flips every 15.085 us), bit 5 channel 2's OUT.

Invariants: any byte to any port is accepted; no exception.  No locking:
the ``Platform`` lock is held around every call, including the timer
callback.
"""

from __future__ import annotations

from collections.abc import Callable

from pyxen.hv.timers import Timer

PIT_HZ = 1_193_182
NS = 1_000_000_000
MIN_PERIOD_NS = 100_000
REFRESH_NS = 15_085
RW_LATCH, RW_LSB, RW_MSB, RW_WORD, RW_WORD_MSB = 0, 1, 2, 3, 4

TimerFactory = Callable[[Callable[[], None]], Timer]


def _to_bcd(value: int) -> int:
    value %= 10000
    return (value // 1000) << 12 | (value // 100 % 10) << 8 | (value // 10 % 10) << 4 | value % 10


def _from_bcd(value: int) -> int:
    return (value >> 12 & 0xF) * 1000 + (value >> 8 & 0xF) * 100 + (value >> 4 & 0xF) * 10 + (
        value & 0xF)


class Channel:
    def __init__(self) -> None:
        self.count = 0x10000  # the reload value in use, 1..65536
        self.mode = 0
        self.bcd = False
        self.rw = RW_WORD  # access mode from the control word
        self.read_state = RW_WORD
        self.write_state = RW_WORD
        self.write_latch = 0
        self.latched_count = 0
        self.count_latched = 0  # 0 or the access state of a latched count being read
        self.status = 0
        self.status_latched = False
        self.null_count = True
        self.gate = False
        self.load_ns = 0
        self.loaded = False  # a count was written since the last control word


class Pit:
    def __init__(self, clock: Callable[[], int], timers: TimerFactory,
                 irq0: Callable[[int], None], irq0_masked: Callable[[], bool]) -> None:
        self._clock = clock
        self._irq0 = irq0  # sets ISA IRQ 0's level
        self._irq0_masked = irq0_masked
        self.channels = [Channel() for _ in range(3)]
        self.channels[0].gate = True  # channels 0 and 1 are gated on
        self.channels[1].gate = True
        self.speaker = 0  # port 0x61 bit 1
        self._timer = timers(self._fire)
        self.next_tick = 0  # index of the next tick on channel 0's grid
        self.tick_counts = 0  # counts per delivered tick (0: no timer)
        self.parked = False  # a tick fell due while IRQ 0 was masked
        self.ticks = 0  # delivered ticks (for tests and statistics)
        now = clock()
        for ch in self.channels:
            ch.load_ns = now

    # -- counting -------------------------------------------------------------------

    def _elapsed(self, ch: Channel) -> int:
        return max(0, self._clock() - ch.load_ns) * PIT_HZ // NS

    def current_count(self, ch: Channel) -> int:
        d = self._elapsed(ch)
        n = ch.count
        if ch.mode in (2, 3):
            step = 2 * d if ch.mode == 3 else d
            value = n - step % n
        else:
            value = (n - d) % 0x10000
        return value

    def out(self, ch: Channel) -> bool:
        d = self._elapsed(ch)
        n = ch.count
        mode = ch.mode
        if mode == 0:
            return d >= n
        if mode == 1:
            return d >= n
        if mode == 2:
            return d == 0 or d % n != n - 1
        if mode == 3:
            return d % n < (n + 1) // 2
        return d != n  # modes 4 and 5: a one-clock low pulse at the terminal count

    # -- channel 0's timer ------------------------------------------------------------

    def _tick_ns(self, ch: Channel, index: int) -> int:
        return ch.load_ns - (-(index * self.tick_counts * NS) // PIT_HZ)  # rounded up

    def _program_timer(self) -> None:
        ch = self.channels[0]
        self._timer.cancel()
        self.tick_counts = 0
        self.parked = False
        self._irq0(0)
        if not ch.loaded:
            return
        if ch.mode in (2, 3):
            # Whole periods per tick, so that a tick lasts at least MIN_PERIOD_NS.
            stretch = max(1, -(-MIN_PERIOD_NS * PIT_HZ // (ch.count * NS)))
            self.tick_counts = ch.count * stretch
        elif ch.mode in (0, 1, 4):
            self.tick_counts = ch.count
        else:
            return
        self.next_tick = 1
        self._timer.arm(self._tick_ns(ch, 1))

    def _fire(self) -> None:
        ch = self.channels[0]
        if not self.tick_counts:
            return
        now = self._clock()
        due = self._tick_ns(ch, self.next_tick)
        if now < due:  # re-armed meanwhile: the service popped a stale expiry
            self._timer.arm(due)
            return
        periodic = ch.mode in (2, 3)
        if self._irq0_masked() and periodic:
            self.parked = True
            return
        self._pulse(level_after=True)
        if not periodic:
            self.tick_counts = 0
            if ch.mode != 0:
                self._irq0(0)  # modes 1 and 4: OUT goes high again
            return
        # Skip ticks missed while late: the next boundary strictly after now.
        elapsed = (now - ch.load_ns) * PIT_HZ // NS
        self.next_tick = elapsed // self.tick_counts + 1
        self._timer.arm(self._tick_ns(ch, self.next_tick))

    def _pulse(self, level_after: bool) -> None:
        self.ticks += 1
        self._irq0(0)
        self._irq0(1 if level_after else 0)

    def unmasked(self) -> None:
        """IRQ 0 may have been unmasked: resume a parked periodic timer."""
        if not self.parked or self._irq0_masked():
            return
        self.parked = False
        ch = self.channels[0]
        elapsed = (self._clock() - ch.load_ns) * PIT_HZ // NS
        self.next_tick = elapsed // self.tick_counts + 1
        self._timer.arm(self._tick_ns(ch, self.next_tick))

    def close(self) -> None:
        self._timer.cancel()
        self.tick_counts = 0

    # -- ports --------------------------------------------------------------------------

    def _load(self, index: int, value: int) -> None:
        ch = self.channels[index]
        if ch.bcd:
            value = _from_bcd(value) or 10000
        ch.count = value or 0x10000
        ch.load_ns = self._clock()
        ch.loaded = True
        ch.null_count = False
        if index == 0:
            self._program_timer()

    def _latch_count(self, ch: Channel) -> None:
        if not ch.count_latched:
            value = self.current_count(ch)
            ch.latched_count = _to_bcd(value) if ch.bcd else value & 0xFFFF
            ch.count_latched = ch.rw

    def _latch_status(self, ch: Channel) -> None:
        if not ch.status_latched:
            ch.status = (int(self.out(ch)) << 7 | int(ch.null_count) << 6 | ch.rw << 4
                         | ch.mode << 1 | int(ch.bcd))
            ch.status_latched = True

    def write_control(self, value: int) -> None:
        index = value >> 6
        if index == 3:  # read-back
            for i in range(3):
                if value & (2 << i):
                    ch = self.channels[i]
                    if not value & 0x20:
                        self._latch_count(ch)
                    if not value & 0x10:
                        self._latch_status(ch)
            return
        ch = self.channels[index]
        access = (value >> 4) & 3
        if access == RW_LATCH:
            self._latch_count(ch)
            return
        ch.rw = ch.read_state = ch.write_state = access
        mode = (value >> 1) & 7
        ch.mode = mode - 4 if mode >= 6 else mode
        ch.bcd = bool(value & 1)
        ch.null_count = True
        ch.loaded = False  # counting waits for a new count
        if index == 0:
            self._program_timer()

    def write_counter(self, index: int, value: int) -> None:
        ch = self.channels[index]
        state = ch.write_state
        if state == RW_LSB:
            self._load(index, value)
        elif state == RW_MSB:
            self._load(index, value << 8)
        elif state == RW_WORD:
            ch.write_latch = value
            ch.write_state = RW_WORD_MSB
        else:
            ch.write_state = RW_WORD
            self._load(index, ch.write_latch | value << 8)

    def read_counter(self, index: int) -> int:
        ch = self.channels[index]
        if ch.status_latched:
            ch.status_latched = False
            return ch.status
        if ch.count_latched:
            value = ch.latched_count
            state = ch.count_latched
            if state == RW_MSB:
                ch.count_latched = 0
                return value >> 8 & 0xFF
            if state == RW_WORD:
                ch.count_latched = RW_WORD_MSB
                return value & 0xFF
            ch.count_latched = 0
            return (value >> 8 if state == RW_WORD_MSB else value) & 0xFF
        count = self.current_count(ch)
        value = _to_bcd(count) if ch.bcd else count & 0xFFFF
        state = ch.read_state
        if state == RW_MSB:
            return value >> 8 & 0xFF
        if state == RW_WORD:
            ch.read_state = RW_WORD_MSB
            return value & 0xFF
        if state == RW_WORD_MSB:
            ch.read_state = RW_WORD
            return value >> 8 & 0xFF
        return value & 0xFF

    def read_port(self, port: int) -> int:
        if port == 0x43:
            return 0xFF  # the control word register cannot be read
        return self.read_counter(port - 0x40)

    def write_port(self, port: int, value: int) -> None:
        value &= 0xFF
        if port == 0x43:
            self.write_control(value)
        else:
            self.write_counter(port - 0x40, value)

    def read_61(self) -> int:
        ch2 = self.channels[2]
        refresh = (self._clock() // REFRESH_NS) & 1
        return (int(ch2.gate) | self.speaker << 1 | refresh << 4 | int(self.out(ch2)) << 5)

    def write_61(self, value: int) -> None:
        ch2 = self.channels[2]
        gate = bool(value & 1)
        if gate and not ch2.gate and ch2.mode in (1, 2, 3, 5):
            ch2.load_ns = self._clock()  # a rising gate restarts these modes
        ch2.gate = gate
        self.speaker = (value >> 1) & 1
