"""Helpers shared by the tests of pyxen.dm: a recording IrqSink, disks, and
the port sequences a guest uses."""

from __future__ import annotations

import os
from pathlib import Path

from pyxen.dm.bus import DiskSpec, Machine


class FakeIrq:
    """Records every IrqSink call; ``isa`` keeps the current ISA line levels."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.isa: dict[int, int] = {}

    def set_isa_irq_level(self, isa_irq: int, level: int) -> None:
        self.calls.append(("isa", isa_irq, level))
        self.isa[isa_irq] = level

    def set_pci_intx_level(self, device: int, intx: int, level: int) -> None:
        self.calls.append(("intx", device, intx, level))

    def set_pci_link_route(self, link: int, isa_irq: int) -> None:
        self.calls.append(("link", link, isa_irq))

    def shutdown(self, reason: str) -> None:
        self.calls.append(("shutdown", reason))

    def of(self, kind: str) -> list[tuple[object, ...]]:
        return [c for c in self.calls if c[0] == kind]


def pattern(nsectors: int) -> bytes:
    """Disk content where every sector is distinct: sector n is filled with
    its number (two bytes) followed by a byte ramp."""
    out = bytearray()
    for n in range(nsectors):
        sector = bytearray((i * 7 + n) & 0xFF for i in range(512))
        sector[0:4] = n.to_bytes(4, "little")
        out += sector
    return bytes(out)


def make_disk(tmp_path: Path, name: str, nsectors: int, position: int = 0,
              readonly: bool = False) -> tuple[DiskSpec, Path]:
    path = tmp_path / name
    path.write_bytes(pattern(nsectors))
    fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
    return DiskSpec(position, fd, readonly, nsectors * 512), path


def make_machine(tmp_path: Path, nsectors: int = 64, **kw: bool
                 ) -> tuple[Machine, FakeIrq, list[bytes], Path]:
    spec, path = make_disk(tmp_path, "hda.img", nsectors, readonly=kw.get("readonly", False))
    irq = FakeIrq()
    out: list[bytes] = []
    return Machine(irq, [spec], out.append), irq, out, path


def pci_read(m: Machine, dev: int, fn: int, reg: int, size: int = 4) -> int:
    m.pio_write(0xCF8, 4, 0x80000000 | dev << 11 | fn << 8 | (reg & 0xFC))
    return m.pio_read(0xCFC + (reg & 3), size)


def pci_write(m: Machine, dev: int, fn: int, reg: int, value: int, size: int = 4) -> None:
    m.pio_write(0xCF8, 4, 0x80000000 | dev << 11 | fn << 8 | (reg & 0xFC))
    m.pio_write(0xCFC + (reg & 3), size, value)


def ata_command(m: Machine, cmd: int, *, lba: int = 0, count: int = 1, dev: int = 0xE0,
                base: int = 0x1F0) -> int:
    """Issue an LBA28 command the way SeaBIOS's send_cmd does; returns status."""
    m.pio_write(base + 6, 1, dev | ((lba >> 24) & 0x0F))
    m.pio_write(base + 1, 1, 0)
    m.pio_write(base + 2, 1, count & 0xFF)
    m.pio_write(base + 3, 1, lba & 0xFF)
    m.pio_write(base + 4, 1, (lba >> 8) & 0xFF)
    m.pio_write(base + 5, 1, (lba >> 16) & 0xFF)
    m.pio_write(base + 7, 1, cmd)
    return m.pio_read(base + 7, 1)


def ata_command48(m: Machine, cmd: int, lba: int, count: int, base: int = 0x1F0) -> int:
    m.pio_write(base + 6, 1, 0xE0)
    for reg, shift in ((2, 8), (3, 24), (4, 32), (5, 40)):
        src = count if reg == 2 else lba
        m.pio_write(base + reg, 1, (src >> shift) & 0xFF)
    for reg, shift in ((2, 0), (3, 0), (4, 8), (5, 16)):
        src = count if reg == 2 else lba
        m.pio_write(base + reg, 1, (src >> shift) & 0xFF)
    m.pio_write(base + 7, 1, cmd)
    return m.pio_read(base + 7, 1)


def identify_words(m: Machine, base: int = 0x1F0) -> list[int]:
    status = ata_command(m, 0xEC, dev=0xA0, base=base)
    assert status & 0x08, hex(status)
    data = m.pio_read_string(base, 2, 256)
    return [int.from_bytes(data[i : i + 2], "little") for i in range(0, 512, 2)]


def ata_text(words: list[int], first: int, count: int) -> str:
    raw = b"".join(w.to_bytes(2, "big") for w in words[first : first + count])
    return raw.decode("ascii").rstrip()
