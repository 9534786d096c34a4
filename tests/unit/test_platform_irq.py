"""ISA/PCI interrupt routing (hv/platform/irq.py): Xen's wiring and line counting."""

from __future__ import annotations

import pytest

from pyxen.hv.platform import irq


class Lines:
    def __init__(self) -> None:
        self.pic: list[tuple[int, int]] = []
        self.gsi: list[tuple[int, int]] = []
        self.router = irq.IrqRouter(lambda n, lv: self.pic.append((n, lv)),
                                    lambda n, lv: self.gsi.append((n, lv)))


@pytest.mark.parametrize("device,intx,gsi", [(0, 0, 16), (1, 0, 20), (3, 1, 29), (8, 0, 17),
                                             (31, 3, 16 + ((124 + 3 + 3) & 31))])
def test_pci_gsi_formula(device: int, intx: int, gsi: int) -> None:
    assert irq.pci_gsi(device, intx) == gsi


def test_isa_irq0_is_gsi2() -> None:
    lines = Lines()
    lines.router.set_isa_irq_level(0, 1)
    lines.router.set_isa_irq_level(4, 1)
    assert lines.pic == [(0, 1), (4, 1)] and lines.gsi == [(2, 1), (4, 1)]


def test_shared_lines_are_or_of_sources() -> None:
    lines = Lines()
    r = lines.router
    r.set_pci_link_route(1, 10)  # link (d + p) & 3: device 1 INTA and device 0 INTB
    r.set_pci_intx_level(1, 0, 1)
    r.set_pci_intx_level(0, 1, 1)
    r.set_isa_irq_level(10, 1)
    assert lines.pic == [(10, 1)]
    r.set_pci_intx_level(1, 0, 0)
    r.set_isa_irq_level(10, 0)
    assert lines.pic == [(10, 1)]  # device 0 INTB still holds it
    r.set_pci_intx_level(0, 1, 0)
    assert lines.pic == [(10, 1), (10, 0)]
    assert r.gsi_count == [0] * irq.NR_GSIS


def test_repeated_levels_count_once() -> None:
    lines = Lines()
    for _ in range(3):
        lines.router.set_pci_intx_level(2, 0, 1)
    lines.router.set_pci_intx_level(2, 0, 0)
    assert lines.gsi == [(irq.pci_gsi(2, 0), 1), (irq.pci_gsi(2, 0), 0)]


def test_rerouting_an_asserted_link_moves_the_level() -> None:
    lines = Lines()
    r = lines.router
    r.set_pci_intx_level(0, 0, 1)  # link 0, not routed: only its GSI
    assert lines.pic == []
    r.set_pci_link_route(0, 5)
    assert lines.pic == [(5, 1)]
    r.set_pci_link_route(0, 11)
    assert lines.pic == [(5, 1), (5, 0), (11, 1)]
    r.set_pci_link_route(0, 0)
    assert lines.pic[-1] == (11, 0)


def test_out_of_range_sources_are_refused() -> None:
    lines = Lines()
    r = lines.router
    assert not r.set_isa_irq_level(16, 1)
    assert not r.set_isa_irq_level(-1, 1)
    assert not r.set_pci_intx_level(32, 0, 1)
    assert not r.set_pci_intx_level(0, 4, 1)
    assert not r.set_pci_link_route(4, 5)
    assert not r.set_pci_link_route(0, 16)
    assert lines.pic == [] and lines.gsi == []
