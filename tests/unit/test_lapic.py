"""The local APIC model (hv/lapic.py) against Xen 4.12's vlapic rules, without KVM."""

from __future__ import annotations

import random

import pytest
from lapic_fakes import Rig, enable, msr, read, take, to_x2apic, write

from pyxen.hv import lapic as la

# -- reset state ---------------------------------------------------------------------


def test_reset_state() -> None:
    rig = Rig(2)
    a0, a1 = rig.apics
    assert a0.apic_base == 0xFEE0_0000 | la.APIC_BASE_ENABLE | la.APIC_BASE_BSP
    assert a1.apic_base == 0xFEE0_0000 | la.APIC_BASE_ENABLE
    assert read(a0, la.ID) == 0 and read(a1, la.ID) == 2 << 24
    assert read(a0, la.LVR) == 0x0005_0014
    assert read(a0, la.SVR) == 0xFF and not a0.enabled
    assert all(read(a0, lvt) == la.LVT_MASKED for lvt in la.LVTS)
    assert read(a0, la.DFR) == 0xFFFF_FFFF
    assert read(a0, la.TPR) == read(a0, la.PPR) == read(a0, la.LDR) == 0
    assert a0.xapic and not a0.x2apic


def test_reads_of_reserved_and_write_only_registers_are_zero() -> None:
    a = Rig().apics[0]
    for reg in (la.APR, la.EOI, la.RRD, la.CMCI, 0x040, 0x050, 0x3F0, 0x400, 0xFF0):
        write(a, reg, 0xFFFF_FFFF)
        assert read(a, reg) == 0, hex(reg)


def test_read_only_registers_ignore_writes() -> None:
    a = Rig().apics[0]
    for reg in (la.LVR, la.PPR, la.ISR, la.TMR + 0x10, la.IRR + 0x70, la.TMCCT):
        before = read(a, reg)
        write(a, reg, 0x1234_5678)
        assert read(a, reg) == before, hex(reg)


def test_register_write_masks() -> None:
    a = Rig().apics[0]
    enable(a)
    write(a, la.TPR, 0x1234)
    assert read(a, la.TPR) == 0x34
    write(a, la.LDR, 0x1234_5678)
    assert read(a, la.LDR) == 0x1200_0000
    write(a, la.DFR, 0)
    assert read(a, la.DFR) == 0x0FFF_FFFF
    write(a, la.SVR, 0xFFFF_FFFF)
    assert read(a, la.SVR) == 0x3FF  # no directed EOI in version 0x14
    write(a, la.ICR2, 0x1234_5678)
    assert read(a, la.ICR2) == 0x1200_0000
    write(a, la.LVTERR, 0xFFFF_FFFF)
    assert read(a, la.LVTERR) == la.LVT_MASKED | la.SEND_PENDING | 0xFF
    write(a, la.LVT0, 0xFFFF_FFFF)
    assert read(a, la.LVT0) == 0x1_F7FF
    write(a, la.ID, 0xDEAD_BEEF)  # writable in xAPIC mode, as in Xen
    assert read(a, la.ID) == 0xDEAD_BEEF


# -- MMIO access sizes ------------------------------------------------------------------


def test_sub_register_accesses() -> None:
    a = Rig().apics[0]
    write(a, la.TPR, 0x5A)
    assert a.mmio_read(la.TPR, 1) == 0x5A
    assert a.mmio_read(la.LVR + 2, 1) == 0x05
    assert a.mmio_read(la.LVR + 2, 2) == 0x0005
    a.mmio_write(la.TPR, 1, 0x77)
    assert read(a, la.TPR) == 0x77
    a.mmio_write(la.LDR + 3, 1, 0xAB)  # merged with the current value
    assert read(a, la.LDR) == 0xAB00_0000


@pytest.mark.parametrize("offset,size", [(la.TPR + 1, 4), (la.TPR + 3, 2), (la.TPR, 8),
                                         (la.TPR + 4, 4), (la.TPR, 0), (la.TDCR + 0x10, 4)])
def test_accesses_outside_one_register_are_dropped(offset: int, size: int) -> None:
    a = Rig().apics[0]
    write(a, la.TPR, 0x20)
    a.mmio_write(offset, size, 0xFFFF_FFFF_FFFF_FFFF)
    assert read(a, la.TPR) == 0x20
    assert a.mmio_read(offset, size) == 0


# -- priorities, IRR/ISR, EOI --------------------------------------------------------------


