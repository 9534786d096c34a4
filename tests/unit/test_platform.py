"""The HVM platform as a whole (hv/platform/__init__.py): ports, wiring to the LAPICs,
ExtINT, dm_op lines, and vCPU 0's injection of the 8259's vector (lapic_vcpu)."""

from __future__ import annotations

import importlib.util
import random
import sys
import types
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from lapic_fakes import Rig, enable, take, write
from platform_fakes import FakePlatformHost, init_pics, ioapic_read, make_platform, route

from pyxen.hv import lapic as la
from pyxen.hv.platform import Platform
from pyxen.hv.platform import pit as pt
from pyxen.hv.platform import pmtimer as pm
from pyxen.hv.platform.ioapic import LEVEL, MASKED

if TYPE_CHECKING:
    from pyxen.hv.lapic_vcpu import VcpuApic

EXTINT = la.DM_EXTINT << 8
PIT_10MS = 11932


def ns_for(counts: int) -> int:
    return -(-counts * pt.NS // pt.PIT_HZ)


def start_pit(p: Any, count: int = PIT_10MS) -> None:
    p.pio_write(0x43, 1, 0x34)  # channel 0, LSB+MSB, mode 2
    p.pio_write(0x40, 1, count & 0xFF)
    p.pio_write(0x40, 1, count >> 8)


def test_claims_ports_and_the_ioapic_window() -> None:
    _rig, _host, p = make_platform(location=1)
    for port in (0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x40, 0x43, 0x61, 0x70, 0x71, 0x92,
                 0xB000, 0xB003, 0xB004, 0xB005, 0xB008, 0xB00B):
        assert p.claims_port(port), hex(port)
    for port in (0x3F8, 0x60, 0x64, 0xCF8, 0xB006, 0xB00C, 0x1F40, 0x402):
        assert not p.claims_port(port), hex(port)
    p.set_param(19, 0)
    assert p.claims_port(0x1F48) and not p.claims_port(0xB008)
    assert p.claims_mmio(0xFEC00000) and p.claims_mmio(0xFEC000FF)
    assert not p.claims_mmio(0xFEC00100) and not p.claims_mmio(0xFEE00000)
    assert p.mmio_read(0xFEC00000 + 0x10, 4) == 0  # IOREGSEL 0: the ID, 0
    assert ioapic_read(p, 1) == 0x002F0011


def test_wide_accesses_split_into_bytes_with_ones_for_unclaimed() -> None:
    _rig, _host, p = make_platform()
    assert p.pio_read(0x92, 1) == 0x02
    assert p.pio_read(0x92, 2) == 0xFF02
    assert p.pio_read(0x92, 4) == 0xFFFFFF02
    p.pio_write(0x20, 2, 0x0011)  # ICW1 to 0x20, then ICW2 0x00 to 0x21
    assert p.pic.master.init_state == 2 and p.pic.master.irq_base == 0


def test_pit_tick_reaches_vcpu0_through_lvt0_extint() -> None:
    rig, host, p = make_platform()
    a = rig.apics[0]
    enable(a)
    write(a, la.LVT0, EXTINT)
    init_pics(p, master_base=0x08, master_mask=0xFE)
    start_pit(p)
    assert not p.ext_int_pending(0)
    rig.advance(ns_for(PIT_10MS))
    assert host.kicks == [0]
    assert p.ext_int_pending(0) and not p.ext_int_pending(1)
    assert p.ext_int_acknowledge() == 0x08
    assert not p.ext_int_pending(0) and p.ext_int_acknowledge() is None
    p.pio_write(0x20, 1, 0x20)  # EOI
    rig.advance(ns_for(PIT_10MS))
    assert p.ext_int_acknowledge() == 0x08


def test_hvmloader_virtual_wire_through_ioapic_pin0() -> None:
    rig, host, p = make_platform()
    a = rig.apics[0]
    enable(a)
    write(a, la.LVT0, la.LVT_MASKED | EXTINT)  # 0x10700, as hvmloader leaves it
    init_pics(p, master_mask=0xFE)
    p.set_isa_irq_level(0, 1)
    assert p.pic.int_output and not p.ext_int_pending(0)
    route(p, 0, EXTINT, dest=0)  # pin 0 ExtINT, physical destination APIC 0
    assert p.ext_int_pending(0)
    assert host.kicks == [0]  # opening the wire with INTR up kicks vCPU 0
    route(p, 0, EXTINT, dest=2)  # another APIC
    assert not p.ext_int_pending(0)
    route(p, 0, EXTINT | MASKED, dest=0)
    assert not p.ext_int_pending(0)


def test_disabled_lapic_passes_intr_through() -> None:
    rig, _host, p = make_platform()
    init_pics(p)
    p.set_isa_irq_level(4, 1)
    a = rig.apics[0]
    assert not p.ext_int_pending(0)  # enabled APIC, LVT0 masked at reset
    assert a.wrmsr(la.MSR_IA32_APICBASE, a.apic_base & ~la.APIC_BASE_ENABLE)
    assert p.ext_int_pending(0)
    assert p.ext_int_acknowledge() == 0x0C


def test_pit_in_apic_mode_delivers_on_gsi2_and_parks_when_masked() -> None:
    rig, _host, p = make_platform()
    a = rig.apics[0]
    enable(a)
    init_pics(p, master_mask=0xFF, slave_mask=0xFF)
    route(p, 2, 0x30)
    start_pit(p)
    for _ in range(3):
        rig.advance(ns_for(PIT_10MS))
        assert take(a) == 0x30
        write(a, la.EOI, 0)
    route(p, 2, 0x30 | MASKED)
    rig.advance(ns_for(PIT_10MS))
    assert p.pit.parked
    assert rig.timers.next_deadline() is None  # the host is not woken for a masked line
    route(p, 2, 0x30)
    rig.advance(ns_for(PIT_10MS))
    assert take(a) == 0x30


def test_pci_intx_level_through_ioapic_eoi_and_redelivery() -> None:
    rig, _host, p = make_platform()
    a = rig.apics[0]
    enable(a)
    gsi = 16 + ((3 << 2) + 0) % 32  # device 3 INTA
    route(p, gsi, LEVEL | 0x61)
    p.set_pci_intx_level(3, 0, 1)
    assert take(a) == 0x61 and a.tmr & (1 << 0x61)
    write(a, la.EOI, 0)  # still asserted: delivered again
    assert take(a) == 0x61
    p.set_pci_intx_level(3, 0, 0)
    write(a, la.EOI, 0)
    assert a.irr == 0 and not ioapic_read(p, 0x10 + 2 * gsi) & (1 << 14)


def test_pci_link_routed_to_pic_level_line() -> None:
    rig, _host, p = make_platform()
    a = rig.apics[0]
    enable(a)
    write(a, la.LVT0, EXTINT)
    init_pics(p)
    p.pio_write(0x4D1, 1, 0x04)  # IRQ 10 level
    p.set_pci_link_route(1, 10)
    p.set_pci_intx_level(1, 0, 1)  # link (1 + 0) & 3 = 1
    assert p.ext_int_acknowledge() == 0x72
    p.pio_write(0xA0, 1, 0x20)
    p.pio_write(0x20, 1, 0x20)
    assert p.ext_int_acknowledge() == 0x72  # level: requested again
    p.set_pci_link_route(1, 0)
    p.pio_write(0xA0, 1, 0x20)
    p.pio_write(0x20, 1, 0x20)
    assert not p.ext_int_pending(0)


def test_rtc_update_interrupt_on_gsi8() -> None:
    rig, _host, p = make_platform()
    a = rig.apics[0]
    enable(a)
    route(p, 8, 0x38)
    p.pio_write(0x70, 1, 0x0B)
    p.pio_write(0x71, 1, 0x12)  # 24h, UIE
    rig.advance(10**9)
    assert take(a) == 0x38
    write(a, la.EOI, 0)
    p.pio_write(0x70, 1, 0x0C)
    assert p.pio_read(0x71, 1) & 0x90 == 0x90
    rig.advance(10**9)
    assert take(a) == 0x38


def test_cmos_memory_bytes_through_the_ports() -> None:
    _rig, _host, p = make_platform(vcpus=2, ram_below_4g=128 << 20)
    p.pio_write(0x70, 1, 0x34)
    assert p.pio_read(0x71, 1) == ((128 - 16) * 16) & 0xFF
    p.pio_write(0x70, 1, 0x5F)
    assert p.pio_read(0x71, 1) == 1


def test_pm_block_follows_the_param_and_powers_off() -> None:
    rig, host, p = make_platform(location=1)
    rig.advance(10**9)
    assert p.pio_read(0xB008, 4) == pm.PM_HZ
    assert p.pio_read(0xB004, 2) & 1
    p.set_param(19, 0)
    assert p.pio_read(0xB008, 4) == 0xFFFFFFFF  # no longer ours: nothing answers
    assert p.pio_read(0x1F48, 4) == pm.PM_HZ
    p.pio_write(0x1F44, 2, 1 << 13)  # SLP_EN, SLP_TYP 0 = S5
    assert host.poweroffs == 1


def test_port92_fast_reset() -> None:
    _rig, host, p = make_platform()
    p.pio_write(0x92, 1, 0x03)
    assert host.resets == 1


def test_bad_dm_op_values_are_logged_not_raised() -> None:
    _rig, host, p = make_platform()
    p.set_isa_irq_level(99, 1)
    p.set_pci_intx_level(40, 0, 1)
    p.set_pci_link_route(7, 3)
    assert len(host.logs) == 3


def test_close_cancels_timers_and_stops_changes() -> None:
    rig, _host, p = make_platform()
    start_pit(p)
    p.pio_write(0xB002, 2, 1)  # TMR_EN
    p.pio_write(0x70, 1, 0x0B)
    p.pio_write(0x71, 1, 0x52)  # PIE + UIE
    assert rig.timers.next_deadline() is not None
    p.close()
    assert rig.timers.next_deadline() is None
    assert rig.bus.eoi_hook is None
    start_pit(p)
    assert rig.timers.next_deadline() is None


def test_hostile_guest_fuzz() -> None:
    rig, _host, p = make_platform(vcpus=2)
    rng = random.Random(15)
    ports = [*sorted(p._ports), 0xFEC00000]
    for _ in range(20000):
        port = rng.choice(ports)
        size = rng.choice((1, 2, 4))
        value = rng.getrandbits(32)
        if port == 0xFEC00000:
            gpa = port + rng.choice((0, 0x10, 0x20))
            if rng.random() < 0.5:
                p.mmio_write(gpa, size, value)
            else:
                p.mmio_read(gpa, size)
        elif rng.random() < 0.5:
            p.pio_write(port, size, value)
        else:
            assert 0 <= p.pio_read(port, size) < 1 << (8 * size)
        if rng.random() < 0.01:
            rig.advance(rng.randrange(1, 10**7))
        p.ext_int_pending(0)
        if rng.random() < 0.05:
            p.ext_int_acknowledge()
    # Whatever the guest did, the live timers stay few and none is due in the past.
    assert rig.advance(0) <= 4
    assert len([t for t in rig.timers._heap if t[2][0] is not None]) <= 4
    p.close()


# -- vCPU 0's injection (lapic_vcpu.VcpuApic) ------------------------------------------


class FakeKvm:
    def __init__(self) -> None:
        self.ready = True
        self.refuse = False
        self.injected: list[int] = []
        self.window = False

    def ready_for_interrupt(self) -> bool:
        return self.ready

    def inject_interrupt(self, vector: int) -> None:
        if self.refuse:
            raise OSError("busy")
        self.injected.append(vector)

    def set_interrupt_window(self, on: bool) -> None:
        self.window = on


def vcpu_apic_class() -> type[VcpuApic]:
    """lapic_vcpu, importable where the C helper behind hv.atomic is not built."""
    if importlib.util.find_spec("pyxen.hv._atomic") is None:
        stub = types.ModuleType("pyxen.hv.atomic")
        stub.read_tsc = lambda: 0  # type: ignore[attr-defined]
        sys.modules.setdefault("pyxen.hv.atomic", stub)
    cls: type[VcpuApic] = importlib.import_module("pyxen.hv.lapic_vcpu").VcpuApic
    return cls


def vcpu_apic(rig: Rig, platform: object) -> tuple[VcpuApic, FakeKvm]:
    kvm = FakeKvm()
    hv = SimpleNamespace(timers=rig.timers, system_time_ns=rig.clock,
                         tsc=SimpleNamespace(hz=3_000_000_000))
    domain = SimpleNamespace(hv=hv, lapic_bus=rig.bus, platform=platform)
    runner = SimpleNamespace(vcpu_id=0, domain=domain, kvm=kvm,
                             time=SimpleNamespace(tsc_offset=0), request=lambda _r: None)
    return vcpu_apic_class()(runner), kvm  # type: ignore[arg-type]


def test_extint_is_injected_before_lapic_vectors_and_held_if_refused() -> None:
    rig = Rig(0)  # no APIC yet: the VcpuApic makes vCPU 0's
    p = Platform(FakePlatformHost(rig), vcpus=1, ram_below_4g=64 << 20, ram_above_4g=0)
    apic, kvm = vcpu_apic(rig, p)
    enable(apic.lapic)
    write(apic.lapic, la.LVT0, EXTINT)
    init_pics(p, master_base=0x08)
    apic.lapic.set_irq(0x90)  # a LAPIC vector of higher class, also waiting
    p.set_isa_irq_level(1, 1)
    assert apic.deliverable()
    kvm.ready = False
    assert apic.inject() and kvm.window and kvm.injected == []
    assert p.pic.int_output  # no INTA until KVM can take it
    kvm.ready, kvm.refuse = True, True
    assert apic.inject() and apic.held_ext_int == 0x09
    kvm.refuse = False
    assert apic.inject() and kvm.injected == [0x09] and apic.held_ext_int is None
    assert apic.inject() and kvm.injected == [0x09, 0x90]  # then the LAPIC's own
    p.close()


def test_pvh_domain_without_platform_injects_as_before() -> None:
    rig = Rig(0)
    apic, kvm = vcpu_apic(rig, None)
    enable(apic.lapic)
    assert not apic.ext_int_waiting() and not apic.deliverable()
    apic.lapic.set_irq(0x40)
    assert apic.inject() and kvm.injected == [0x40]
