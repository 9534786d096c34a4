"""The two cascaded 8259A PICs of a PC (ports 0x20/0x21, 0xA0/0xA1) and the
PIIX ELCR (0x4D0/0x4D1), as Xen's vpic presents them.

Design: each ``Pic8259`` keeps IRR, IMR, ISR, the rotation base
(``priority_add``: the input with the highest priority), the vector base
from ICW2 and the mode bits of ICW4/OCW2/OCW3.  Inputs are levels
(``set_irq``): a rising input sets its IRR bit; a falling one clears it,
for edge- and level-triggered inputs alike (Xen's vpic_irq_negative_edge;
a real 8259 would then see a spurious IRQ 7 at INTA).  What differs is the
INTA: an edge input's IRR bit is cleared by it, a level input's stays set
while the line is high.  ELCR selects the trigger per input: master inputs
0-2 and slave inputs 8 and 13 are always edge (PIIX: writes to those bits
are dropped, they read 0).

Cascade: the slave's INT output is the master's input 2, a level input
(whatever ELCR says; it reads 0 there).  External sources cannot drive
input 2.  ``int_output`` is the master's INT, the CPU's INTR line;
``acknowledge`` is the INTA cycle: the vector of the highest-priority
request (the slave's through input 2), or the spurious vector of input 7
(15 for the slave) when the request has gone away.

Modes: ICW1 (IC4, SNGL), ICW2, ICW3 (accepted, ignored: the wiring is
fixed), ICW4 (AEOI, SFNM); OCW1 (IMR); OCW2 non-specific/specific EOI,
with rotation, rotate in AEOI, set priority; OCW3 read IRR/ISR, poll mode
(the next read returns 0x80 | level and acknowledges it, or 0) and special
mask mode (a masked input in service does not block lower priorities).

Invariants: any byte written to any port is accepted (no exception); the
state stays 8-bit; ``int_output`` is recomputed after every change.  No
locking: the ``Platform`` lock is held around every call.
"""

from __future__ import annotations

from collections.abc import Callable

PRIO_NONE = 8
MASTER_ELCR_MASK = 0xF8  # IRQ 0, 1, 2 always edge
SLAVE_ELCR_MASK = 0xDE  # IRQ 8 and 13 always edge
CASCADE = 2


class Pic8259:
    def __init__(self, master: bool) -> None:
        self.master = master
        self.elcr_mask = MASTER_ELCR_MASK if master else SLAVE_ELCR_MASK
        self.elcr = 0
        self.lines = 0  # input levels
        self.irr = 0
        self.imr = 0
        self.isr = 0
        self.priority_add = 0
        self.irq_base = 0
        self.read_isr = False
        self.poll = False
        self.special_mask = False
        self.auto_eoi = False
        self.rotate_on_aeoi = False
        self.sfnm = False
        self.init_state = 0  # 0: operational; 1: ICW2 next; 2: ICW3 next; 3: ICW4 next
        self.icw4 = False
        self.single = False

    @property
    def level_mask(self) -> int:
        """Inputs whose IRR follows the line at INTA (the cascade input is level)."""
        return self.elcr | (1 << CASCADE if self.master else 0)

    def set_line(self, irq: int, level: int) -> None:
        bit = 1 << irq
        if level:
            if not self.lines & bit:
                self.irr |= bit
            self.lines |= bit
        else:
            self.lines &= ~bit
            self.irr &= ~bit

    def _priority(self, mask: int) -> int:
        """Priority (0 highest) of the best input in ``mask``, PRIO_NONE if empty."""
        if not mask:
            return PRIO_NONE
        for prio in range(8):
            if mask & (1 << ((prio + self.priority_add) & 7)):
                return prio
        return PRIO_NONE

    def highest_irq(self) -> int:
        """The input that would be taken at INTA, or -1 (vpic_get_highest_priority_irq)."""
        prio = self._priority(self.irr & ~self.imr)
        if prio == PRIO_NONE:
            return -1
        irq = (prio + self.priority_add) & 7
        in_service = self.isr
        if self.sfnm and self.master and irq == CASCADE:
            in_service &= ~(1 << CASCADE)
        if self.special_mask:
            in_service &= ~self.imr
        return irq if prio < self._priority(in_service) else -1

    @property
    def output(self) -> bool:
        return self.highest_irq() >= 0

    def ack(self, irq: int) -> None:
        bit = 1 << irq
        if not self.level_mask & bit:
            self.irr &= ~bit
        if not self.auto_eoi:
            self.isr |= bit
        elif self.rotate_on_aeoi:
            self.priority_add = (irq + 1) & 7

    # -- ports --------------------------------------------------------------------

    def write_command(self, value: int) -> None:
        if value & 0x10:  # ICW1
            self.irr &= self.level_mask
            self.imr = self.isr = 0
            self.priority_add = 0
            self.rotate_on_aeoi = self.special_mask = self.read_isr = self.poll = False
            self.icw4 = bool(value & 1)
            self.single = bool(value & 2)
            if not self.icw4:
                self.auto_eoi = self.sfnm = False
            self.init_state = 1
        elif value & 0x08:  # OCW3
            if value & 0x04:
                self.poll = True
            if value & 0x02:
                self.read_isr = bool(value & 1)
            if value & 0x40:
                self.special_mask = bool(value & 0x20)
        else:  # OCW2
            self._ocw2(value)

    def _ocw2(self, value: int) -> None:
        cmd = value >> 5
        if cmd in (0, 4):  # rotate in AEOI mode clear/set
            self.rotate_on_aeoi = cmd == 4
        elif cmd in (1, 5):  # non-specific EOI (and rotate)
            in_service = self.isr & ~self.imr if self.special_mask else self.isr
            prio = self._priority(in_service)
            if prio != PRIO_NONE:
                irq = (prio + self.priority_add) & 7
                self.isr &= ~(1 << irq)
                if cmd == 5:
                    self.priority_add = (irq + 1) & 7
        elif cmd in (3, 7):  # specific EOI (and rotate)
            irq = value & 7
            self.isr &= ~(1 << irq)
            if cmd == 7:
                self.priority_add = (irq + 1) & 7
        elif cmd == 6:  # set priority: the given input becomes the lowest
            self.priority_add = (value + 1) & 7
        # cmd 2: no operation

    def write_data(self, value: int) -> None:
        state = self.init_state
        if state == 0:
            self.imr = value
        elif state == 1:
            self.irq_base = value & 0xF8
            if not self.single:
                self.init_state = 2
            else:
                self.init_state = 3 if self.icw4 else 0
        elif state == 2:
            self.init_state = 3 if self.icw4 else 0
        else:
            self.sfnm = bool(value & 0x10)
            self.auto_eoi = bool(value & 0x02)
            self.init_state = 0

    def read(self, data_port: bool) -> int:
        if data_port:
            return self.imr
        return self.isr if self.read_isr else self.irr

    def write_elcr(self, value: int) -> None:
        self.elcr = value & self.elcr_mask

    def read_elcr(self) -> int:
        return self.elcr