def test_self_ipi_ack_and_eoi() -> None:
    rig = Rig()
    a, host = rig.apics[0], rig.hosts[0]
    enable(a)
    write(a, la.ICR, la.SH_SELF << 18 | 0x40)
    assert host.kicks == 1
    assert read(a, la.IRR + 0x20) == 1  # vector 0x40: word 2, bit 0
    assert read(a, la.ICR) & la.SEND_PENDING == 0
    assert take(a) == 0x40
    assert read(a, la.ISR + 0x20) == 1 and read(a, la.IRR + 0x20) == 0
    assert read(a, la.PPR) == 0x40
    write(a, la.EOI, 0)
    assert read(a, la.ISR + 0x20) == 0 and read(a, la.PPR) == 0


def test_tpr_blocks_equal_and_lower_classes() -> None:
    a = Rig().apics[0]
    enable(a)
    write(a, la.TPR, 0x50)
    a.set_irq(0x5F)
    assert a.pending_vector() is None  # class 5 is not above TPR class 5
    a.set_irq(0x60)
    assert take(a) == 0x60
    write(a, la.TPR, 0)
    assert a.pending_vector() is None  # 0x5F's class is not above 0x60 in service
    write(a, la.EOI, 0)
    assert take(a) == 0x5F


def test_nesting_order() -> None:
    a = Rig().apics[0]
    enable(a)
    a.set_irq(0x50)
    assert take(a) == 0x50
    a.set_irq(0x41)
    a.set_irq(0x60)
    assert take(a) == 0x60  # higher class nests
    assert a.pending_vector() is None  # 0x41 < 0x50 in service
    write(a, la.EOI, 0)  # ends 0x60
    assert a.pending_vector() is None
    write(a, la.EOI, 0)  # ends 0x50
    assert take(a) == 0x41


def test_ppr() -> None:
    a = Rig().apics[0]
    enable(a)
    a.set_irq(0x73)
    take(a)
    write(a, la.TPR, 0x65)
    assert read(a, la.PPR) == 0x70  # ISR class wins
    write(a, la.TPR, 0x7A)
    assert read(a, la.PPR) == 0x7A  # TPR class >= ISR class: TPR itself


def test_eoi_kicks_when_something_waits() -> None:
    rig = Rig()
    a, host = rig.apics[0], rig.hosts[0]
    enable(a)
    a.set_irq(0x80)
    take(a)
    a.set_irq(0x30)
    kicks = host.kicks
    write(a, la.EOI, 0)
    assert host.kicks == kicks + 1
    write(a, la.EOI, 0)  # an EOI with nothing in service is harmless
    assert take(a) == 0x30


def test_set_irq_twice_is_one_interrupt() -> None:
    rig = Rig()
    a = rig.apics[0]
    enable(a)
    a.set_irq(0x90)
    a.set_irq(0x90)
    assert rig.hosts[0].kicks == 1
    assert take(a) == 0x90 and a.pending_vector() is None


def test_software_disabled_apic() -> None:
    rig = Rig()
    a = rig.apics[0]
    a.set_irq(0x90)  # recorded (Xen's vlapic_set_irq does not check), not delivered
    assert a.pending_vector() is None
    write(a, la.LVTT, 0x31)
    assert read(a, la.LVTT) == la.LVT_MASKED | 0x31
    enable(a)
    assert take(a) == 0x90
    write(a, la.LVTERR, 0x32)
    write(a, la.SVR, 0xFF)  # disable: every LVT gets masked
    assert read(a, la.LVTERR) == la.LVT_MASKED | 0x32
    write(a, la.ICR, la.SH_SELF << 18 | 0x40)  # fixed IPIs are dropped while disabled
    assert read(a, la.IRR + 0x20) == 0


# -- ESR ---------------------------------------------------------------------------------


def test_esr_latches_on_write() -> None:
    a = Rig().apics[0]
    enable(a)
    write(a, la.ICR, la.SH_SELF << 18 | 0x05)
    assert read(a, la.ESR) == 0  # not visible until ESR is written
    write(a, la.ESR, 0xFFFF_FFFF)
    assert read(a, la.ESR) == la.ESR_SEND_ILLEGAL
    write(a, la.ESR, 0)
    assert read(a, la.ESR) == 0


def test_receive_illegal_and_error_interrupt() -> None:
    rig = Rig()
    a = rig.apics[0]
    enable(a)
    write(a, la.LVTERR, 0x70)
    a.set_irq(0x0E)
    assert take(a) == 0x70
    write(a, la.EOI, 0)
    a.set_irq(0x0E)  # the same error again: no new interrupt
    assert a.pending_vector() is None
    write(a, la.ESR, 0)
    assert read(a, la.ESR) == la.ESR_RECEIVE_ILLEGAL


