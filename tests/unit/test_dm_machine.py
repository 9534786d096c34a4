"""The Machine (pyxen.dm.bus): dispatch, guest-level sequences, lifetime, fuzz."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from dm_fakes import FakeIrq, make_disk, make_machine, pattern, pci_read, pci_write
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxen.dm.bus import DiskSpec, Machine


def test_unclaimed_ports_and_mmio(tmp_path: Path) -> None:
    m, irq, out, _ = make_machine(tmp_path)
    for port in (0x2F8, 0x3E8, 0x378, 0x402, 0x510, 0xE9, 0xFFFF):
        assert m.pio_read(port, 1) == 0xFF
        assert m.pio_read(port, 2) == 0xFFFF
        assert m.pio_read(port, 4) == 0xFFFFFFFF
        m.pio_write(port, 4, 0x12345678)
    assert m.pio_read(0x10000, 1) == 0xFF
    assert m.pio_read(-5, 2) == 0xFFFF
    assert m.pio_read(0x80, 0) == 0
    assert m.pio_read(0x80, 16) == (1 << 128) - 1
    assert m.mmio_read(0xFED00000, 4) == 0xFFFFFFFF
    assert m.mmio_read(0xFEC00000, 8) == (1 << 64) - 1
    m.mmio_write(0xFEC00000, 4, 1)
    assert irq.calls == [] and out == []


def test_wide_access_is_split_into_bytes(tmp_path: Path) -> None:
    m, _, out, _ = make_machine(tmp_path)
    m.pio_write(0x3FF, 1, 0x42)  # UART scratch
    assert m.pio_read(0x3FE, 2) == 0x42B0  # MSR then SCR
    assert m.pio_read(0x3FF, 2) == 0xFF42  # SCR then unclaimed 0x400
    m.pio_write(0x3F8, 2, 0x4241)  # THR 'A', then IER = 0x42 & 0xF
    assert out == [b"A"]
    assert m.pio_read(0x3F9, 1) == 0x02


def test_string_io_on_ordinary_ports(tmp_path: Path) -> None:
    m, _, out, _ = make_machine(tmp_path)
    m.pio_write_string(0x3F8, 1, b"rep outsb\n")
    assert b"".join(out) == b"rep outsb\n"
    assert m.pio_read_string(0x3FD, 1, 3) == b"\x60\x60\x60"
    assert m.pio_read_string(0x2F8, 2, 2) == b"\xff" * 4
    assert m.pio_read_string(0x1F0, 2, 0) == b""
    assert m.pio_read_string(0x1F0, 2, -1) == b""
    m.pio_write_string(0x3F8, 2, b"xyz")  # trailing odd byte ignored; high bytes -> IER
    assert b"".join(out).endswith(b"x")


def test_disk_spec_validation(tmp_path: Path) -> None:
    spec, _ = make_disk(tmp_path, "a", 4)
    with pytest.raises(ValueError):
        Machine(FakeIrq(), [spec._replace(position=4)], lambda d: None)
    with pytest.raises(ValueError):
        Machine(FakeIrq(), [spec, spec], lambda d: None)
    os.close(spec.fd)


def test_close_syncs_and_closes_fds(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    fd = m.ide.channels[0].drives[0].fd  # type: ignore[union-attr]
    m.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    assert m.pio_read(0x1F7, 1) == 0xFF  # no drive any more
    m.close()  # idempotent


def seabios_ata_detect(m: Machine, base: int, ctl: int) -> list[int]:
    """The port sequence of SeaBIOS's ata_detect; returns the found slaves."""
    found = []
    did_reset = False
    for slave in (0, 1):
        status = m.pio_read(base + 7, 1)  # powerup_await_non_bsy: one read
        assert not status & 0x80 or status == 0xFF
        dh = 0xB0 if slave else 0xA0
        m.pio_write(base + 6, 1, dh)
        m.pio_write(base + 6, 1, dh)
        got_dh = m.pio_read(base + 6, 1)
        m.pio_write(base + 2, 1, 0x55)
        m.pio_write(base + 3, 1, 0xAA)
        if (m.pio_read(base + 2, 1), m.pio_read(base + 3, 1), got_dh) != (0x55, 0xAA, dh):
            continue
        if not did_reset:
            m.pio_write(ctl, 1, 0x0E)
            m.pio_write(ctl, 1, 0x0A)
            assert not m.pio_read(base + 7, 1) & 0x80
            m.pio_write(base + 6, 1, 0xA0)
            m.pio_write(ctl, 1, 0x08)
            did_reset = True
        m.pio_write(ctl, 1, 0x0A)
        m.pio_write(base + 6, 1, dh)
        m.pio_write(base + 7, 1, 0xA1)  # IDENTIFY PACKET first
        st = m.pio_read(base + 7, 1)
        assert not st & 0x08
        if not m.pio_read(base + 7, 1):
            continue
        m.pio_write(base + 7, 1, 0xEC)
        st = m.pio_read(base + 7, 1)
        if not st & 0x08:
            continue
        ident = m.pio_read_string(base, 2, 256)
        m.pio_read(ctl, 1)
        assert m.pio_read(base + 7, 1) & 0x89 == 0
        m.pio_write(ctl, 1, 0x08)
        found.append(slave)
        word93 = int.from_bytes(ident[186:188], "little")
        if not slave and word93 & 0xDF61 == 0x4041:
            break
    return found


