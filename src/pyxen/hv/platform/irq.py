"""Interrupt routing of an HVM domain: ISA IRQs, PCI INTx and the PCI links.

Xen's wiring (xen/arch/x86/hvm/irq.c), which hvmloader's MADT and PCI
routing tables describe to the guest:

- ISA IRQ n drives 8259 input n and IOAPIC GSI ``isa_gsi(n)`` (n, except
  IRQ 0 -> GSI 2: the MADT's interrupt source override).
- PCI device d (bus 0), pin p (INTA..INTD = 0..3) drives GSI
  ``pci_gsi(d, p)`` = 16 + ((d << 2) + (d >> 3) + p) % 32 directly, and the
  PIIX3 link ``pci_link(d, p)`` = (d + p) % 4 (PIRQA..D), which the link
  route (``set_pci_link_route``, 0 = not routed) sends to one ISA IRQ, i.e.
  to that 8259 input and its GSI.

Invariant: a line is the OR of its sources.  Every source (an ISA IRQ as
the device model set it, a PCI INTx, an asserted link) is counted once per
line it drives; the 8259 input or the IOAPIC pin sees a change only when its
count goes 0 -> 1 or 1 -> 0 (Xen's gsi_assert_count), so two devices
sharing a line cannot lower it for each other, and repeating a level is a
no-op.  Bad numbers (a device model controls them) are ignored.

No locking here: the ``Platform`` lock is held around every call.
"""

from __future__ import annotations

from collections.abc import Callable

NR_ISA_IRQS = 16
NR_GSIS = 48
NR_PCI_DEVICES = 32
NR_LINKS = 4

LineSetter = Callable[[int, int], None]


def isa_gsi(isa_irq: int) -> int:
    return isa_irq if isa_irq else 2


def pci_gsi(device: int, intx: int) -> int:
    return 16 + (((device << 2) + (device >> 3) + intx) & 31)


def pci_link(device: int, intx: int) -> int:
    return (device + intx) & 3


class IrqRouter:
    def __init__(self, pic_line: LineSetter, gsi_line: LineSetter) -> None:
        self._pic_line = pic_line  # (isa_irq, level) into the 8259 pair
        self._gsi_line = gsi_line  # (gsi, level) into the IOAPIC
        self.isa_asserted = 0  # bitmap: ISA IRQs asserted as sources
        self.intx_asserted = 0  # bitmap, bit device * 4 + intx
        self.link_route = [0] * NR_LINKS
        self.link_count = [0] * NR_LINKS
        self.pic_count = [0] * NR_ISA_IRQS
        self.gsi_count = [0] * NR_GSIS

    # -- line counting ------------------------------------------------------------

    def _gsi_up(self, gsi: int) -> None:
        self.gsi_count[gsi] += 1
        if self.gsi_count[gsi] == 1:
            self._gsi_line(gsi, 1)

    def _gsi_down(self, gsi: int) -> None:
        self.gsi_count[gsi] -= 1
        if self.gsi_count[gsi] == 0:
            self._gsi_line(gsi, 0)

    def _isa_up(self, irq: int) -> None:
        self.pic_count[irq] += 1
        if self.pic_count[irq] == 1:
            self._pic_line(irq, 1)
        self._gsi_up(isa_gsi(irq))

    def _isa_down(self, irq: int) -> None:
        self.pic_count[irq] -= 1
        if self.pic_count[irq] == 0:
            self._pic_line(irq, 0)
        self._gsi_down(isa_gsi(irq))

    def gsi_asserted(self, gsi: int) -> bool:
        return 0 <= gsi < NR_GSIS and self.gsi_count[gsi] > 0

    # -- sources ------------------------------------------------------------------

    def set_isa_irq_level(self, isa_irq: int, level: int) -> bool:
        """False if the IRQ number is out of range (ignored)."""
        if not 0 <= isa_irq < NR_ISA_IRQS:
            return False
        bit = 1 << isa_irq
        if level and not self.isa_asserted & bit:
            self.isa_asserted |= bit
            self._isa_up(isa_irq)
        elif not level and self.isa_asserted & bit:
            self.isa_asserted &= ~bit
            self._isa_down(isa_irq)
        return True

    def set_pci_intx_level(self, device: int, intx: int, level: int) -> bool:
        if not (0 <= device < NR_PCI_DEVICES and 0 <= intx < 4):
            return False
        bit = 1 << (device * 4 + intx)
        link = pci_link(device, intx)
        if level and not self.intx_asserted & bit:
            self.intx_asserted |= bit
            self._gsi_up(pci_gsi(device, intx))
            self.link_count[link] += 1
            if self.link_count[link] == 1 and self.link_route[link]:
                self._isa_up(self.link_route[link])
        elif not level and self.intx_asserted & bit:
            self.intx_asserted &= ~bit
            self._gsi_down(pci_gsi(device, intx))
            self.link_count[link] -= 1
            if self.link_count[link] == 0 and self.link_route[link]:
                self._isa_down(self.link_route[link])
        return True

    def set_pci_link_route(self, link: int, isa_irq: int) -> bool:
        """Route PIRQ ``link`` to ``isa_irq`` (0: none); an asserted link moves with it."""
        if not (0 <= link < NR_LINKS and 0 <= isa_irq < NR_ISA_IRQS):
            return False
        old = self.link_route[link]
        if old == isa_irq:
            return True
        self.link_route[link] = isa_irq
        if self.link_count[link]:
            if old:
                self._isa_down(old)
            if isa_irq:
                self._isa_up(isa_irq)
        return True
