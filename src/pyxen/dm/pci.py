"""PCI bus 0 of a qemu-xen i440FX guest: config mechanism #1 and its functions.

Design:
- ``PciFunction`` holds a 256-byte configuration space and a per-byte write
  mask; a config write merges ``(old & ~mask) | (new & mask)`` byte by byte,
  so read-only fields, unimplemented BARs (mask 0) and BAR sizing need no
  special code: writing all ones to a BAR reads back its size mask plus the
  type bits, because the low ``log2(size)`` address bits are not writable.
  Subclasses react to writes in ``after_write`` (the PIRQ router does).
- ``PciBus`` decodes 0xCF8 (dword address register, bit 31 enable; bus 0
  only, other buses read all ones) and 0xCFC-0xCFF (byte, word or dword at
  any offset within the dword); 0xCF9 is the PIIX3 reset control register
  (bit 2 set -> reboot).  A write to a BAR or the command register bumps
  ``layout_generation`` so the ``Machine`` knows to re-read BAR decoding.
- Functions present (IDs as qemu-xen presents them, hvmloader asserts the
  ISA bridge and ACPI ones): 00:00.0 i440FX 8086:1237, 00:01.0 PIIX3 ISA
  8086:7000 (multifunction), 00:01.1 PIIX3 IDE 8086:7010, 00:01.3 PIIX4 ACPI
  8086:7113, 00:02.0 Xen platform 5853:0001.
- Device-specific space 0x40-0xFF is writable storage on every function
  (PAM/SMRAM on the host bridge, IDETIM on IDE, PM base on ACPI); nothing
  behind it is emulated except the PIIX3 PIRQ routes.

The Xen platform device (facts from QEMU's xen_platform.c and Xen's
docs/misc/hvm-emulated-unplug.pandoc): fixed ports 0x10-0x1F: 16-bit read
at 0x10 = magic 0x49D2, byte read at 0x12 = protocol version 1, byte read at
0x10 = platform flags; 16-bit write at 0x10 = unplug mask (bit 0 all IDE
disks, bit 1 NICs, bit 2 IDE disks except the primary master, bit 3 NVMe),
16-bit write at 0x12 = driver product number, 32-bit write at 0x10 = build
number, byte write at 0x12 = a log byte, byte write at 0x10 = flags (ROM
lock; recorded only).  Its BAR0 (256 I/O ports) answers byte accesses only:
offset 0 = flags (read/write), offset 8 = log byte (write); everything else
reads all ones.  BAR1 (16 MiB prefetchable memory) reads 0 and ignores
writes: Xen maps the grant table and shared info over it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

VENDOR_ID = 0x00
COMMAND = 0x04
STATUS = 0x06
REVISION = 0x08
HEADER_TYPE = 0x0E
BAR0 = 0x10
SUBSYS_VENDOR = 0x2C
ROM_BAR = 0x30
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D

CMD_IO = 0x1
CMD_MEMORY = 0x2
CMD_MASTER = 0x4

CONFIG_ADDRESS = 0xCF8
RESET_CONTROL = 0xCF9
CONFIG_DATA = 0xCFC


@dataclass(frozen=True)
class Bar:
    """One 32-bit BAR: ``size`` is a power of two; ``io`` selects I/O space."""

    size: int
    io: bool
    prefetch: bool = False


class PciFunction:
    """A type-0 PCI function: config space, write masks, BARs, INTx pin."""

    def __init__(
        self,
        vendor: int,
        device: int,
        class_code: int,
        revision: int = 0,
        header_type: int = 0,
        subsystem: tuple[int, int] = (0, 0),
        pin: int = 0,
    ) -> None:
        self.config = bytearray(256)
        self.wmask = bytearray(256)
        self.bars: dict[int, Bar] = {}
        # Set by the bus: called with a level for this function's INTx pin.
        self.irq_hook: Callable[[int], None] | None = None
        cfg = self.config
        cfg[0:2] = vendor.to_bytes(2, "little")
        cfg[2:4] = device.to_bytes(2, "little")
        cfg[REVISION] = revision
        cfg[0x09:0x0C] = class_code.to_bytes(3, "little")
        cfg[HEADER_TYPE] = header_type
        cfg[SUBSYS_VENDOR : SUBSYS_VENDOR + 2] = subsystem[0].to_bytes(2, "little")
        cfg[SUBSYS_VENDOR + 2 : SUBSYS_VENDOR + 4] = subsystem[1].to_bytes(2, "little")
        cfg[INTERRUPT_PIN] = pin
        # Command: I/O, memory, bus master, SERR#, INTx disable.
        self.wmask[COMMAND] = 0x07
        self.wmask[COMMAND + 1] = 0x05
        self.wmask[0x0C] = 0xFF  # cache line size
        self.wmask[0x0D] = 0xFF  # latency timer
        self.wmask[INTERRUPT_LINE] = 0xFF
        for off in range(0x40, 0x100):
            self.wmask[off] = 0xFF

    # -- set-up ------------------------------------------------------------

    def add_bar(self, index: int, bar: Bar) -> None:
        self.bars[index] = bar
        off = BAR0 + 4 * index
        low = 0x1 if bar.io else (0x8 if bar.prefetch else 0x0)
        mask = ~(bar.size - 1) & (0xFFFFFFFC if bar.io else 0xFFFFFFF0)
        self.config[off : off + 4] = low.to_bytes(4, "little")
        self.wmask[off : off + 4] = mask.to_bytes(4, "little")

    # -- config access -----------------------------------------------------

    def config_read(self, offset: int, size: int) -> int:
        data = self.config[offset : offset + size]
        if len(data) < size:
            data += b"\xff" * (size - len(data))
        return int.from_bytes(data, "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        cfg, wm = self.config, self.wmask
        end = min(offset + size, 256)
        for off in range(offset, end):
            byte = (value >> (8 * (off - offset))) & 0xFF
            m = wm[off]
            cfg[off] = (cfg[off] & ~m & 0xFF) | (byte & m)
        if end > offset:
            self.after_write(offset, end - offset)

    def after_write(self, offset: int, size: int) -> None:
        """Hook for subclasses: bytes [offset, offset+size) were written."""

    # -- helpers -----------------------------------------------------------

    @property
    def command(self) -> int:
        return self.config[COMMAND] | (self.config[COMMAND + 1] << 8)

    def bar_base(self, index: int) -> int | None:
        """Where BAR ``index`` decodes now, or None (unassigned or disabled)."""
        bar = self.bars.get(index)
        if bar is None:
            return None
        off = BAR0 + 4 * index
        raw = int.from_bytes(self.config[off : off + 4], "little")
        if bar.io:
            base = raw & 0xFFFFFFFC
            if not self.command & CMD_IO or base == 0 or base + bar.size > 0x10000:
                return None
        else:
            base = raw & 0xFFFFFFF0
            if not self.command & CMD_MEMORY or base == 0 or base + bar.size > 1 << 32:
                return None
        return base

    def set_irq(self, level: int) -> None:
        """Drive this function's INTx pin (no-op without a pin or a bus)."""
        if self.config[INTERRUPT_PIN] and self.irq_hook is not None:
            self.irq_hook(1 if level else 0)


