"""The HVM platform devices Xen emulates inside the hypervisor (hv/platform).

``Platform`` owns one domain's 8259 pair and ELCR (pic), IOAPIC (ioapic),
PIT and port 0x61 (pit), RTC/CMOS (rtc), ACPI PM1a/PM timer (pmtimer),
port 0x92 (misc) and the routing of ISA IRQs, PCI INTx and PCI links onto
the PIC and IOAPIC (irq).  The modules are pure models; this class maps
ports and the IOAPIC window to them, connects them to the domain's LAPICs
(``LapicBus``) and timers, and serialises everything with one lock.  The
vCPU exit path calls ``claims_port``/``pio_*`` and ``claims_mmio``/
``mmio_*``; injection on vCPU 0 calls ``ext_int_pending``/
``ext_int_acknowledge``; the device model's dm_ops call ``set_*``.

Port accesses: a 2- or 4-byte access to the byte-wide devices is split
into byte accesses of consecutive ports, little-endian (an ISA bus does
the same); a byte nobody here claims reads 0xFF and its write is dropped.
The PM block takes wide accesses itself (the timer must be read at once).

ExtINT (Xen's vlapic_accept_pic_intr): the 8259's INTR reaches vCPU 0
only, when its LAPIC is absent or hardware-disabled, or LVT0 is unmasked
ExtINT, or IOAPIC pin 0 is unmasked ExtINT with vCPU 0 among its
destinations (hvmloader's virtual wire).  When INTR rises and vCPU 0
accepts it, ``host.kick(0)`` makes the vCPU look; so does an IOAPIC
write while INTR is up (the guest may just have opened the wire).

Locking: ``_lock`` guards all device state; the timer callbacks take it
too, and nothing runs after ``close``.  Lock order: the platform lock,
then a LAPIC's lock (IOAPIC delivery) or the domain's lock (an NMI or
INIT delivered by the IOAPIC goes through the vCPU), so the host must
never call into the Platform while holding the domain's lock (nor an APIC
lock).  The LAPIC calls
the EOI hook with no APIC lock held.  ``ext_int_pending`` reads the PIC
output without the lock (a stale answer is settled by the INTA, which
takes it and reports None if nothing is pending any more).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from pyxen.hv.lapic import SH_NONE, Lapic, LapicBus
from pyxen.hv.platform import pmtimer
from pyxen.hv.platform.ioapic import DM_EXTINT, IOAPIC_BASE, IOAPIC_WINDOW, IoApic
from pyxen.hv.platform.irq import IrqRouter
from pyxen.hv.platform.misc import Port92
from pyxen.hv.platform.pic import PicPair
from pyxen.hv.platform.pit import Pit
from pyxen.hv.platform.rtc import Rtc
from pyxen.hv.timers import Timer

HVM_PARAM_ACPI_IOPORTS_LOCATION = 19
PIC_PORTS = (0x20, 0x21, 0xA0, 0xA1)
ELCR_PORTS = (0x4D0, 0x4D1)
PIT_PORTS = (0x40, 0x41, 0x42, 0x43)
PORT_61, RTC_INDEX, RTC_DATA, PORT_92 = 0x61, 0x70, 0x71, 0x92
ISA_IRQ_PIT, ISA_IRQ_RTC, ISA_IRQ_SCI = 0, 8, 9


class PlatformHost(Protocol):
    """What the platform needs from its domain (implemented on the Domain)."""

    @property
    def lapic_bus(self) -> LapicBus:
        """The domain's LAPICs (IOAPIC delivery, EOI hook, vCPU 0's LVT0)."""

    def now_ns(self) -> int:
        """The hypervisor's system time (the clock its timers use)."""

    def wall_ns(self) -> int:
        """Unix time in ns, read once: the RTC's starting date."""

    def timer(self, callback: Callable[[], None]) -> Timer:
        """A timer of the hypervisor's timer service."""

    def kick(self, vcpu_id: int) -> None:
        """The PIC's INTR changed for this vCPU: re-evaluate injection."""

    def poweroff(self) -> None:
        """ACPI S5 (PM1a_CNT): power the domain off."""

    def reset(self) -> None:
        """Port 0x92 fast reset: reboot the domain."""

    def param(self, index: int) -> int:
        """An HVM param's current value (read at construction)."""

    def log_once(self, key: str, message: str) -> None: ...