def test_illegal_error_vector_does_not_recurse() -> None:
    a = Rig().apics[0]
    enable(a)
    write(a, la.LVTERR, 0x03)
    write(a, la.ICR, la.SH_SELF << 18 | 0x01)
    write(a, la.ESR, 0)
    assert read(a, la.ESR) == la.ESR_SEND_ILLEGAL | la.ESR_RECEIVE_ILLEGAL
    assert a.irr == 0


# -- IPIs ----------------------------------------------------------------------------------


def ipi(src: la.Lapic, dest: int, low: int) -> None:
    if src.x2apic:
        assert src.wrmsr(msr(la.ICR), dest << 32 | low)
    else:
        write(src, la.ICR2, dest << 24)
        write(src, la.ICR, low)


def test_physical_destinations() -> None:
    rig = Rig(3)
    for a in rig.apics:
        enable(a)
    ipi(rig.apics[0], 4, 0x41)
    assert [a.irr for a in rig.apics] == [0, 0, 1 << 0x41]
    ipi(rig.apics[0], 0xFF, 0x42)
    assert all(a.irr >> 0x42 & 1 for a in rig.apics)
    ipi(rig.apics[0], 3, 0x43)  # no APIC has ID 3
    assert not any(a.irr >> 0x43 & 1 for a in rig.apics)


def test_shorthands() -> None:
    rig = Rig(3)
    for a in rig.apics:
        enable(a)
    src = rig.apics[1]
    ipi(src, 0, la.SH_SELF << 18 | 0x50)
    ipi(src, 0, la.SH_ALL << 18 | 0x51)
    ipi(src, 0, la.SH_ALL_BUT_SELF << 18 | 0x52)
    bits = [[a.irr >> v & 1 for v in (0x50, 0x51, 0x52)] for a in rig.apics]
    assert bits == [[0, 1, 1], [1, 1, 0], [0, 1, 1]]


def test_logical_flat_and_cluster() -> None:
    rig = Rig(3)
    for a, ldr in zip(rig.apics, (0x01, 0x02, 0x04), strict=True):
        enable(a)
        write(a, la.LDR, ldr << 24)
    ipi(rig.apics[0], 0x06, la.ICR_DEST_LOGICAL | 0x60)
    assert [a.irr >> 0x60 & 1 for a in rig.apics] == [0, 1, 1]
    for a, ldr in zip(rig.apics, (0x11, 0x12, 0x21), strict=True):
        write(a, la.DFR, 0x0FFF_FFFF)  # cluster model
        write(a, la.LDR, ldr << 24)
    ipi(rig.apics[0], 0x13, la.ICR_DEST_LOGICAL | 0x61)
    assert [a.irr >> 0x61 & 1 for a in rig.apics] == [1, 1, 0]
    write(rig.apics[2], la.DFR, 0x5FFF_FFFF)  # neither flat nor cluster: never matches
    ipi(rig.apics[0], 0x21, la.ICR_DEST_LOGICAL | 0x62)
    assert rig.apics[2].irr >> 0x62 & 1 == 0


def test_lowest_priority_picks_lowest_ppr_round_robin() -> None:
    rig = Rig(3)
    for a in rig.apics:
        enable(a)
    write(rig.apics[0], la.TPR, 0x40)
    write(rig.apics[2], la.TPR, 0x20)
    low = la.SH_ALL << 18 | la.DM_LOWEST << 8 | 0x70
    ipi(rig.apics[0], 0, low)
    assert [a.irr >> 0x70 & 1 for a in rig.apics] == [0, 1, 0]
    write(rig.apics[2], la.TPR, 0)
    ipi(rig.apics[0], 0, low | 1)  # APICs 1 and 2 tie: round robin goes on from 1
    assert [a.irr >> 0x71 & 1 for a in rig.apics] == [0, 0, 1]
    ipi(rig.apics[0], 0, la.DM_LOWEST << 8 | 0x05)
    write(rig.apics[0], la.ESR, 0)
    assert read(rig.apics[0], la.ESR) == la.ESR_SEND_ILLEGAL