class I440fxHost(PciFunction):
    """00:00.0: the i440FX host bridge (PAM 0x59-0x5F and SMRAM 0x72 stored)."""

    def __init__(self) -> None:
        super().__init__(0x8086, 0x1237, 0x060000, revision=0x02)
        self.config[0x72] = 0x02  # SMRAM: C_BASE_SEG fixed at 010b


class Piix3Isa(PciFunction):
    """00:01.0: the PIIX3 PCI-to-ISA bridge and PIRQ router (0x60-0x63)."""

    def __init__(self, route_link: Callable[[int, int], None]) -> None:
        super().__init__(0x8086, 0x7000, 0x060100, header_type=0x80)
        self._route_link = route_link
        for link in range(4):
            self.config[0x60 + link] = 0x80  # routing disabled
        self.config[0x4C] = 0x4D  # ISA I/O recovery timer
        self.config[0x4E] = 0x03  # X-bus chip select
        self.config[0x69] = 0x02  # top of memory

    def after_write(self, offset: int, size: int) -> None:
        for off in range(max(offset, 0x60), min(offset + size, 0x64)):
            value = self.config[off]
            self._route_link(off - 0x60, 0 if value & 0x80 else value & 0x0F)


class Piix3IdeFunction(PciFunction):
    """00:01.1: PIIX3 IDE, legacy mode (prog-if 0x80), BAR4 = bus master."""

    BM_BAR = 4

    def __init__(self) -> None:
        super().__init__(0x8086, 0x7010, 0x010180)
        self.add_bar(self.BM_BAR, Bar(16, io=True))
        self.config[STATUS + 1] = 0x02  # DEVSEL medium


class Piix4Acpi(PciFunction):
    """00:01.3: PIIX4 power management; registers are stored only (the PM
    block itself is emulated in the hypervisor)."""

    def __init__(self) -> None:
        super().__init__(0x8086, 0x7113, 0x068000, revision=0x03, pin=1)


UNPLUG_IDE_DISKS = 0x1
UNPLUG_NICS = 0x2
UNPLUG_AUX_IDE_DISKS = 0x4
UNPLUG_NVME_DISKS = 0x8

PLATFORM_MAGIC = 0x49D2
PLATFORM_VERSION = 1
PLATFORM_FIXED_PORT = 0x10
PLATFORM_FIXED_LEN = 16
LOG_LINE_MAX = 256
LOG_LINES_KEPT = 64


