"""The LAPIC's side of the HVM platform: IOAPIC messages, level EOI, LINT0 ExtINT."""

from __future__ import annotations

from lapic_fakes import Rig, enable, read, take, write

from pyxen.hv import lapic as la


def test_level_vector_sets_tmr_and_its_eoi_calls_the_hook() -> None:
    rig = Rig()
    a = rig.apics[0]
    enable(a)
    eois: list[int] = []
    rig.bus.eoi_hook = eois.append
    assert rig.bus.deliver_irq(0, False, la.DM_FIXED, 0x51, True) == 1
    assert read(a, la.TMR + 0x20) == 1 << (0x51 - 0x40)
    assert take(a) == 0x51
    write(a, la.EOI, 0)
    assert eois == [0x51] and a.tmr == 0


def test_edge_vector_eoi_does_not_call_the_hook() -> None:
    rig = Rig()
    a = rig.apics[0]
    enable(a)
    eois: list[int] = []
    rig.bus.eoi_hook = eois.append
    rig.bus.deliver_irq(0, False, la.DM_FIXED, 0x52, False)
    assert take(a) == 0x52
    write(a, la.EOI, 0)
    assert eois == [] and a.tmr == 0


def test_ioapic_destinations_physical_broadcast_and_logical() -> None:
    rig = Rig(3)
    for a in rig.apics:
        enable(a)
    rig.bus.deliver_irq(2, False, la.DM_FIXED, 0x60, False)  # APIC ID 2 = vCPU 1
    assert [a.irr for a in rig.apics] == [0, 1 << 0x60, 0]
    rig.bus.deliver_irq(0xFF, False, la.DM_FIXED, 0x61, False)
    assert all(a.irr & (1 << 0x61) for a in rig.apics)
    write(rig.apics[2], la.LDR, 0x0400_0000)
    rig.bus.deliver_irq(0x04, True, la.DM_FIXED, 0x62, False)
    assert [bool(a.irr & (1 << 0x62)) for a in rig.apics] == [False, False, True]


def test_lowest_priority_picks_one_and_nmi_init_reach_every_target() -> None:
    rig = Rig(2)
    for a in rig.apics:
        enable(a)
    assert rig.bus.deliver_irq(0xFF, False, la.DM_LOWEST, 0x70, False) == 1
    assert sum(bool(a.irr) for a in rig.apics) == 1
    rig.bus.deliver_irq(0xFF, False, la.DM_NMI, 0, False)
    rig.bus.deliver_irq(0, False, la.DM_INIT, 0, False)
    assert [h.nmis for h in rig.hosts] == [1, 1]
    assert [h.inits for h in rig.hosts] == [1, 0]
    assert rig.bus.deliver_irq(0xFF, False, la.DM_SMI, 0, False) == 0


def test_disabled_apic_refuses_ioapic_vectors() -> None:
    rig = Rig()
    assert rig.bus.deliver_irq(0, False, la.DM_FIXED, 0x51, True) == 0
    assert rig.apics[0].irr == 0


def test_accepts_pic_follows_lvt0_and_the_hardware_enable() -> None:
    rig = Rig()
    a = rig.apics[0]
    assert not a.accepts_pic()  # LVT0 masked at reset
    enable(a)
    kicks = rig.hosts[0].kicks
    write(a, la.LVT0, la.DM_EXTINT << 8)
    assert a.accepts_pic() and rig.hosts[0].kicks == kicks + 1
    write(a, la.LVT0, la.LVT_MASKED | la.DM_EXTINT << 8)  # hvmloader's 0x10700
    assert not a.accepts_pic()
    assert a.wrmsr(la.MSR_IA32_APICBASE, a.apic_base & ~la.APIC_BASE_ENABLE)
    assert a.accepts_pic()  # LINT0 straight to the CPU
