"""INT3 / INT n / INTO delivered through the guest's IDT by the instruction fallback."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from emulate_harness import (
    ABSENT,
    GDT,
    IDT,
    INT_STACK,
    IST_STACK,
    SEL_CODE32,
    SEL_TSS,
    STACK_TOP,
    TSS,
    USER_PAGE,
    Machine,
    state32,
    state64,
)

from pyxen.hv.emulate.faults import GuestException, Unsupported
from pyxen.hv.emulate.faults import Vector as V
from pyxen.hv.emulate.state import (
    CR0_PG,
    RFLAGS_IF,
    RFLAGS_OF,
    RFLAGS_TF,
    RSP,
    CpuState,
    Segment,
)

HANDLER = 0x15000
RSP0 = INT_STACK + 0x1000
IST1 = IST_STACK + 0x1000
GDT_ENTRIES = {
    0x08: 0x00AF9B000000FFFF,  # 64-bit code, DPL 0
    0x10: 0x00CF93000000FFFF,  # data
    0x18: 0x00CF9B000000FFFF,  # 32-bit code
    0x20: 0x00CFF3000000FFFF,  # user data
    0x28: 0x00AFFB000000FFFF,  # user 64-bit code
    0x40: 0x00CFFB000000FFFF,  # user 32-bit code
    0x48: 0x00AF1B000000FFFF,  # 64-bit code, not present
    0x58: 0x00AF9F000000FFFF,  # 64-bit conforming code, DPL 0
}


def gate64(offset: int, selector: int = 0x08, type_attr: int = 0x8E, ist: int = 0) -> bytes:
    return struct.pack("<HHBBHII", offset & 0xFFFF, selector, ist, type_attr,
                       offset >> 16 & 0xFFFF, offset >> 32, 0)


def gate32(offset: int, selector: int = SEL_CODE32, type_attr: int = 0x8E) -> bytes:
    return struct.pack("<HHBBH", offset & 0xFFFF, selector, 0, type_attr, offset >> 16)


@pytest.fixture
def m() -> Iterator[Machine]:
    machine = Machine()
    for sel, desc in GDT_ENTRIES.items():
        machine.put(GDT + sel, struct.pack("<Q", desc))
    machine.put(TSS + 4, struct.pack("<Q", RSP0))  # RSP0
    machine.put(TSS + 0x24, struct.pack("<Q", IST1))  # IST1
    yield machine
    machine.close()


def frame(m: Machine, rsp: int, words: int = 5, size: int = 8) -> tuple[int, ...]:
    fmt = "<" + ("Q" if size == 8 else "I") * words
    return struct.unpack(fmt, m.get(rsp, words * size))


def delivered(result: CpuState | GuestException) -> CpuState:
    assert isinstance(result, CpuState), result
    return result


def raised(result: CpuState | GuestException, vector: int, error: int | None) -> None:
    assert isinstance(result, GuestException), result
    assert (result.vector, result.error_code) == (vector, error), result


def test_int_n_at_cpl0_through_an_interrupt_gate(m: Machine) -> None:
    m.put(IDT + 0x80 * 16, gate64(HANDLER))
    st = state64()
    st.gprs[RSP] = STACK_TOP - 8  # the frame starts 16-byte aligned
    st.rflags |= RFLAGS_IF | RFLAGS_TF
    new = delivered(m.run(bytes.fromhex("cd80"), st))
    assert (new.rip, new.cs.selector, new.cs.l) == (HANDLER, 0x08, True)
    assert new.rflags & (RFLAGS_IF | RFLAGS_TF) == 0
    assert new.gprs[RSP] == STACK_TOP - 16 - 40
    assert frame(m, new.gprs[RSP]) == (st.rip + 2, 0x08, st.rflags, STACK_TOP - 8, 0x10)
    assert not m.injected  # TF was cleared by the delivery: no single-step trap


def test_trap_gate_keeps_if_and_int3_returns_after_itself(m: Machine) -> None:
    m.put(IDT + 3 * 16, gate64(HANDLER, type_attr=0x8F))
    st = state64()
    st.rflags |= RFLAGS_IF
    new = delivered(m.run(bytes.fromhex("cc"), st))
    assert new.rflags & RFLAGS_IF
    assert frame(m, new.gprs[RSP])[0] == st.rip + 1


def test_from_cpl3_the_stack_switches_to_rsp0(m: Machine) -> None:
    m.put(IDT + 0x80 * 16, gate64(HANDLER, type_attr=0xEE))  # DPL 3
    st = state64(cpl=3)
    new = delivered(m.run(bytes.fromhex("cd80"), st))
    assert (new.cpl, new.cs.selector, new.ss.selector, new.ss.dpl) == (0, 0x08, 0, 0)
    assert new.gprs[RSP] == RSP0 - 40
    assert frame(m, new.gprs[RSP]) == (st.rip + 2, 0x2B, st.rflags, USER_PAGE + 0x1000, 0x23)


def test_ist_stack(m: Machine) -> None:
    m.put(IDT + 0x80 * 16, gate64(HANDLER, ist=1))
    new = delivered(m.run(bytes.fromhex("cd80"), state64()))
    assert new.gprs[RSP] == IST1 - 40


def test_conforming_target_keeps_cpl3_and_its_stack(m: Machine) -> None:
    m.put(IDT + 0x80 * 16, gate64(HANDLER, selector=0x58, type_attr=0xEE))
    m.map_page(HANDLER, 1 | 4)
    st = state64(cpl=3)
    new = delivered(m.run(bytes.fromhex("cd80"), st))
    assert (new.cpl, new.cs.selector) == (3, 0x5B)
    assert new.gprs[RSP] == USER_PAGE + 0x1000 - 40


@pytest.mark.parametrize(("gate", "cpl", "vector", "error"), [
    (gate64(HANDLER), 3, V.GP, 0x402),  # gate DPL 0 < CPL 3
    (gate64(HANDLER, type_attr=0x0E), 0, V.NP, 0x402),  # not present
    (gate64(HANDLER, type_attr=0x85), 0, V.GP, 0x402),  # a task gate in IA-32e mode
    (bytes(16), 0, V.GP, 0x402),  # an empty entry
    (gate64(HANDLER, selector=0), 0, V.GP, 0),  # null code segment
    (gate64(HANDLER, selector=0x48), 0, V.NP, 0x48),  # code segment not present
    (gate64(HANDLER, selector=0x18), 0, V.GP, 0x18),  # not a 64-bit segment
    (gate64(HANDLER, selector=0x10), 0, V.GP, 0x10),  # a data segment
    (gate64(HANDLER, selector=0xF8), 0, V.GP, 0xF8),  # beyond the GDT limit
    (gate64(1 << 60), 0, V.GP, 0),  # non-canonical handler
])
def test_delivery_faults(m: Machine, gate: bytes, cpl: int, vector: int, error: int) -> None:
    m.put(IDT + 0x80 * 16, gate)
    before = m.get(STACK_TOP - 64, 64)
    raised(m.run(bytes.fromhex("cd80"), state64(cpl=cpl)), vector, error)
    assert m.committed is None
    assert m.get(STACK_TOP - 64, 64) == before


def test_vector_beyond_the_idt_limit(m: Machine) -> None:
    st = state64()
    st.idt_limit = 0x80 * 16 - 1
    raised(m.run(bytes.fromhex("cd80"), st), V.GP, 0x402)


def test_unwritable_stack_is_a_page_fault_and_nothing_changes(m: Machine) -> None:
    m.put(IDT + 0x80 * 16, gate64(HANDLER))
    st = state64(rsp=ABSENT + 0x100)
    raised(m.run(bytes.fromhex("cd80"), st), V.PF, 2)
    assert m.injected[0].cr2 == ABSENT + 0x100 - 40


def test_into(m: Machine) -> None:
    m.put(IDT + 4 * 16, gate64(HANDLER))
    st = state32()
    new = delivered(m.run(bytes.fromhex("ce"), st))  # OF = 0: nothing
    assert new.rip == st.rip + 1 and new.cs.selector == SEL_CODE32
    st.rflags |= RFLAGS_OF
    new = delivered(m.run(bytes.fromhex("ce"), st))
    assert (new.rip, new.cs.selector) == (HANDLER, 0x08)
    assert frame(m, new.gprs[RSP])[:2] == (st.rip + 1, SEL_CODE32)


def protected32(cpl: int = 0) -> CpuState:
    """32-bit protected mode, paging off (linear = physical), 32-bit TSS."""
    st = state32()
    st.efer = 0
    st.cr0 &= ~CR0_PG
    if cpl:
        st.cs = Segment(selector=0x43, type=0xB, dpl=3)
        st.ss = Segment(selector=0x23, type=3, dpl=3)
    st.tr = Segment(selector=SEL_TSS, base=TSS, limit=0x67, type=0xB, s=False)
    return st


def test_32_bit_protected_mode(m: Machine) -> None:
    m.put(IDT + 0x80 * 8, gate32(HANDLER))
    st = protected32()
    new = delivered(m.run(bytes.fromhex("cd80"), st))
    assert (new.rip, new.cs.selector, new.gprs[RSP]) == (HANDLER, SEL_CODE32, STACK_TOP - 12)
    assert frame(m, STACK_TOP - 12, 3, 4) == (st.rip + 2, SEL_CODE32, st.rflags)


def test_32_bit_stack_switch_from_cpl3(m: Machine) -> None:
    m.put(IDT + 0x80 * 8, gate32(HANDLER, type_attr=0xEE))
    m.put(TSS + 4, struct.pack("<II", RSP0, 0x10))  # ESP0, SS0
    st = protected32(cpl=3)
    st.gprs[RSP] = USER_PAGE + 0x800
    new = delivered(m.run(bytes.fromhex("cd80"), st))
    assert (new.cpl, new.ss.selector, new.gprs[RSP]) == (0, 0x10, RSP0 - 20)
    assert frame(m, RSP0 - 20, 5, 4) == (st.rip + 2, 0x43, st.rflags, USER_PAGE + 0x800, 0x23)


def test_not_emulated(m: Machine) -> None:
    m.put(IDT + 0x80 * 8, gate32(HANDLER, selector=SEL_TSS, type_attr=0x85))
    with pytest.raises(Unsupported):
        m.run(bytes.fromhex("cd80"), protected32())  # a task gate
    st = state32()
    st.cr0 &= ~(1 | CR0_PG)
    st.efer = 0
    st.cs = Segment(selector=0, base=0, limit=0xFFFF, db=False)
    with pytest.raises(Unsupported):
        m.run(bytes.fromhex("cd80"), st)  # real mode (KVM's own job)