def test_nmi_init_sipi_smi_extint() -> None:
    rig = Rig(2)
    a0 = rig.apics[0]
    h1 = rig.hosts[1]
    ipi(a0, 2, la.DM_NMI << 8)
    ipi(a0, 2, la.DM_INIT << 8 | la.ICR_ASSERT)
    ipi(a0, 2, la.DM_INIT << 8 | la.ICR_LEVEL)  # level de-assert: ignored
    ipi(a0, 2, la.DM_STARTUP << 8 | 0x9A)
    assert (h1.nmis, h1.inits, h1.sipis) == (1, 1, [0x9A])
    ipi(a0, 2, la.DM_SMI << 8)
    assert rig.hosts[0].logs and not h1.crashes
    ipi(a0, 7, la.DM_EXTINT << 8)  # no destination: nothing happens
    assert not rig.hosts[1].crashes
    ipi(a0, 2, la.DM_EXTINT << 8)
    assert h1.crashes


# -- APIC_BASE ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    1 << 9,                                   # reserved bit
    1 << 63,                                  # above the address mask
    la.APIC_BASE_ENABLE | 0xFED0_0000,        # moving the xAPIC window
    la.APIC_BASE_EXTD | 0xFEE0_0000,          # enabled -> disabled with EXTD set
])
def test_apic_base_gp(value: int) -> None:
    a = Rig().apics[0]
    before = a.apic_base
    assert not a.wrmsr(la.MSR_IA32_APICBASE, value)
    assert a.apic_base == before


def test_apic_base_transitions() -> None:
    a = Rig(2).apics[1]
    base = a.apic_base
    assert a.wrmsr(la.MSR_IA32_APICBASE, base | la.APIC_BASE_EXTD)  # xAPIC -> x2APIC
    x2 = a.apic_base
    assert not a.wrmsr(la.MSR_IA32_APICBASE, base)  # x2APIC -> xAPIC: #GP
    assert not a.wrmsr(la.MSR_IA32_APICBASE, x2 & ~la.APIC_BASE_ENABLE)  # EXTD alone: #GP
    assert a.wrmsr(la.MSR_IA32_APICBASE, 0)  # -> disabled
    assert not a.xapic and not a.x2apic and a.hw_disabled
    assert a.wrmsr(la.MSR_IA32_APICBASE, 0xABCD_E000)  # moving is fine while disabled
    assert not a.wrmsr(la.MSR_IA32_APICBASE, la.APIC_BASE_EXTD)  # disabled -> EXTD: #GP
    assert not a.wrmsr(la.MSR_IA32_APICBASE, la.APIC_BASE_ENABLE | la.APIC_BASE_EXTD
                       | 0xFEE0_0000)  # disabled -> x2APIC directly: #GP
    assert a.wrmsr(la.MSR_IA32_APICBASE, la.APIC_BASE_ENABLE | 0xFEE0_0000)
    assert a.xapic and read(a, la.ID) == 2 << 24 and read(a, la.SVR) == 0xFF


def test_enabling_resets() -> None:
    a = Rig().apics[0]
    enable(a)
    write(a, la.TPR, 0x30)
    a.set_irq(0x55)
    assert a.wrmsr(la.MSR_IA32_APICBASE, 0)
    assert a.pending_vector() is None
    assert a.wrmsr(la.MSR_IA32_APICBASE, la.APIC_BASE_ENABLE | 0xFEE0_0000)
    assert read(a, la.TPR) == 0 and a.irr == 0 and read(a, la.SVR) == 0xFF


# -- x2APIC -------------------------------------------------------------------------------


def test_x2apic_id_and_ldr() -> None:
    rig = Rig(18)
    for a in rig.apics:
        to_x2apic(a)
    assert rig.apics[1].rdmsr(msr(la.ID)) == 2
    assert rig.apics[17].rdmsr(msr(la.ID)) == 34
    # Xen 4.12 derives the LDR from the vCPU id: cluster id >> 4, bit id & 15.
    assert rig.apics[0].rdmsr(msr(la.LDR)) == 0x1
    assert rig.apics[1].rdmsr(msr(la.LDR)) == 0x2
    assert rig.apics[17].rdmsr(msr(la.LDR)) == 0x1_0002
    a = rig.apics[17]
    a.apply_init()
    assert a.rdmsr(msr(la.LDR)) == 0x1_0002  # read-only in x2APIC mode: survives INIT


def test_x2apic_msrs_gp_outside_x2apic_mode() -> None:
    a = Rig().apics[0]
    assert a.rdmsr(msr(la.ID)) is None
    assert not a.wrmsr(msr(la.TPR), 0)


@pytest.mark.parametrize("reg", [la.EOI, la.SELF_IPI, la.ICR2, la.DFR, la.APR, la.RRD,
                                 0x040, 0x3A0, 0x400, 0xFF0])