class Platform:
    def __init__(self, host: PlatformHost, *, vcpus: int, ram_below_4g: int,
                 ram_above_4g: int) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._closed = False
        self.bus = host.lapic_bus
        self.pic = PicPair(on_raise=self._pic_raised)
        self.ioapic = IoApic(self._deliver)
        self.router = IrqRouter(self.pic.set_irq, self.ioapic.set_irq)
        self.pit = Pit(host.now_ns, self._timer, self._isa_line(ISA_IRQ_PIT),
                       self._irq0_masked)
        self.rtc = Rtc(host.now_ns, host.wall_ns(), self._timer, self._isa_line(ISA_IRQ_RTC),
                       vcpus=vcpus, ram_below_4g=ram_below_4g, ram_above_4g=ram_above_4g)
        self.pm = pmtimer.PmTimer(host.now_ns, self._timer, self._isa_line(ISA_IRQ_SCI),
                                  host.poweroff, host.log_once)
        self.port92 = Port92(host.reset)
        self._byte_read: dict[int, Callable[[int], int]] = {}
        self._byte_write: dict[int, Callable[[int, int], None]] = {}
        for port in PIC_PORTS:
            self._byte_read[port] = self.pic.read_port
            self._byte_write[port] = self._write_pic
        for port in ELCR_PORTS:
            self._byte_read[port] = self.pic.read_elcr
            self._byte_write[port] = self._write_elcr
        for port in PIT_PORTS:
            self._byte_read[port] = self.pit.read_port
            self._byte_write[port] = self.pit.write_port
        self._byte_read[PORT_61] = lambda _port: self.pit.read_61()
        self._byte_write[PORT_61] = lambda _port, value: self.pit.write_61(value)
        self._byte_read[RTC_INDEX] = lambda _port: 0xFF
        self._byte_write[RTC_INDEX] = lambda _port, value: self.rtc.write_index(value)
        self._byte_read[RTC_DATA] = lambda _port: self.rtc.read_data()
        self._byte_write[RTC_DATA] = lambda _port, value: self.rtc.write_data(value)
        self._byte_read[PORT_92] = lambda _port: self.port92.read()
        self._byte_write[PORT_92] = lambda _port, value: self.port92.write(value)
        self.pm_base = 0
        self._pm_ports: frozenset[int] = frozenset()
        self._ports: frozenset[int] = frozenset()
        self._place_pm(host.param(HVM_PARAM_ACPI_IOPORTS_LOCATION))
        self.bus.eoi_hook = self._eoi

    # -- wiring ---------------------------------------------------------------------------

    def _timer(self, callback: Callable[[], None]) -> Timer:
        def locked() -> None:
            with self._lock:
                if not self._closed:
                    callback()
        return self.host.timer(locked)

    def _isa_line(self, isa_irq: int) -> Callable[[int], None]:
        """A device's own ISA IRQ output (called with the lock held)."""
        def set_level(level: int) -> None:
            self.router.set_isa_irq_level(isa_irq, level)
        return set_level

    def _place_pm(self, location: int) -> None:
        base = pmtimer.block_base(location)
        self.pm_base = base
        self._pm_ports = frozenset(
            [*range(base, base + pmtimer.CNT_OFFSET + pmtimer.CNT_LEN),
             *range(base + pmtimer.TMR_OFFSET, base + pmtimer.TMR_OFFSET + pmtimer.TMR_LEN)])
        self._ports = frozenset(self._byte_read) | self._pm_ports

    def set_param(self, index: int, value: int) -> None:
        """The domain's HVM param ``index`` changed (the PM block follows param 19)."""
        if index == HVM_PARAM_ACPI_IOPORTS_LOCATION:
            with self._lock:
                self._place_pm(value)

    def _lapic0(self) -> Lapic | None:
        for lapic in self.bus.lapics:
            if lapic.vcpu_id == 0:
                return lapic
        return None

    def _accepts_pic(self) -> bool:
        """vCPU 0 takes the 8259's INTR (see the module docstring)."""
        lapic = self._lapic0()
        if lapic is None or lapic.accepts_pic():
            return True
        entry = self.ioapic.redir[0]
        if (entry >> 8) & 7 != DM_EXTINT or self.ioapic.masked(0):
            return False
        return lapic.matches(lapic, SH_NONE, entry >> 56, bool(entry & (1 << 11)))

    def _pic_raised(self) -> None:
        if self._accepts_pic():
            self.host.kick(0)

    def _deliver(self, dest: int, logical: bool, mode: int, vector: int, level: bool) -> None:
        if mode == DM_EXTINT:
            if self.pic.int_output and self._accepts_pic():
                self.host.kick(0)
            return
        self.bus.deliver_irq(dest, logical, mode, vector, level)

    def _eoi(self, vector: int) -> None:
        with self._lock:
            if not self._closed:
                self.ioapic.eoi(vector)

    def _irq0_masked(self) -> bool:
        return self.pic.line_masked(ISA_IRQ_PIT) and self.ioapic.masked(2)

    def _write_pic(self, port: int, value: int) -> None:
        self.pic.write_port(port, value)
        self.pit.unmasked()

    def _write_elcr(self, port: int, value: int) -> None:
        self.pic.write_elcr(port, value)

    # -- the vCPU exit path ---------------------------------------------------------------

    def claims_port(self, port: int) -> bool:
        return port in self._ports

    def pio_read(self, port: int, size: int) -> int:
        """Read ``size`` (1, 2 or 4) bytes at ``port``; unclaimed bytes read as ones."""
        if size not in (1, 2, 4):
            size = max(1, min(size, 4))
        with self._lock:
            if port in self._pm_ports:
                return self.pm.read(port - self.pm_base, size)
            value = 0
            for i in range(size):
                read = self._byte_read.get(port + i)
                byte = read(port + i) & 0xFF if read is not None else 0xFF
                value |= byte << (8 * i)
            return value

    def pio_write(self, port: int, size: int, value: int) -> None:
        if size not in (1, 2, 4):
            size = max(1, min(size, 4))
        with self._lock:
            if self._closed:
                return
            if port in self._pm_ports:
                self.pm.write(port - self.pm_base, size, value)
                return
            for i in range(size):
                write = self._byte_write.get(port + i)
                if write is not None:
                    write(port + i, (value >> (8 * i)) & 0xFF)

    def claims_mmio(self, gpa: int) -> bool:
        return IOAPIC_BASE <= gpa < IOAPIC_BASE + IOAPIC_WINDOW

    def mmio_read(self, gpa: int, size: int) -> int:
        with self._lock:
            return self.ioapic.mmio_read(gpa - IOAPIC_BASE, size)

    def mmio_write(self, gpa: int, size: int, value: int) -> None:
        with self._lock:
            if self._closed:
                return
            self.ioapic.mmio_write(gpa - IOAPIC_BASE, size, value)
            self.pit.unmasked()
            if self.pic.int_output and self._accepts_pic():
                self.host.kick(0)

    # -- the device model's interrupt lines (dm_op) ---------------------------------------

    def set_isa_irq_level(self, isa_irq: int, level: int) -> None:
        with self._lock:
            if not self._closed and not self.router.set_isa_irq_level(isa_irq, level):
                self.host.log_once("platform-isa-irq", f"ignoring ISA IRQ {isa_irq}")

    def set_pci_intx_level(self, device: int, intx: int, level: int) -> None:
        with self._lock:
            if not self._closed and not self.router.set_pci_intx_level(device, intx, level):
                self.host.log_once("platform-intx", f"ignoring PCI INTx {device}/{intx}")

    def set_pci_link_route(self, link: int, isa_irq: int) -> None:
        with self._lock:
            if not self._closed and not self.router.set_pci_link_route(link, isa_irq):
                self.host.log_once("platform-link", f"ignoring PCI link {link} -> {isa_irq}")

    # -- ExtINT -------------------------------------------------------------------------

    def ext_int_pending(self, vcpu_id: int) -> bool:
        """The 8259's INTR is up and ``vcpu_id`` (only 0 can) accepts it."""
        if vcpu_id != 0 or not self.pic.int_output:
            return False
        with self._lock:
            return self.pic.int_output and self._accepts_pic()

    def ext_int_acknowledge(self) -> int | None:
        """The INTA cycle: the vector to inject, None if INTR has dropped meanwhile."""
        with self._lock:
            if self._closed or not self.pic.int_output:
                return None
            return self.pic.acknowledge()

    def close(self) -> None:
        """Cancel every timer; later accesses read as before but change nothing."""
        with self._lock:
            self._closed = True
            self.pit.close()
            self.rtc.close()
            self.pm.close()
            if self.bus.eoi_hook == self._eoi:
                self.bus.eoi_hook = None
