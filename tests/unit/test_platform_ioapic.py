"""The IOAPIC (hv/platform/ioapic.py) alone, delivering to a recorder."""

from __future__ import annotations

from pyxen.hv.platform import ioapic as io

Sent = tuple[int, bool, int, int, bool]


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def __call__(self, dest: int, logical: bool, mode: int, vector: int, level: bool) -> None:
        self.sent.append((dest, logical, mode, vector, level))


def make() -> tuple[io.IoApic, Recorder]:
    rec = Recorder()
    return io.IoApic(rec), rec


def write(a: io.IoApic, index: int, value: int) -> None:
    a.mmio_write(io.REG_SELECT, 4, index)
    a.mmio_write(io.REG_WINDOW, 4, value)


def read(a: io.IoApic, index: int) -> int:
    a.mmio_write(io.REG_SELECT, 4, index)
    return a.mmio_read(io.REG_WINDOW, 4)


def test_identification_registers() -> None:
    a, _ = make()
    assert read(a, 1) == 0x002F0011
    write(a, 1, 0)
    assert read(a, 1) == 0x002F0011  # read-only
    write(a, 0, 0xFFFF_FFFF)
    assert read(a, 0) == 0x0F00_0000 and read(a, 2) == 0x0F00_0000
    assert read(a, 0x10 + 2 * 48) == 0  # past the last pin
    assert a.mmio_read(io.REG_SELECT, 4) == 0x10 + 2 * 48
    assert a.mmio_read(0x20, 4) == 0


def test_entries_start_masked_and_keep_read_only_bits() -> None:
    a, _ = make()
    assert all(read(a, 0x10 + 2 * pin) == io.MASKED for pin in range(48))
    write(a, 0x10 + 2 * 47, 0xFFFF_FFFF)
    assert read(a, 0x10 + 2 * 47) == io.LOW_WRITABLE  # no delivery status/remote IRR
    write(a, 0x11 + 2 * 47, 0xFFFF_FFFF)
    assert read(a, 0x11 + 2 * 47) == 0xFF00_0000


def test_edge_pin_delivers_on_rising_edges_only() -> None:
    a, rec = make()
    write(a, 0x11 + 2 * 4, 3 << 24)
    write(a, 0x10 + 2 * 4, 0x31)
    a.set_irq(4, 1)
    a.set_irq(4, 1)
    assert rec.sent == [(3, False, io.DM_FIXED, 0x31, False)]
    a.set_irq(4, 0)
    a.set_irq(4, 1)
    assert len(rec.sent) == 2


def test_masked_edge_is_lost() -> None:
    a, rec = make()
    write(a, 0x10 + 2 * 4, io.MASKED | 0x31)
    a.set_irq(4, 1)
    write(a, 0x10 + 2 * 4, 0x31)
    assert rec.sent == []


def test_level_pin_waits_for_eoi_and_redelivers_while_asserted() -> None:
    a, rec = make()
    write(a, 0x10 + 2 * 20, io.LEVEL | (io.DM_LOWEST << 8) | io.DEST_LOGICAL | 0x51)
    a.set_irq(20, 1)
    assert rec.sent == [(0, True, io.DM_LOWEST, 0x51, True)]
    assert read(a, 0x10 + 2 * 20) & io.REMOTE_IRR
    a.set_irq(20, 0)
    a.set_irq(20, 1)
    assert len(rec.sent) == 1  # remote IRR blocks
    a.eoi(0x51)
    assert len(rec.sent) == 2 and read(a, 0x10 + 2 * 20) & io.REMOTE_IRR
    a.set_irq(20, 0)
    a.eoi(0x51)
    assert len(rec.sent) == 2 and not read(a, 0x10 + 2 * 20) & io.REMOTE_IRR
    a.eoi(0x99)  # nobody's vector: nothing
    assert len(rec.sent) == 2


def test_unmasking_an_asserted_level_pin_delivers() -> None:
    a, rec = make()
    write(a, 0x10 + 2 * 9, io.MASKED | io.LEVEL | 0x41)
    a.set_irq(9, 1)
    assert rec.sent == []
    write(a, 0x10 + 2 * 9, io.LEVEL | 0x41)
    assert rec.sent == [(0, False, io.DM_FIXED, 0x41, True)]
    write(a, 0x10 + 2 * 9, io.LEVEL | 0x41)  # remote IRR survives a rewrite: no repeat
    assert len(rec.sent) == 1
    write(a, 0x10 + 2 * 9, 0x41)  # edge clears remote IRR
    assert not read(a, 0x10 + 2 * 9) & io.REMOTE_IRR


def test_extint_and_nmi_never_set_remote_irr() -> None:
    a, rec = make()
    write(a, 0x10, io.LEVEL | (io.DM_EXTINT << 8))
    a.set_irq(0, 1)
    assert rec.sent[-1][2] == io.DM_EXTINT
    assert not read(a, 0x10) & io.REMOTE_IRR


def test_narrow_accesses() -> None:
    a, _ = make()
    a.mmio_write(io.REG_SELECT, 1, 0x1234)
    assert a.ioregsel == 0x34
    write(a, 0x12, 0x0001_0000 | 0x40)
    a.mmio_write(io.REG_SELECT, 4, 0x12)
    a.mmio_write(io.REG_WINDOW, 1, 0x55)  # vector byte only
    assert read(a, 0x12) == 0x0001_0055
    assert a.mmio_read(io.REG_WINDOW, 2) == 0x0055


def test_any_value_anywhere_is_harmless() -> None:
    a, _ = make()
    for index in range(256):
        for value in (0, 0xFFFF_FFFF, 0x1234_5678):
            write(a, index, value)
            read(a, index)
    a.mmio_write(io.REG_WINDOW, 0, 1)
    for gsi in (-1, 48, 1000):
        a.set_irq(gsi, 1)
