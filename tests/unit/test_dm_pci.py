"""PCI bus 0 (pyxen.dm.pci) through config mechanism #1 on the Machine."""

from __future__ import annotations

import tempfile
from pathlib import Path

from dm_fakes import make_machine, pci_read, pci_write
from hypothesis import given, settings
from hypothesis import strategies as st

EXPECTED = {
    (0, 0): (0x8086, 0x1237, 0x060000, 0x02),
    (1, 0): (0x8086, 0x7000, 0x060100, 0x00),
    (1, 1): (0x8086, 0x7010, 0x010180, 0x00),
    (1, 3): (0x8086, 0x7113, 0x068000, 0x03),
    (2, 0): (0x5853, 0x0001, 0xFF8000, 0x01),
}


def test_scan_finds_the_qemu_xen_functions(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    found = {}
    for devfn in range(256):
        dev, fn = devfn >> 3, devfn & 7
        ids = pci_read(m, dev, fn, 0)
        if ids == 0xFFFFFFFF:
            continue
        rev_class = pci_read(m, dev, fn, 8)
        found[(dev, fn)] = (ids & 0xFFFF, ids >> 16, rev_class >> 8, rev_class & 0xFF)
    assert found == EXPECTED
    assert pci_read(m, 1, 0, 0x0E, 1) == 0x80  # multifunction
    assert pci_read(m, 0, 0, 0x0E, 1) == 0x00
    assert pci_read(m, 2, 0, 0x2C) == 0x0001_5853  # subsystem
    assert pci_read(m, 2, 0, 0x3D, 1) == 1  # INTA
    assert pci_read(m, 1, 1, 0x3D, 1) == 0  # IDE uses ISA IRQ 14/15


def test_address_register_and_partial_accesses(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    m.pio_write(0xCF8, 4, 0x80000803)
    assert m.pio_read(0xCF8, 4) == 0x80000800
    assert m.pio_read(0xCFE, 2) == 0x7000  # device ID, word at offset 2
    assert m.pio_read(0xCFD, 1) == 0x80
    assert m.pio_read(0xCFC, 1) == 0x86
    m.pio_write(0xCF8, 4, 0x00000800)  # enable bit clear
    assert m.pio_read(0xCFC, 4) == 0xFFFFFFFF
    m.pio_write(0xCF8, 4, 0x80010000)  # bus 1
    assert m.pio_read(0xCFC, 4) == 0xFFFFFFFF
    m.pio_write(0xCFC, 4, 0)  # dropped
    assert m.pio_read(0xCFA, 2) == 0xFFFF  # not the address register


def test_platform_bar_sizing_and_decoding(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    # hvmloader's sequence: disable decode, size each BAR, program it
    cmd = pci_read(m, 2, 0, 4, 2)
    pci_write(m, 2, 0, 4, cmd & ~3, size=2)
    sizes = []
    for bar in range(6):
        reg = 0x10 + 4 * bar
        old = pci_read(m, 2, 0, reg)
        pci_write(m, 2, 0, reg, 0xFFFFFFFF)
        sizes.append(pci_read(m, 2, 0, reg))
        pci_write(m, 2, 0, reg, old)
    assert sizes == [0xFFFFFF01, 0xFF000008, 0, 0, 0, 0]
    pci_write(m, 2, 0, 0x30, 0xFFFFF800)
    assert pci_read(m, 2, 0, 0x30) == 0  # no expansion ROM
    pci_write(m, 2, 0, 0x10, 0xC000)
    pci_write(m, 2, 0, 0x14, 0xF0000000)
    assert pci_read(m, 2, 0, 0x10) == 0xC001
    assert pci_read(m, 2, 0, 0x14) == 0xF0000008
    assert m.pio_read(0xC000, 1) == 0xFF  # I/O decode still off
    assert m.mmio_read(0xF0000000, 4) == 0xFFFFFFFF
    pci_write(m, 2, 0, 4, cmd | 3, size=2)
    assert m.pio_read(0xC000, 1) == 0  # platform flags
    assert m.pio_read(0xC001, 1) == 0xFF
    m.pio_write(0xC000, 1, 1)
    assert m.pio_read(0x10, 1) == 1  # the same flags on the fixed port
    for ch in b"hello\n":
        m.pio_write(0xC008, 1, ch)
    assert list(m.platform.log_lines) == [b"hello"]
    assert m.mmio_read(0xF0000000, 4) == 0
    assert m.mmio_read(0xF0FFFFFC, 4) == 0
    assert m.mmio_read(0xF1000000, 4) == 0xFFFFFFFF
    assert (0xC000, 0xC0FF) in m.claimed_port_ranges()
    assert m.claimed_mmio_ranges() == [(0xF0000000, 0xF0FFFFFF)]


def test_ide_bar4_sizing(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    pci_write(m, 1, 1, 0x20, 0xFFFFFFFF)
    assert pci_read(m, 1, 1, 0x20) == 0xFFFFFFF1
    for reg in (0x10, 0x14, 0x18, 0x1C, 0x24):
        pci_write(m, 1, 1, reg, 0xFFFFFFFF)
        assert pci_read(m, 1, 1, reg) == 0
    pci_write(m, 1, 1, 0x40, 0x8000, size=2)  # hvmloader: IDETIM enable
    assert pci_read(m, 1, 1, 0x40, 2) == 0x8000


def test_pirq_routing_calls(tmp_path: Path) -> None:
    m, irq, _, _ = make_machine(tmp_path)
    assert [pci_read(m, 1, 0, 0x60 + i, 1) for i in range(4)] == [0x80] * 4
    for link, isa in enumerate((5, 10, 11, 5)):  # hvmloader's byte writes
        pci_write(m, 1, 0, 0x60 + link, isa, size=1)
    assert irq.of("link") == [("link", 0, 5), ("link", 1, 10), ("link", 2, 11), ("link", 3, 5)]
    irq.calls.clear()
    pci_write(m, 1, 0, 0x60, 0x8B0B0A89)  # dword: disable, 10, 11, disable
    assert irq.of("link") == [("link", 0, 0), ("link", 1, 10), ("link", 2, 11), ("link", 3, 0)]
    assert pci_read(m, 1, 0, 0x60) == 0x8B0B0A89


def test_stored_registers_and_read_only_fields(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    pci_write(m, 0, 0, 0x59, 0x33, size=1)  # PAM0
    pci_write(m, 0, 0, 0x5C, 0x33333333)  # PAM3-6
    assert pci_read(m, 0, 0, 0x59, 1) == 0x33 and pci_read(m, 0, 0, 0x5C) == 0x33333333
    assert pci_read(m, 0, 0, 0x72, 1) == 0x02  # SMRAM default
    pci_write(m, 0, 0, 0, 0x12345678)
    assert pci_read(m, 0, 0, 0) == 0x12378086  # IDs are read-only
    # hvmloader's PIIX4 ACPI set-up
    pci_write(m, 1, 3, 0x3C, 0x0009, size=2)
    pci_write(m, 1, 3, 0x40, 0xB001)
    pci_write(m, 1, 3, 0x80, 0x01, size=1)
    assert pci_read(m, 1, 3, 0x3C, 2) == 0x0109
    assert pci_read(m, 1, 3, 0x40) == 0xB001
    # interrupt line written by hvmloader, pin is read-only
    pci_write(m, 2, 0, 0x3C, 0x0305, size=2)
    assert pci_read(m, 2, 0, 0x3C, 2) == 0x0105


def test_platform_fixed_ports_and_unplug(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    assert m.pio_read(0x10, 2) == 0x49D2
    assert m.pio_read(0x12, 1) == 1
    m.pio_write(0x12, 2, 1)  # product number
    m.pio_write(0x10, 4, 0x1234)  # build number
    assert m.pio_read(0x10, 2) == 0x49D2  # never blacklisted
    assert (m.platform.product, m.platform.build) == (1, 0x1234)
    assert m.pio_read(0x1F7, 1) == 0x50
    m.pio_write(0x10, 2, 0x2)  # NICs only: disks stay
    assert m.pio_read(0x1F7, 1) == 0x50
    m.pio_write(0x10, 2, 0x1)
    assert m.platform.unplugged == 0x3
    assert m.pio_read(0x1F7, 1) == 0xFF


def test_aux_unplug_keeps_primary_master(tmp_path: Path) -> None:
    from dm_fakes import FakeIrq, make_disk

    from pyxen.dm.bus import Machine

    specs = [make_disk(tmp_path, f"d{i}", 8, position=i)[0] for i in (0, 1, 2)]
    m = Machine(FakeIrq(), specs, lambda d: None)
    assert m.pio_read(0x177, 1) == 0x50
    m.pio_write(0x10, 2, 0x4)
    assert m.pio_read(0x177, 1) == 0xFF
    assert m.pio_read(0x1F7, 1) == 0x50
    m.pio_write(0x1F6, 1, 0xB0)
    assert m.pio_read(0x1F7, 1) == 0  # slave gone, master remains


def test_reset_control_and_intx(tmp_path: Path) -> None:
    m, irq, _, _ = make_machine(tmp_path)
    m.pio_write(0xCF9, 1, 0x02)
    assert irq.of("shutdown") == []
    assert m.pio_read(0xCF9, 1) == 0x02
    m.pio_write(0xCF9, 1, 0x06)
    assert irq.of("shutdown") == [("shutdown", "reboot")]
    m.platform.set_irq(1)
    m.platform.set_irq(0)
    assert irq.of("intx") == [("intx", 2, 0, 1), ("intx", 2, 0, 0)]
    m.host_bridge.set_irq(1)  # no pin: nothing
    assert len(irq.of("intx")) == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0xCF8, 0xCFF), st.sampled_from([1, 2, 4, 3, 8]),
                          st.integers(0, 0xFFFFFFFF), st.booleans()), max_size=80))
def test_fuzz_config_space(ops: list[tuple[int, int, int, bool]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        m, _, _, _ = make_machine(Path(d), nsectors=8)
        for port, size, value, is_write in ops:
            if is_write:
                m.pio_write(port, size, value)
            else:
                assert 0 <= m.pio_read(port, size) < 1 << (8 * size)
        # the IDs survive anything a guest wrote
        assert pci_read(m, 1, 0, 0) == 0x70008086
        m.claimed_port_ranges()
        m.close()
