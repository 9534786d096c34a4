"""A 16550A UART (COM1: ports 0x3F8-0x3FF, ISA IRQ 4).

Design:
- Output is immediate: a THR write hands the byte to ``serial_out`` (or, in
  loopback mode, to the receive FIFO), so LSR.THRE and LSR.TEMT are always
  set and there is never a transmit FIFO to model.
- Input: ``input`` appends console bytes to a backlog of at most
  ``BACKLOG_MAX`` bytes (more is dropped).  The backlog feeds the receive
  FIFO (16 bytes with FCR bit 0 set, else a 1-byte holding register) as the
  guest reads RBR, so a guest never sees an overrun from console input.
  Loopback bytes go straight into the FIFO and can overrun it (LSR.OE).  In
  loopback mode the backlog is held back and resumes afterwards.
- IIR priority: line status (OE, IER bit 2) > received data (IER bit 0;
  reported as a character timeout, 0x0C, while the FIFO holds fewer bytes
  than the trigger level, since there is no timer here) > THR empty (IER
  bit 1) > modem status (IER bit 3).  The THRE interrupt is raised when
  ETBEI goes 0->1 and after every THR write, and cleared by reading IIR
  while it is the reported source, by a THR write, or by clearing ETBEI.
- The ISA line is "an interrupt is pending and MCR.OUT2 is set and not in
  loopback" (OUT2 drives the IRQ gate on a PC; in loopback it is disconnected
  from the pin).  Only level changes reach ``set_irq``; a THR write that
  re-arms THRE drops the line first, so the PIC sees a fresh edge.
- MSR outside loopback reports CTS, DSR and DCD asserted; in loopback the
  inputs follow RTS, DTR, OUT1, OUT2, with delta bits kept until MSR is read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

COM1_BASE = 0x3F8
COM1_IRQ = 4
FIFO_SIZE = 16
BACKLOG_MAX = 4096

IER_RDI = 0x01
IER_THRI = 0x02
IER_RLSI = 0x04
IER_MSI = 0x08

LCR_DLAB = 0x80

MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10

LSR_DR = 0x01
LSR_OE = 0x02
LSR_THRE = 0x20
LSR_TEMT = 0x40

IIR_NONE = 0x01
IIR_MSI = 0x00
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_RLSI = 0x06
IIR_TIMEOUT = 0x0C
IIR_FIFO = 0xC0

_TRIGGERS = (1, 4, 8, 14)


class Uart16550:
    def __init__(self, out: Callable[[bytes], None], set_irq: Callable[[int], None]) -> None:
        self._out = out
        self._set_irq = set_irq
        self.rx: deque[int] = deque()
        self.backlog = bytearray()
        self.ier = 0
        self.lcr = 0
        self.mcr = 0
        self.scr = 0
        self.dll = 0x0C  # 9600 baud
        self.dlm = 0
        self.fifo = False
        self.trigger = 1
        self.overrun = False
        self.thr_pending = False
        self.msr_delta = 0
        self.irq_line = False

    # -- state ---------------------------------------------------------------

    def _capacity(self) -> int:
        return FIFO_SIZE if self.fifo else 1

    def _lines(self) -> int:
        """MSR bits 4-7 (CTS, DSR, RI, DCD)."""
        m = self.mcr
        if not m & MCR_LOOP:
            return 0xB0
        return (
            (0x10 if m & MCR_RTS else 0) | (0x20 if m & MCR_DTR else 0)
            | (0x40 if m & MCR_OUT1 else 0) | (0x80 if m & MCR_OUT2 else 0)
        )

    def _refill(self) -> None:
        if self.mcr & MCR_LOOP or not self.backlog:
            return
        take = min(self._capacity() - len(self.rx), len(self.backlog))
        if take > 0:
            self.rx.extend(self.backlog[:take])
            del self.backlog[:take]

    def iir(self) -> int:
        fifo_bits = IIR_FIFO if self.fifo else 0
        if self.overrun and self.ier & IER_RLSI:
            return IIR_RLSI | fifo_bits
        if self.rx and self.ier & IER_RDI:
            if self.fifo and len(self.rx) < self.trigger:
                return IIR_TIMEOUT | fifo_bits
            return IIR_RDI | fifo_bits
        if self.thr_pending and self.ier & IER_THRI:
            return IIR_THRI | fifo_bits
        if self.msr_delta and self.ier & IER_MSI:
            return IIR_MSI | fifo_bits
        return IIR_NONE | fifo_bits

    def lsr(self) -> int:
        return LSR_THRE | LSR_TEMT | (LSR_DR if self.rx else 0) | (LSR_OE if self.overrun else 0)

    def _update_irq(self) -> None:
        line = (
            not self.iir() & IIR_NONE
            and bool(self.mcr & MCR_OUT2)
            and not self.mcr & MCR_LOOP
        )
        if line != self.irq_line:
            self.irq_line = line
            self._set_irq(1 if line else 0)

    # -- console side --------------------------------------------------------

    def input(self, data: bytes) -> None:
        room = BACKLOG_MAX - len(self.backlog)
        if room > 0:
            self.backlog += data[:room]
        self._refill()
        self._update_irq()

    # -- guest side ----------------------------------------------------------

    def read(self, offset: int) -> int:
        dlab = self.lcr & LCR_DLAB
        if offset == 0:
            if dlab:
                return self.dll
            value = self.rx.popleft() if self.rx else 0
            self._refill()
            self._update_irq()
            return value
        if offset == 1:
            return self.dlm if dlab else self.ier
        if offset == 2:
            value = self.iir()
            if value & 0x0F == IIR_THRI:
                self.thr_pending = False
                self._update_irq()
            return value
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            value = self.lsr()
            if self.overrun:
                self.overrun = False
                self._update_irq()
            return value
        if offset == 6:
            value = self._lines() | self.msr_delta
            if self.msr_delta:
                self.msr_delta = 0
                self._update_irq()
            return value
        return self.scr

    def write(self, offset: int, value: int) -> None:
        value &= 0xFF
        dlab = self.lcr & LCR_DLAB
        if offset == 0:
            if dlab:
                self.dll = value
                return
            self.thr_pending = False
            self._update_irq()
            if self.mcr & MCR_LOOP:
                if len(self.rx) < self._capacity():
                    self.rx.append(value)
                else:
                    self.overrun = True
            else:
                self._out(bytes((value,)))
            self.thr_pending = True
        elif offset == 1:
            if dlab:
                self.dlm = value
                return
            old = self.ier
            self.ier = value & 0x0F
            if self.ier & IER_THRI and not old & IER_THRI:
                self.thr_pending = True
            elif not self.ier & IER_THRI:
                self.thr_pending = False
        elif offset == 2:
            enable = bool(value & 0x01)
            if enable != self.fifo:
                self.rx.clear()
            self.fifo = enable
            if value & 0x02:
                self.rx.clear()
            self.trigger = _TRIGGERS[value >> 6]
            self._refill()
        elif offset == 3:
            self.lcr = value
        elif offset == 4:
            before = self._lines()
            self.mcr = value & 0x1F
            after = self._lines()
            changed = before ^ after
            self.msr_delta |= (
                (0x01 if changed & 0x10 else 0) | (0x02 if changed & 0x20 else 0)
                | (0x04 if before & 0x40 and not after & 0x40 else 0)
                | (0x08 if changed & 0x80 else 0)
            )
            self._refill()
        elif offset == 7:
            self.scr = value
        # offsets 5 and 6 (LSR, MSR) are read-only
        self._update_irq()
