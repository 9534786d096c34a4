"""A fake domain for the HVM platform devices (hv/platform): fake clock, timers, LAPICs."""

from __future__ import annotations

from collections.abc import Callable

from lapic_fakes import Rig

from pyxen.hv.platform import Platform
from pyxen.hv.timers import Timer

WALL_NS = 1_700_000_000 * 1_000_000_000  # 2023-11-14 22:13:20 UTC
MIB = 1 << 20


class FakePlatformHost:
    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.lapic_bus = rig.bus
        self.kicks: list[int] = []
        self.poweroffs = 0
        self.resets = 0
        self.params: dict[int, int] = {}
        self.logs: list[str] = []

    def now_ns(self) -> int:
        return self.rig.clock.now

    def wall_ns(self) -> int:
        return WALL_NS

    def timer(self, callback: Callable[[], None]) -> Timer:
        return self.rig.timers.timer(callback)

    def kick(self, vcpu_id: int) -> None:
        self.kicks.append(vcpu_id)

    def poweroff(self) -> None:
        self.poweroffs += 1

    def reset(self) -> None:
        self.resets += 1

    def param(self, index: int) -> int:
        return self.params.get(index, 0)

    def log_once(self, key: str, message: str) -> None:
        self.logs.append(message)


def make_platform(vcpus: int = 1, location: int = 1, ram_below_4g: int = 256 * MIB,
                  ram_above_4g: int = 0) -> tuple[Rig, FakePlatformHost, Platform]:
    rig = Rig(vcpus)
    host = FakePlatformHost(rig)
    host.params[19] = location
    platform = Platform(host, vcpus=vcpus, ram_below_4g=ram_below_4g,
                        ram_above_4g=ram_above_4g)
    return rig, host, platform


def init_pics(p: Platform, master_base: int = 0x08, slave_base: int = 0x70,
              master_mask: int = 0x00, slave_mask: int = 0x00) -> None:
    """The usual BIOS initialisation of both 8259s (cascade on IRQ 2)."""
    for port, base, icw3 in ((0x20, master_base, 0x04), (0xA0, slave_base, 0x02)):
        p.pio_write(port, 1, 0x11)
        p.pio_write(port + 1, 1, base)
        p.pio_write(port + 1, 1, icw3)
        p.pio_write(port + 1, 1, 0x01)
    p.pio_write(0x21, 1, master_mask)
    p.pio_write(0xA1, 1, slave_mask)


def ioapic_write(p: Platform, index: int, value: int) -> None:
    p.mmio_write(0xFEC00000, 4, index)
    p.mmio_write(0xFEC00010, 4, value)


def ioapic_read(p: Platform, index: int) -> int:
    p.mmio_write(0xFEC00000, 4, index)
    return p.mmio_read(0xFEC00010, 4)


def route(p: Platform, pin: int, low: int, dest: int = 0) -> None:
    ioapic_write(p, 0x11 + 2 * pin, dest << 24)
    ioapic_write(p, 0x10 + 2 * pin, low)