class PicPair:
    """Master + slave; ``on_raise`` is called when the master's INT goes 0 -> 1."""

    def __init__(self, on_raise: Callable[[], None] | None = None) -> None:
        self.master = Pic8259(True)
        self.slave = Pic8259(False)
        self.on_raise = on_raise
        self.int_output = False

    def _update(self) -> None:
        self.master.set_line(CASCADE, int(self.slave.output))
        out = self.master.output
        rose = out and not self.int_output
        self.int_output = out
        if rose and self.on_raise is not None:
            self.on_raise()

    def set_irq(self, irq: int, level: int) -> None:
        """Drive input ``irq`` (0-15); input 2 is the cascade and cannot be driven."""
        if not 0 <= irq < 16 or irq == CASCADE:
            return
        chip = self.master if irq < 8 else self.slave
        chip.set_line(irq & 7, level)
        self._update()

    def acknowledge(self) -> int:
        """The INTA cycle: the vector to deliver (spurious IRQ 7/15 if nothing is left)."""
        master, slave = self.master, self.slave
        irq = master.highest_irq()
        if irq < 0:
            vector = master.irq_base + 7
        else:
            master.ack(irq)
            if irq == CASCADE:
                sirq = slave.highest_irq()
                if sirq < 0:
                    vector = slave.irq_base + 7
                else:
                    slave.ack(sirq)
                    vector = slave.irq_base + sirq
            else:
                vector = master.irq_base + irq
        self._update()
        return vector

    def _poll(self, chip: Pic8259) -> int:
        chip.poll = False
        irq = chip.highest_irq()
        if irq < 0:
            return 0
        chip.ack(irq)
        self._update()
        return 0x80 | irq

    def read_port(self, port: int) -> int:
        chip = self.master if port < 0x80 else self.slave
        if chip.poll:
            return self._poll(chip)
        return chip.read(bool(port & 1))

    def write_port(self, port: int, value: int) -> None:
        chip = self.master if port < 0x80 else self.slave
        value &= 0xFF
        if port & 1:
            chip.write_data(value)
        else:
            chip.write_command(value)
        self._update()

    def read_elcr(self, port: int) -> int:
        return (self.slave if port & 1 else self.master).read_elcr()

    def write_elcr(self, port: int, value: int) -> None:
        (self.slave if port & 1 else self.master).write_elcr(value & 0xFF)
        self._update()

    def line_masked(self, irq: int) -> bool:
        """IMR masks input ``irq`` (for the slave: also when the cascade is masked)."""
        if irq < 8:
            return bool(self.master.imr & (1 << irq))
        return bool(self.slave.imr & (1 << (irq & 7)) or self.master.imr & (1 << CASCADE))