def test_seabios_style_detection(tmp_path: Path) -> None:
    a, _ = make_disk(tmp_path, "a", 64, position=0)
    d, _ = make_disk(tmp_path, "d", 64, position=3)
    m = Machine(FakeIrq(), [a, d], lambda x: None)
    assert seabios_ata_detect(m, 0x1F0, 0x3F6) == [0]
    assert seabios_ata_detect(m, 0x170, 0x376) == [1]
    empty = Machine(FakeIrq(), [], lambda x: None)
    assert seabios_ata_detect(empty, 0x1F0, 0x3F6) == []
    assert seabios_ata_detect(empty, 0x170, 0x376) == []


def test_hvmloader_bar_assignment_then_platform_io(tmp_path: Path) -> None:
    m, _irq, _, _ = make_machine(tmp_path)
    bars = []
    for dev, fn in ((0, 0), (1, 0), (1, 1), (1, 3), (2, 0)):
        if pci_read(m, dev, fn, 0) == 0xFFFFFFFF:
            continue
        cmd = pci_read(m, dev, fn, 4, 2)
        pci_write(m, dev, fn, 4, cmd & ~3, size=2)
        for bar in range(6):
            reg = 0x10 + 4 * bar
            old = pci_read(m, dev, fn, reg)
            pci_write(m, dev, fn, reg, 0xFFFFFFFF)
            size_mask = pci_read(m, dev, fn, reg)
            pci_write(m, dev, fn, reg, old)
            if size_mask and old & 1:
                bars.append(((~(size_mask & 0xFFFC) + 1) & 0xFFFF, dev, fn, reg))
    io_base = 0xC000
    for size, dev, fn, reg in sorted(bars, reverse=True):  # largest first
        pci_write(m, dev, fn, reg, io_base | 1)
        io_base += size
    for dev, fn in ((1, 1), (2, 0)):
        cmd = pci_read(m, dev, fn, 4, 2)
        pci_write(m, dev, fn, 4, cmd | 0x5, size=2)
    assert pci_read(m, 2, 0, 0x10) == 0xC001
    assert pci_read(m, 1, 1, 0x20) == 0xC101
    assert m.pio_read(0xC000, 1) == 0
    m.pio_write(0xC102, 1, 0x20)
    assert m.pio_read(0xC102, 1) == 0x20
    # moving a BAR moves its ports
    pci_write(m, 2, 0, 0x10, 0xD000)
    assert m.pio_read(0xC000, 1) == 0xFF
    assert m.pio_read(0xD000, 1) == 0


def test_reading_many_sectors_is_cheap(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path, nsectors=1024)
    start = time.perf_counter()
    from dm_fakes import ata_command48

    assert ata_command48(m, 0x24, lba=0, count=1024) & 0x08
    got = [m.pio_read_string(0x1F0, 2, 256) for _ in range(1024)]
    elapsed = time.perf_counter() - start
    assert b"".join(got) == pattern(1024)
    assert elapsed < 2.0  # about 10 microseconds per sector here


_ALL_PORTS = [
    *range(0x10, 0x20), 0x60, 0x64, *range(0x170, 0x178), 0x376, *range(0x1F0, 0x1F8),
    0x3F6, *range(0x3F8, 0x400), *range(0xCF8, 0xD00), 0xC000, 0xC008, 0xC100, 0xC102,
    0xC104,
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.one_of(st.sampled_from(_ALL_PORTS), st.integers(-2, 0x10002)),
    st.integers(0, 9), st.integers(0, (1 << 64) - 1), st.integers(0, 3)), max_size=120))
def test_fuzz_every_port(ops: list[tuple[int, int, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        m, irq, _, _ = make_machine(Path(d), nsectors=16)
        # give the BARs addresses so their ports are live
        pci_write(m, 2, 0, 0x10, 0xC000)
        pci_write(m, 1, 1, 0x20, 0xC100)
        pci_write(m, 1, 1, 0x04, 0x1, size=2)
        for port, size, value, kind in ops:
            if kind == 0:
                m.pio_write(port, size, value)
            elif kind == 1:
                v = m.pio_read(port, size)
                assert 0 <= v < 1 << (8 * max(size, 0))
            elif kind == 2:
                m.pio_write_string(port, max(size, 1), value.to_bytes(8, "little") * 8)
                m.pio_read_string(port, size, value & 0x3FF)
            else:
                m.mmio_write(value & 0xFFFFFFFF, size, value)
                m.mmio_read(value & 0xFFFFFFFF, size)
                m.serial_input(value.to_bytes(8, "little"))
        for call in irq.calls:
            if call[0] == "isa":
                assert call[1] in (1, 4, 12, 14, 15) and call[2] in (0, 1)
            elif call[0] == "link":
                assert 0 <= int(call[1]) <= 3 and 0 <= int(call[2]) <= 15  # type: ignore[call-overload]
        m.close()


def test_machine_without_disks(tmp_path: Path) -> None:
    m = Machine(FakeIrq(), [], lambda d: None)
    assert m.pio_read(0x1F7, 1) == 0xFF
    assert m.pio_read_string(0x1F0, 2, 256) == b"\xff" * 512
    m.pio_write(0x1F7, 1, 0x20)
    assert pci_read(m, 1, 1, 0) == 0x70108086
    m.close()


def test_disk_spec_is_a_tuple() -> None:
    spec = DiskSpec(1, 7, True, 4096)
    assert tuple(spec) == (1, 7, True, 4096)