class XenPlatform(PciFunction):
    """00:02.0: the Xen platform device and its fixed unplug ports."""

    IO_BAR = 0
    MMIO_BAR = 1

    def __init__(self, unplug_disks: Callable[[bool], None]) -> None:
        super().__init__(
            0x5853, 0x0001, 0xFF8000, revision=1, subsystem=(0x5853, 0x0001), pin=1
        )
        self.add_bar(self.IO_BAR, Bar(0x100, io=True))
        self.add_bar(self.MMIO_BAR, Bar(0x1000000, io=False, prefetch=True))
        self.config[COMMAND] = CMD_IO | CMD_MEMORY
        self._unplug_disks = unplug_disks
        self.flags = 0
        self.unplugged = 0  # every unplug bit the guest ever wrote
        self.product = 0
        self.build = 0
        self.log_lines: deque[bytes] = deque(maxlen=LOG_LINES_KEPT)
        self._log = bytearray()

    # -- fixed ports 0x10-0x1F ---------------------------------------------

    def fixed_read(self, offset: int, size: int) -> int:
        if size == 2 and offset == 0:
            return PLATFORM_MAGIC
        if size == 1 and offset == 0:
            return self.flags
        if size == 1 and offset == 2:
            return PLATFORM_VERSION
        return (1 << (8 * size)) - 1

    def fixed_write(self, offset: int, size: int, value: int) -> None:
        if size == 2 and offset == 0:
            self.unplug(value)
        elif size == 2 and offset == 2:
            self.product = value
        elif size == 4 and offset == 0:
            self.build = value
        elif size == 1 and offset == 0:
            self.flags = value & 0x1
        elif size == 1 and offset == 2:
            self._log_byte(value)

    # -- BAR0 ----------------------------------------------------------------

    def bar_read(self, offset: int, size: int) -> int:
        if size == 1 and offset == 0:
            return self.flags
        return (1 << (8 * size)) - 1

    def bar_write(self, offset: int, size: int, value: int) -> None:
        if size != 1:
            return
        if offset == 0:
            self.flags = value & 0x1
        elif offset == 8:
            self._log_byte(value)

    # -- behaviour -----------------------------------------------------------

    def unplug(self, mask: int) -> None:
        self.unplugged |= mask & 0xF
        if mask & UNPLUG_IDE_DISKS:
            self._unplug_disks(False)
        elif mask & UNPLUG_AUX_IDE_DISKS:
            self._unplug_disks(True)

    def _log_byte(self, value: int) -> None:
        if value == 0x0A or len(self._log) >= LOG_LINE_MAX:
            self.log_lines.append(bytes(self._log))
            self._log.clear()
        if value != 0x0A:
            self._log.append(value & 0xFF)


class PciBus:
    """Bus 0 and configuration mechanism #1 on ports 0xCF8-0xCFF."""

    def __init__(self, reset: Callable[[], None]) -> None:
        self.functions: dict[int, PciFunction] = {}  # devfn -> function
        self.address = 0
        self.reset_control = 0
        self.layout_generation = 0
        self._reset = reset

    def add(self, device: int, function: int, fn: PciFunction,
            intx: Callable[[int, int, int], None]) -> None:
        self.functions[(device << 3) | function] = fn

        def hook(level: int) -> None:
            intx(device, fn.config[INTERRUPT_PIN] - 1, level)

        fn.irq_hook = hook

    def _target(self) -> tuple[PciFunction, int] | None:
        addr = self.address
        if not addr & 0x80000000 or (addr >> 16) & 0xFF:
            return None
        fn = self.functions.get((addr >> 8) & 0xFF)
        if fn is None:
            return None
        return fn, addr & 0xFC

    def io_read(self, port: int, size: int) -> int:
        if port == CONFIG_ADDRESS and size == 4:
            return self.address
        if port == RESET_CONTROL and size == 1:
            return self.reset_control
        if CONFIG_DATA <= port <= CONFIG_DATA + 3:
            target = self._target()
            if target is not None:
                fn, reg = target
                return fn.config_read(reg + port - CONFIG_DATA, size)
        return (1 << (8 * size)) - 1

    def io_write(self, port: int, size: int, value: int) -> None:
        if port == CONFIG_ADDRESS and size == 4:
            self.address = value & 0x80FFFFFC
        elif port == RESET_CONTROL and size == 1:
            self.reset_control = value & 0x02
            if value & 0x04:
                self._reset()
        elif CONFIG_DATA <= port <= CONFIG_DATA + 3:
            target = self._target()
            if target is None:
                return
            fn, reg = target
            offset = reg + port - CONFIG_DATA
            fn.config_write(offset, size, value)
            if offset < ROM_BAR + 4 and offset + size > COMMAND:
                self.layout_generation += 1