def test_x2apic_unreadable(reg: int) -> None:
    a = Rig().apics[0]
    to_x2apic(a)
    assert a.rdmsr(msr(reg)) is None


@pytest.mark.parametrize("reg,value", [
    (la.ID, 0), (la.LVR, 0), (la.LDR, 0), (la.PPR, 0), (la.ISR, 0), (la.IRR, 0),
    (la.TMCCT, 0), (la.ICR2, 0), (la.DFR, 0), (la.APR, 0),
    (la.TPR, 0x100), (la.EOI, 1), (la.ESR, 1), (la.SELF_IPI, 0x100),
    (la.SVR, 1 << 12), (la.LVTT, 1 << 19), (la.LVTERR, 0x700), (la.LVT0, 1 << 17),
    (la.TDCR, 0x4), (la.ICR, 1 << 13), (la.ICR, 1 << 16), (la.TPR, 1 << 32),
])
def test_x2apic_write_gp(reg: int, value: int) -> None:
    a = Rig().apics[0]
    to_x2apic(a)
    assert not a.wrmsr(msr(reg), value)


def test_x2apic_registers() -> None:
    rig = Rig(2)
    a0, a1 = rig.apics
    for a in rig.apics:
        to_x2apic(a)
        assert a.wrmsr(msr(la.SVR), la.SVR_ENABLED | 0xFF)
    assert a0.rdmsr(msr(la.LVR)) == 0x0005_0014
    assert a0.wrmsr(msr(la.TPR), 0x20) and a0.rdmsr(msr(la.PPR)) == 0x20
    assert a0.wrmsr(msr(la.TPR), 0)
    assert a0.wrmsr(msr(la.ICR), 2 << 32 | 0x44)  # 64-bit ICR to x2APIC ID 2
    assert a0.rdmsr(msr(la.ICR)) == 2 << 32 | 0x44
    assert a1.irr >> 0x44 & 1
    assert a1.wrmsr(msr(la.SELF_IPI), 0x45)
    assert take(a1) == 0x45 and take(a1) is None  # 0x44 is a lower class
    assert a1.wrmsr(msr(la.EOI), 0)
    assert take(a1) == 0x44
    assert a0.wrmsr(msr(la.ICR), 1 << 32 | la.ICR_DEST_LOGICAL | 0x46)  # cluster 0, bit 0
    assert a0.irr >> 0x46 & 1 and not a1.irr >> 0x46 & 1
    assert a0.wrmsr(msr(la.TMICT), 0xFFFF_FFFF_0000_0010)  # Xen keeps the low 32 bits
    assert a0.rdmsr(msr(la.TMICT)) == 0x10
    assert a0.wrmsr(msr(la.ESR), 0)


def test_apic_page_not_claimed_in_x2apic_mode() -> None:
    a = Rig().apics[0]
    to_x2apic(a)
    assert not a.xapic


# -- hostile input -----------------------------------------------------------------------


def test_garbage_never_raises() -> None:
    rng = random.Random(1234)
    rig = Rig(3)
    values = [0, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 1 << 63, 0xDEAD_BEEF, 0x700, 0x500,
              0x600, 0x4_0000]
    for _ in range(20_000):
        a = rng.choice(rig.apics)
        value = rng.choice(values) if rng.random() < 0.3 else rng.getrandbits(64)
        what = rng.randrange(5)
        if what == 0:
            a.mmio_write(rng.randrange(0x1000), rng.choice((1, 2, 4, 8, 3, 0)), value)
        elif what == 1:
            assert 0 <= a.mmio_read(rng.randrange(0x1000), rng.choice((1, 2, 4, 8))) < 1 << 32
        elif what == 2:
            a.wrmsr(rng.choice((0x1B, 0x6E0, rng.randrange(0x800, 0x900))), value)
        elif what == 3:
            got = a.rdmsr(rng.choice((0x1B, 0x6E0, rng.randrange(0x800, 0x900))))
            assert got is None or 0 <= got < 1 << 64
        else:
            rig.advance(rng.randrange(1_000_000))
        vector = a.pending_vector()
        if vector is not None:
            assert 16 <= vector < 256
            a.ack(vector)
    for a in rig.apics:
        assert a.wrmsr(la.MSR_IA32_APICBASE, 0)
        assert a.wrmsr(la.MSR_IA32_APICBASE, la.APIC_BASE_ENABLE | 0xFEE0_0000)
        enable(a)
        a.set_irq(0x40)
        assert take(a) == 0x40
