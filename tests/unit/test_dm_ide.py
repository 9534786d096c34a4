"""PIIX3 IDE model (pyxen.dm.ide), driven through the Machine's ports."""

from __future__ import annotations

import os
from pathlib import Path

from dm_fakes import (
    FakeIrq,
    ata_command,
    ata_command48,
    ata_text,
    identify_words,
    make_disk,
    make_machine,
    pattern,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxen.dm.bus import Machine

BSY, DRDY, DRQ, ERR = 0x80, 0x40, 0x08, 0x01


def test_identify_strings_capacity_and_checksum(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path, nsectors=3000)
    w = identify_words(m)
    assert w[0] == 0x0040
    assert ata_text(w, 27, 20) == "PYXEN HARDDISK"
    assert ata_text(w, 10, 10) == "PYXEN00000"
    assert ata_text(w, 23, 4) == "1.0"
    assert w[60] | w[61] << 16 == 3000
    assert w[100] | w[101] << 16 | w[102] << 32 | w[103] << 48 == 3000
    assert w[83] & (1 << 10)  # LBA48
    assert w[49] & (1 << 9)  # LBA
    assert not w[49] & (1 << 8)  # no DMA advertised
    assert w[47] & 0xFF == 16 and w[59] == 0x0110
    assert w[64] == 0x0003
    assert (w[1], w[3], w[6]) == (2, 16, 63)
    raw = b"".join(x.to_bytes(2, "little") for x in w)
    assert raw[510] == 0xA5 and sum(raw) & 0xFF == 0
    # no slave: device 0 answers for device 1, SeaBIOS's skip test
    assert w[93] & 0xDF61 == 0x4041
    assert m.pio_read(0x1F7, 1) == DRDY | 0x10  # DRQ gone after 512 bytes


def test_identify_word93_with_slave(tmp_path: Path) -> None:
    a, _ = make_disk(tmp_path, "a", 16, position=0)
    b, _ = make_disk(tmp_path, "b", 16, position=1)
    m = Machine(FakeIrq(), [a, b], lambda d: None)
    assert identify_words(m)[93] & 0xDF61 != 0x4041
    m.pio_write(0x1F6, 1, 0xB0)
    assert ata_command(m, 0xEC, dev=0xB0) & DRQ
    assert m.pio_read_string(0x1F0, 2, 256)[20:30] != b""


def test_read_sectors_lba5(tmp_path: Path) -> None:
    m, irq, _, _ = make_machine(tmp_path)
    m.pio_write(0x3F6, 1, 0x08)  # HD15, interrupts enabled
    status = ata_command(m, 0x20, lba=5, count=1)
    assert status & DRQ and not status & ERR
    assert irq.of("isa") == [("isa", 14, 1), ("isa", 14, 0)]  # raised, acknowledged
    data = m.pio_read_string(0x1F0, 2, 256)
    assert data == pattern(64)[5 * 512 : 6 * 512]
    assert m.pio_read(0x1F7, 1) & (BSY | DRQ | ERR) == 0


def test_multi_sector_read_raises_irq_per_block(tmp_path: Path) -> None:
    m, irq, _, _ = make_machine(tmp_path)
    m.pio_write(0x3F6, 1, 0x08)
    m.pio_write(0x1F6, 1, 0xE0)
    m.pio_write(0x1F2, 1, 3)
    m.pio_write(0x1F3, 1, 10)
    m.pio_write(0x1F4, 1, 0)
    m.pio_write(0x1F5, 1, 0)
    m.pio_write(0x1F7, 1, 0x20)
    got = b""
    for _ in range(3):
        assert irq.isa[14] == 1
        assert m.pio_read(0x3F6, 1) & DRQ  # alternate status: no acknowledge
        assert irq.isa[14] == 1
        assert m.pio_read(0x1F7, 1) & DRQ
        assert irq.isa[14] == 0
        got += m.pio_read_string(0x1F0, 2, 256)
    assert got == pattern(64)[10 * 512 : 13 * 512]
    assert m.pio_read(0x1F7, 1) == DRDY | 0x10
    assert irq.isa[14] == 0
    # the task file holds the last sector transferred
    assert m.pio_read(0x1F3, 1) == 12


def test_32bit_data_port_and_single_accesses(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    ata_command(m, 0x20, lba=1)
    words = [m.pio_read(0x1F0, 4) for _ in range(128)]
    data = b"".join(w.to_bytes(4, "little") for w in words)
    assert data == pattern(64)[512:1024]
    assert m.pio_read(0x1F0, 2) == 0xFFFF  # no DRQ any more


def test_write_then_read_back(tmp_path: Path) -> None:
    m, irq, _, path = make_machine(tmp_path)
    m.pio_write(0x3F6, 1, 0x08)
    payload = bytes((i * 13) & 0xFF for i in range(1024))
    status = ata_command(m, 0x30, lba=7, count=2)
    assert status & DRQ
    assert irq.isa.get(14, 0) == 0  # no interrupt before the first block
    m.pio_write_string(0x1F0, 2, payload[:512])
    assert irq.isa[14] == 1
    assert m.pio_read(0x1F7, 1) & DRQ
    m.pio_write_string(0x1F0, 4, payload[512:])
    assert irq.isa[14] == 1
    assert m.pio_read(0x1F7, 1) == DRDY | 0x10
    assert path.read_bytes()[7 * 512 : 9 * 512] == payload
    ata_command(m, 0x20, lba=7, count=2)
    assert m.pio_read_string(0x1F0, 2, 512) == payload
    assert ata_command(m, 0xE7) == DRDY | 0x10  # FLUSH CACHE


def test_chs_addressing_and_init_device_parameters(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path, nsectors=2000)
    content = pattern(2000)
    # default geometry 16 heads x 63 sectors: LBA 1000 = C0 H15 S56
    m.pio_write(0x1F6, 1, 0xA0 | 15)
    m.pio_write(0x1F2, 1, 1)
    m.pio_write(0x1F3, 1, 56)
    m.pio_write(0x1F4, 1, 0)
    m.pio_write(0x1F5, 1, 0)
    m.pio_write(0x1F7, 1, 0x20)
    assert m.pio_read(0x1F7, 1) & DRQ
    assert m.pio_read_string(0x1F0, 2, 256) == content[1000 * 512 : 1001 * 512]
    # sector 0 does not exist in CHS
    m.pio_write(0x1F3, 1, 0)
    m.pio_write(0x1F7, 1, 0x20)
    assert m.pio_read(0x1F7, 1) & ERR and m.pio_read(0x1F1, 1) == 0x10
    # 4 heads, 32 sectors per track: C2 H1 S3 = (2*4+1)*32+2 = 290
    m.pio_write(0x1F6, 1, 0xA0 | 3)
    m.pio_write(0x1F2, 1, 32)
    m.pio_write(0x1F7, 1, 0x91)
    assert m.pio_read(0x1F7, 1) == DRDY | 0x10
    m.pio_write(0x1F6, 1, 0xA1)
    m.pio_write(0x1F2, 1, 1)
    m.pio_write(0x1F3, 1, 3)
    m.pio_write(0x1F4, 1, 2)
    m.pio_write(0x1F5, 1, 0)
    m.pio_write(0x1F7, 1, 0x20)
    assert m.pio_read_string(0x1F0, 2, 256) == content[290 * 512 : 291 * 512]
    w = identify_words(m)
    assert (w[55], w[56]) == (4, 32)


def test_lba48_read_ext_and_out_of_range(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path, nsectors=300)
    assert ata_command48(m, 0x24, lba=260, count=2) & DRQ
    assert m.pio_read_string(0x1F0, 2, 512) == pattern(300)[260 * 512 : 262 * 512]
    status = ata_command48(m, 0x24, lba=1 << 33, count=1)
    assert status & ERR and not status & DRQ
    assert m.pio_read(0x1F1, 1) == 0x10  # IDNF
    status = ata_command(m, 0x20, lba=299, count=2)
    assert status & ERR and m.pio_read(0x1F1, 1) == 0x10
    # HOB read-back of the previous register contents
    ata_command48(m, 0x42, lba=0x0102_0304_0506 & 0xFF, count=1)
    m.pio_write(0x3F6, 1, 0x80)
    assert m.pio_read(0x1F2, 1) == 0


def test_read_write_multiple(tmp_path: Path) -> None:
    m, irq, _, path = make_machine(tmp_path)
    m.pio_write(0x3F6, 1, 0x08)
    assert ata_command(m, 0xC6, count=3) & ERR  # not a power of two
    assert ata_command(m, 0xC6, count=4) == DRDY | 0x10
    assert ata_command(m, 0xC4, lba=2, count=6) & DRQ
    first = m.pio_read_string(0x1F0, 2, 4 * 256)  # one DRQ block of 4 sectors
    assert irq.isa[14] == 1  # second block ready
    assert m.pio_read(0x1F7, 1) & DRQ
    second = m.pio_read_string(0x1F0, 2, 2 * 256)
    assert first + second == pattern(64)[2 * 512 : 8 * 512]
    assert m.pio_read(0x1F7, 1) == DRDY | 0x10
    data = bytes(range(256)) * 2 * 5
    assert ata_command(m, 0xC5, lba=20, count=5) & DRQ
    m.pio_write_string(0x1F0, 2, data)
    assert m.pio_read(0x1F7, 1) == DRDY | 0x10
    assert path.read_bytes()[20 * 512 : 25 * 512] == data
    assert ata_command(m, 0xC6, count=0) == DRDY | 0x10
    assert ata_command(m, 0xC4, lba=0) & ERR  # multiple mode disabled


def test_aborts_and_read_only(tmp_path: Path) -> None:
    m, _, _, path = make_machine(tmp_path, readonly=True)
    before = path.read_bytes()
    for cmd in (0xA1, 0xA0, 0x08, 0xC8, 0xCA, 0x25, 0x35, 0x00, 0xFF):
        status = ata_command(m, cmd)
        assert status & ERR and not status & DRQ, hex(cmd)
        assert m.pio_read(0x1F1, 1) == 0x04
    assert ata_command(m, 0x30, lba=1) & ERR
    assert ata_command(m, 0x40, lba=1, count=4) == DRDY | 0x10  # READ VERIFY
    for cmd in (0xEF, 0x10, 0xE7, 0xEA, 0xE0):
        assert ata_command(m, cmd) == DRDY | 0x10, hex(cmd)
    assert path.read_bytes() == before


def test_disk_error_sets_err(tmp_path: Path) -> None:
    path = tmp_path / "wo.img"
    path.write_bytes(bytes(512 * 8))
    fd = os.open(path, os.O_WRONLY)  # pread fails with EBADF
    from pyxen.dm.bus import DiskSpec

    m = Machine(FakeIrq(), [DiskSpec(0, fd, False, 512 * 8)], lambda d: None)
    status = ata_command(m, 0x20, lba=1)
    assert status & ERR and not status & DRQ
    m.close()


def test_srst_signature_and_nien(tmp_path: Path) -> None:
    m, irq, _, _ = make_machine(tmp_path)
    m.pio_write(0x3F6, 1, 0x0E)  # SRST + nIEN
    assert m.pio_read(0x1F7, 1) & BSY
    m.pio_write(0x3F6, 1, 0x0A)
    assert m.pio_read(0x1F7, 1) == DRDY | 0x10
    assert [m.pio_read(p, 1) for p in (0x1F1, 0x1F2, 0x1F3, 0x1F4, 0x1F5)] == [1, 1, 1, 0, 0]
    # with nIEN set, a completing command leaves the line low
    ata_command(m, 0x20, lba=0)
    assert irq.isa.get(14, 0) == 0
    m.pio_read_string(0x1F0, 2, 256)
    ata_command(m, 0xEF)
    m.pio_write(0x1F7, 1, 0x10)  # recalibrate; don't read status
    assert irq.isa.get(14, 0) == 0
    m.pio_write(0x3F6, 1, 0x08)  # clearing nIEN exposes the pending interrupt
    assert irq.isa[14] == 1
    m.pio_read(0x1F7, 1)
    assert irq.isa[14] == 0


def test_empty_channel_floats_and_absent_slave(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    for port in range(0x171, 0x178):
        assert m.pio_read(port, 1) == 0xFF
    assert m.pio_read(0x376, 1) == 0xFF
    assert m.pio_read(0x170, 2) == 0xFFFF
    # SeaBIOS's register check on the empty channel fails at once
    m.pio_write(0x176, 1, 0xA0)
    m.pio_write(0x172, 1, 0x55)
    assert m.pio_read(0x172, 1) != 0x55
    # primary slave absent: status 0, commands ignored, registers shared
    m.pio_write(0x1F6, 1, 0xB0)
    assert m.pio_read(0x1F6, 1) == 0xB0
    m.pio_write(0x1F2, 1, 0x55)
    assert m.pio_read(0x1F2, 1) == 0x55
    assert m.pio_read(0x1F7, 1) == 0
    m.pio_write(0x1F7, 1, 0xEC)
    assert m.pio_read(0x1F7, 1) == 0


def test_secondary_channel_disk(tmp_path: Path) -> None:
    spec, _ = make_disk(tmp_path, "hdc", 32, position=2)
    irq = FakeIrq()
    m = Machine(irq, [spec], lambda d: None)
    assert m.pio_read(0x1F7, 1) == 0xFF
    m.pio_write(0x376, 1, 0x08)
    assert ata_command(m, 0x20, lba=31, base=0x170) & DRQ
    assert ("isa", 15, 1) in irq.calls  # raised, then acknowledged by the status read
    assert irq.isa[15] == 0
    assert m.pio_read_string(0x170, 2, 256) == pattern(32)[31 * 512 :]


def test_busmaster_registers_are_storage(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    from dm_fakes import pci_write

    pci_write(m, 1, 1, 0x20, 0xC100)
    pci_write(m, 1, 1, 0x04, 0x5, size=2)
    m.pio_write(0xC104, 4, 0x12345677)
    assert m.pio_read(0xC104, 4) == 0x12345674
    m.pio_write(0xC100, 1, 0xFF)
    assert m.pio_read(0xC100, 1) == 0x09
    m.pio_write(0xC102, 1, 0x60)
    assert m.pio_read(0xC102, 1) == 0x60
    ata_command(m, 0xEF)  # the interrupt sets the BM interrupt bit
    assert m.pio_read(0xC102, 1) == 0x64
    m.pio_write(0xC102, 1, 0x64)  # write one to clear (bits 5-6 are plain storage)
    assert m.pio_read(0xC102, 1) == 0x60


def test_unplug_then_no_disk(tmp_path: Path) -> None:
    m, _, _, _ = make_machine(tmp_path)
    m.pio_write(0x10, 2, 0x1)
    assert m.pio_read(0x1F7, 1) == 0xFF


_IDE_PORTS = [*range(0x1F0, 0x1F8), 0x3F6, *range(0x170, 0x178), 0x376]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_IDE_PORTS), st.sampled_from([1, 2, 4]),
                          st.integers(0, 0xFFFFFFFF), st.booleans()), max_size=60))
def test_fuzz_ide_ports(ops: list[tuple[int, int, int, bool]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        m, _, _, _ = make_machine(Path(d), nsectors=8)
        for port, size, value, is_write in ops:
            if is_write:
                m.pio_write(port, size, value)
                if port in (0x1F0, 0x170):
                    m.pio_write_string(port, size, value.to_bytes(4, "little") * 64)
            else:
                assert 0 <= m.pio_read(port, size) < 1 << (8 * size)
                if port in (0x1F0, 0x170):
                    assert len(m.pio_read_string(port, size, 300)) == 300 * size
        m.close()
