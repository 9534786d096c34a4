"""The ``Machine``: every device-model device behind one port/MMIO dispatcher.

The process around a Machine (written separately) takes ioreqs from Xen's
ioreq page, calls ``pio_*``/``mmio_*`` and writes the answers back; the
Machine tells it about interrupt lines and shutdown requests through an
``IrqSink``, which that process turns into dm_ops.

Design and invariants:
- Fixed ports are a dict from port number to a region (read, write, access
  sizes it takes).  PCI BARs that decode I/O (the Xen platform device's
  BAR0, the IDE bus-master BAR4) go in a second dict, rebuilt only when a
  config write touched a BAR or a command register; fixed ports win over a
  BAR a guest places on top of them.
- An access of a size a region does not take (a word read of the UART, a
  3- or 8-byte request) is split into byte accesses, each dispatched on its
  own port, little-endian, as a PC's bus would.  Unclaimed bytes read 0xFF
  and drop writes.  Sizes above 8 or below 1 read all ones (or nothing).
- ``pio_read_string``/``pio_write_string`` (``rep ins``/``rep outs``) move a
  whole burst of the IDE data ports as one slice; other ports fall back to
  one access per element.  The count is clamped to ``MAX_STRING_ITEMS``.
- Nothing a guest does raises: every value is masked to the access size
  and each device handles all register values.
- The Machine owns the disk fds: ``close`` syncs the writable ones and
  closes all of them, and detaches the drives so no later access reaches a
  reused fd number.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from . import ide as ide_mod
from .i8042 import DATA_PORT, I8042, STATUS_PORT
from .pci import (
    CONFIG_ADDRESS,
    PLATFORM_FIXED_LEN,
    PLATFORM_FIXED_PORT,
    I440fxHost,
    PciBus,
    Piix3IdeFunction,
    Piix3Isa,
    Piix4Acpi,
    XenPlatform,
)
from .uart import COM1_BASE, COM1_IRQ, Uart16550

MAX_STRING_ITEMS = 1 << 16


class IrqSink(Protocol):
    """Implemented by the process around the Machine (it issues dm_ops)."""

    def set_isa_irq_level(self, isa_irq: int, level: int) -> None: ...

    def set_pci_intx_level(self, device: int, intx: int, level: int) -> None: ...

    def set_pci_link_route(self, link: int, isa_irq: int) -> None: ...

    def shutdown(self, reason: str) -> None:
        """``reason`` is "reboot" or "poweroff"."""


class DiskSpec(NamedTuple):
    """An IDE disk: position 0-3 = hda/hdb/hdc/hdd; ``fd`` already open."""

    position: int
    fd: int
    readonly: bool
    size: int


class _Region(NamedTuple):
    read: Callable[[int, int], int]  # (port, size) -> value
    write: Callable[[int, int, int], None]  # (port, size, value)
    sizes: frozenset[int]


_BYTE = frozenset({1})
_ANY = frozenset({1, 2, 4})


class _IdePorts:
    """Port-level adapters of one IDE channel."""

    def __init__(self, channel: ide_mod.Channel, base: int) -> None:
        self.ch = channel
        self.base = base

    def data_read(self, port: int, size: int) -> int:
        return int.from_bytes(self.ch.read_data(size), "little")

    def data_write(self, port: int, size: int, value: int) -> None:
        self.ch.write_data(value.to_bytes(size, "little"))

    def reg_read(self, port: int, size: int) -> int:
        return self.ch.read_reg(port - self.base)

    def reg_write(self, port: int, size: int, value: int) -> None:
        self.ch.write_reg(port - self.base, value)

    def ctl_read(self, port: int, size: int) -> int:
        return self.ch.read_alt_status()

    def ctl_write(self, port: int, size: int, value: int) -> None:
        self.ch.write_control(value)


def _ones(size: int) -> int:
    return (1 << (8 * size)) - 1


class Machine:
    def __init__(
        self, irq: IrqSink, disks: Sequence[DiskSpec], serial_out: Callable[[bytes], None]
    ) -> None:
        self.irq = irq
        self._closed = False
        self._fds: list[int] = []
        seen: set[int] = set()
        for spec in disks:
            if not 0 <= spec.position <= 3 or spec.position in seen:
                raise ValueError(f"bad or duplicate IDE position {spec.position}")
            seen.add(spec.position)

        self.ide = ide_mod.IdeController(irq.set_isa_irq_level)
        for spec in disks:
            self.ide.attach(
                spec.position, ide_mod.Drive(spec.position, spec.fd, spec.readonly, spec.size)
            )
            self._fds.append(spec.fd)
        self.uart = Uart16550(serial_out, lambda level: irq.set_isa_irq_level(COM1_IRQ, level))
        self.kbc = I8042(irq.set_isa_irq_level, self._reboot)

        self.pci = PciBus(self._reboot)
        self.host_bridge = I440fxHost()
        self.isa_bridge = Piix3Isa(irq.set_pci_link_route)
        self.ide_function = Piix3IdeFunction()
        self.acpi = Piix4Acpi()
        self.platform = XenPlatform(self.ide.unplug)
        intx = irq.set_pci_intx_level
        self.pci.add(0, 0, self.host_bridge, intx)
        self.pci.add(1, 0, self.isa_bridge, intx)
        self.pci.add(1, 1, self.ide_function, intx)
        self.pci.add(1, 3, self.acpi, intx)
        self.pci.add(2, 0, self.platform, intx)

        self._ports: dict[int, _Region] = {}
        self._bar_ports: dict[int, _Region] = {}
        self._bar_generation = -1
        self._build_fixed_ports()

    # -- port map --------------------------------------------------------------

    def _claim(self, start: int, length: int, region: _Region) -> None:
        for port in range(start, start + length):
            self._ports[port] = region

    def _build_fixed_ports(self) -> None:
        plat = self.platform
        self._claim(PLATFORM_FIXED_PORT, PLATFORM_FIXED_LEN, _Region(
            lambda p, s: plat.fixed_read(p - PLATFORM_FIXED_PORT, s),
            lambda p, s, v: plat.fixed_write(p - PLATFORM_FIXED_PORT, s, v),
            _ANY,
        ))
        kbc = self.kbc
        kbd = _Region(lambda p, s: kbc.read(p), lambda p, s, v: kbc.write(p, v), _BYTE)
        self._claim(DATA_PORT, 1, kbd)
        self._claim(STATUS_PORT, 1, kbd)
        uart = self.uart
        self._claim(COM1_BASE, 8, _Region(
            lambda p, s: uart.read(p - COM1_BASE),
            lambda p, s, v: uart.write(p - COM1_BASE, v),
            _BYTE,
        ))
        self._claim(CONFIG_ADDRESS, 8, _Region(self.pci.io_read, self.pci.io_write, _ANY))
        self._ide_data: dict[int, ide_mod.Channel] = {}
        for ch, (base, ctl, _irq) in zip(
            self.ide.channels, (ide_mod.IdeController.PRIMARY, ide_mod.IdeController.SECONDARY),
            strict=True,
        ):
            self._ide_data[base] = ch
            ports = _IdePorts(ch, base)
            self._claim(base, 1, _Region(ports.data_read, ports.data_write, _ANY))
            self._claim(base + 1, 7, _Region(ports.reg_read, ports.reg_write, _BYTE))
            self._claim(ctl, 1, _Region(ports.ctl_read, ports.ctl_write, _BYTE))

    def _refresh_bars(self) -> None:
        if self._bar_generation == self.pci.layout_generation:
            return
        self._bar_generation = self.pci.layout_generation
        ports: dict[int, _Region] = {}
        plat_base = self.platform.bar_base(XenPlatform.IO_BAR)
        if plat_base is not None:
            plat = self.platform
            region = _Region(
                lambda p, s: plat.bar_read(p - plat_base, s),
                lambda p, s, v: plat.bar_write(p - plat_base, s, v),
                _ANY,
            )
            for port in range(plat_base, plat_base + 0x100):
                ports[port] = region
        bm_base = self.ide_function.bar_base(Piix3IdeFunction.BM_BAR)
        if bm_base is not None:
            bm = self.ide.busmaster
            region = _Region(
                lambda p, s: bm.read(p - bm_base, s),
                lambda p, s, v: bm.write(p - bm_base, s, v),
                _ANY,
            )
            for port in range(bm_base, bm_base + 16):
                ports[port] = region
        self._bar_ports = ports

    def _region(self, port: int) -> _Region | None:
        region = self._ports.get(port)
        if region is None:
            self._refresh_bars()
            region = self._bar_ports.get(port)
        return region

    def claimed_port_ranges(self) -> list[tuple[int, int]]:
        """Inclusive (first, last) port ranges the Machine answers right now
        (for the process to map into its ioreq server; BARs can move)."""
        self._refresh_bars()
        return _ranges(set(self._ports) | set(self._bar_ports))

    def claimed_mmio_ranges(self) -> list[tuple[int, int]]:
        base = self.platform.bar_base(XenPlatform.MMIO_BAR)
        if base is None:
            return []
        return [(base, base + self.platform.bars[XenPlatform.MMIO_BAR].size - 1)]

    @property
    def layout_generation(self) -> int:
        """Changes whenever a BAR or command register was written."""
        return self.pci.layout_generation

    # -- port I/O ----------------------------------------------------------------

    def pio_read(self, port: int, size: int) -> int:
        if size < 1 or size > 8:
            return _ones(size) if size > 0 else 0
        region = self._region(port)
        if region is not None and size in region.sizes:
            return region.read(port, size) & _ones(size)
        if size == 1:
            return 0xFF
        value = 0
        for i in range(size):
            value |= self.pio_read(port + i, 1) << (8 * i)
        return value

    def pio_write(self, port: int, size: int, value: int) -> None:
        if size < 1 or size > 8:
            return
        value &= _ones(size)
        region = self._region(port)
        if region is not None and size in region.sizes:
            region.write(port, size, value)
            return
        if size == 1:
            return
        for i in range(size):
            self.pio_write(port + i, 1, (value >> (8 * i)) & 0xFF)

    def pio_read_string(self, port: int, size: int, count: int) -> bytes:
        count = max(0, min(count, MAX_STRING_ITEMS))
        if size < 1 or size > 8 or count == 0:
            return b""
        channel = self._ide_data.get(port)
        if channel is not None and size in _ANY:
            return channel.read_data(size * count)
        return b"".join(self.pio_read(port, size).to_bytes(size, "little") for _ in range(count))

    def pio_write_string(self, port: int, size: int, data: bytes) -> None:
        if size < 1 or size > 8:
            return
        count = min(len(data) // size, MAX_STRING_ITEMS)
        channel = self._ide_data.get(port)
        if channel is not None and size in _ANY:
            channel.write_data(bytes(data[: size * count]))
            return
        for i in range(count):
            self.pio_write(port, size, int.from_bytes(data[i * size : (i + 1) * size], "little"))

    # -- MMIO --------------------------------------------------------------------

    def mmio_read(self, addr: int, size: int) -> int:
        if size < 1 or size > 8:
            return _ones(size) if size > 0 else 0
        base = self.platform.bar_base(XenPlatform.MMIO_BAR)
        if base is not None and base <= addr < base + self.platform.bars[1].size:
            return 0
        return _ones(size)

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        """Nothing in this machine takes MMIO writes (the platform BAR drops them)."""

    # -- console and lifetime --------------------------------------------------------

    def serial_input(self, data: bytes) -> None:
        self.uart.input(bytes(data))

    def _reboot(self) -> None:
        self.irq.shutdown("reboot")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for drive in self.ide.drives():
            if not drive.readonly:
                with contextlib.suppress(OSError):
                    os.fsync(drive.fd)
        self.ide.unplug(keep_primary_master=False)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def _ranges(ports: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for port in sorted(ports):
        if out and out[-1][1] == port - 1:
            out[-1] = (out[-1][0], port)
        else:
            out.append((port, port))
    return out
