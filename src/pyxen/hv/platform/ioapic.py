"""One IOAPIC at 0xFEC00000, as Xen's vIOAPIC presents it (48 pins, version 0x11).

Registers: IOREGSEL at +0x00 and IOWIN at +0x10 (other offsets of the
0x100-byte window Xen claims read 0, writes are dropped; version 0x11 has
no EOI register).  Indirect registers: 0x00 ID (bits 27:24 writable),
0x01 version (0x002F0011: 48 pins, read-only), 0x02 arbitration (reads the
ID, read-only), 0x10 + 2n / 0x11 + 2n the low/high words of pin n's
redirection entry.  Other indices read 0 and ignore writes.

Redirection entry (low word): vector 7:0, delivery mode 10:8, logical
destination 11, delivery status 12 (always 0: delivery is immediate),
polarity 13 (stored, ignored as in Xen: a source's "asserted" is active),
remote IRR 14 (read-only), trigger 15 (1 = level), mask 16; high word:
destination 63:56.  All pins start masked.

Semantics (Xen's vioapic_irq_positive_edge / vioapic_update_EOI):
- ``set_irq(gsi, level)`` keeps the pin's input level.  On a rising edge
  of an unmasked pin: edge-triggered pins deliver; level-triggered ones
  deliver if remote IRR is clear, and set it.  A masked pin's edge is lost.
- ``eoi(vector)`` (the LAPIC retired a level-triggered vector): every
  level pin with that vector gets remote IRR cleared, and is delivered
  again (remote IRR set) if still asserted and unmasked.
- Writing a low word keeps remote IRR (cleared if the pin becomes edge);
  an unmasked level pin that is asserted with remote IRR clear is then
  delivered.
- Remote IRR is set only for fixed and lowest-priority level deliveries:
  NMI, INIT and ExtINT are never EOI'd by a LAPIC.

Delivery goes to ``deliver(dest, logical, mode, vector, level)``; the
``Platform`` sends fixed/lowest/NMI/INIT to the LAPICs and treats ExtINT
(pin 0 as hvmloader programs it: the 8259's virtual wire) as "vCPU 0 takes
the PIC's interrupt by INTA".

Invariants: guest values never raise; every delivery is caused by an
edge, an EOI or a guest write, so a pin cannot loop.  No locking: the
``Platform`` lock is held around every call.
"""

from __future__ import annotations

from collections.abc import Callable

IOAPIC_BASE = 0xFEC0_0000
IOAPIC_WINDOW = 0x100
NUM_PINS = 48
VERSION_ID = 0x11
VERSION = ((NUM_PINS - 1) << 16) | VERSION_ID  # 0x002F0011
REG_SELECT = 0x00
REG_WINDOW = 0x10
IDX_ID, IDX_VERSION, IDX_ARB = 0, 1, 2
IDX_REDIR = 0x10

VECTOR_MASK = 0xFF
MODE_SHIFT = 8
DEST_LOGICAL = 1 << 11
POLARITY = 1 << 13
REMOTE_IRR = 1 << 14
LEVEL = 1 << 15
MASKED = 1 << 16
LOW_WRITABLE = VECTOR_MASK | 7 << MODE_SHIFT | DEST_LOGICAL | POLARITY | LEVEL | MASKED
HIGH_WRITABLE = 0xFF00_0000
DM_FIXED, DM_LOWEST, DM_NMI, DM_INIT, DM_EXTINT = 0, 1, 4, 5, 7

Deliver = Callable[[int, bool, int, int, bool], None]


class IoApic:
    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self.ioregsel = 0
        self.id = 0
        self.redir = [MASKED] * NUM_PINS  # 64-bit entries
        self.levels = 0  # bitmap of asserted inputs

    # -- helpers ----------------------------------------------------------------------

    def masked(self, pin: int) -> bool:
        return bool(self.redir[pin] & MASKED)

    def _send(self, pin: int) -> None:
        entry = self.redir[pin]
        mode = (entry >> MODE_SHIFT) & 7
        level = bool(entry & LEVEL)
        if level and mode in (DM_FIXED, DM_LOWEST):
            self.redir[pin] = entry | REMOTE_IRR
        self._deliver(entry >> 56, bool(entry & DEST_LOGICAL), mode, entry & VECTOR_MASK,
                      level)

    def _try_level(self, pin: int) -> None:
        """Deliver a level pin that is asserted, unmasked and not awaiting EOI."""
        entry = self.redir[pin]
        if (entry & (LEVEL | MASKED | REMOTE_IRR) == LEVEL
                and self.levels >> pin & 1):
            self._send(pin)

    # -- inputs -----------------------------------------------------------------------

    def set_irq(self, gsi: int, level: int) -> None:
        if not 0 <= gsi < NUM_PINS:
            return
        bit = 1 << gsi
        if not level:
            self.levels &= ~bit
            return
        if self.levels & bit:
            return  # no edge
        self.levels |= bit
        entry = self.redir[gsi]
        if entry & MASKED:
            return
        if not entry & LEVEL:
            self._send(gsi)
        else:
            self._try_level(gsi)

    def eoi(self, vector: int) -> None:
        for pin in range(NUM_PINS):
            entry = self.redir[pin]
            if entry & VECTOR_MASK == vector and entry & REMOTE_IRR:
                self.redir[pin] = entry & ~REMOTE_IRR
                self._try_level(pin)

    # -- registers ----------------------------------------------------------------------

    def read_indirect(self) -> int:
        index = self.ioregsel
        if index in (IDX_ID, IDX_ARB):
            return self.id << 24
        if index == IDX_VERSION:
            return VERSION
        pin = (index - IDX_REDIR) >> 1
        if index < IDX_REDIR or pin >= NUM_PINS:
            return 0
        entry = self.redir[pin]
        return (entry >> 32) & 0xFFFF_FFFF if index & 1 else entry & 0xFFFF_FFFF

    def write_indirect(self, value: int) -> None:
        index = self.ioregsel
        value &= 0xFFFF_FFFF
        if index == IDX_ID:
            self.id = (value >> 24) & 0xF
            return
        pin = (index - IDX_REDIR) >> 1
        if index < IDX_REDIR or pin >= NUM_PINS:
            return  # version, arbitration, undefined
        entry = self.redir[pin]
        if index & 1:
            self.redir[pin] = (entry & 0xFFFF_FFFF) | (value & HIGH_WRITABLE) << 32
            return
        new = (entry & ~0xFFFF_FFFF) | (value & LOW_WRITABLE) | (entry & REMOTE_IRR)
        if not new & LEVEL:
            new &= ~REMOTE_IRR
        self.redir[pin] = new
        self._try_level(pin)

    def mmio_read(self, offset: int, size: int) -> int:
        """A read at ``offset`` in the window (narrow reads see the low bytes)."""
        if offset == REG_SELECT:
            value = self.ioregsel
        elif offset == REG_WINDOW:
            value = self.read_indirect()
        else:
            return 0
        return value & ((1 << (8 * size)) - 1) if 0 < size < 4 else value

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if size <= 0:
            return
        if offset == REG_SELECT:
            self.ioregsel = value & 0xFF
        elif offset == REG_WINDOW:
            if size < 4:  # merge a narrow write into the current register
                mask = (1 << (8 * size)) - 1
                value = (self.read_indirect() & ~mask) | (value & mask)
            self.write_indirect(value)
