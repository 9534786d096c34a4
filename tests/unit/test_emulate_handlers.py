"""Dedicated handlers of the instruction fallback: MXCSR, FXSAVE/FXRSTOR, the XSAVE
family, XGETBV, RDTSCP, MONITOR/MWAIT, CMPXCHG8B/16B, FWAIT, single-step traps."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from emulate_harness import ABSENT, DATA, RO_PAGE, Machine, state32, state64

from pyxen.hv.emulate.faults import GuestException, Unsupported
from pyxen.hv.emulate.faults import Vector as V
from pyxen.hv.emulate.host import host_cpu
from pyxen.hv.emulate.state import (
    CR0_EM,
    CR0_TS,
    CR4_OSFXSR,
    CR4_OSXSAVE,
    CR4_TSD,
    EFER_FFXSR,
    RAX,
    RCX,
    RDX,
    RFLAGS_TF,
    RFLAGS_ZF,
    CpuState,
)
from pyxen.hv.emulate.xstate import (
    FCW,
    MXCSR,
    MXCSR_MASK,
    XCOMP_BV,
    XMM0,
    XSTATE_BV,
    put16,
    put32,
    put64,
    u16,
    u32,
    u64,
)

LAYOUT = host_cpu().layout
HAS_YMM = 2 in LAYOUT.components and bool(host_cpu().xcr0 & 4)


@pytest.fixture
def m() -> Iterator[Machine]:
    machine = Machine()
    yield machine
    machine.close()


def ok(m: Machine, code: str, st: CpuState) -> CpuState:
    result = m.run(bytes.fromhex(code), st)
    assert isinstance(result, CpuState), result
    assert result.rip == st.rip + len(code) // 2
    return result


def fault(m: Machine, code: str, st: CpuState, vector: int,
          error: int | None = None) -> GuestException:
    before = bytes(m.area)
    result = m.run(bytes.fromhex(code), st)
    assert isinstance(result, GuestException), result
    assert result.vector == vector, result
    assert result.error_code == error
    assert m.committed is None
    assert bytes(m.area) == before  # nothing committed
    return result


# -- LDMXCSR / STMXCSR ------------------------------------------------------------

def test_ldmxcsr_stmxcsr(m: Machine) -> None:
    m.put(DATA, struct.pack("<I", 0x3F80))
    ok(m, "0fae10", state64(rax=DATA))  # ldmxcsr [rax]
    assert u32(m.area, MXCSR) == 0x3F80
    assert u64(m.area, XSTATE_BV) & 2  # KVM takes MXCSR only with SSE marked in use
    ok(m, "0fae18", state64(rax=DATA + 4))  # stmxcsr [rax]
    assert m.get(DATA + 4, 4) == struct.pack("<I", 0x3F80)


def test_ldmxcsr_faults(m: Machine) -> None:
    m.put(DATA, struct.pack("<I", 0x8000_1F80))
    fault(m, "0fae10", state64(rax=DATA), V.GP, 0)  # a reserved bit
    fault(m, "0fae10", state64(rax=ABSENT), V.PF, 0)
    fault(m, "0fae18", state64(rax=RO_PAGE), V.PF, 3)
    st = state64(rax=DATA)
    st.cr4 &= ~CR4_OSFXSR
    fault(m, "0fae10", st, V.UD)
    st = state64(rax=DATA)
    st.cr0 |= CR0_TS
    fault(m, "0fae10", st, V.NM)


def test_vldmxcsr_needs_avx_in_xcr0(m: Machine) -> None:
    m.put(DATA, struct.pack("<I", 0x1F80))
    m.xcr0 = 3
    fault(m, "c5f8ae10", state64(rax=DATA), V.UD)
    m.xcr0 = 7
    ok(m, "c5f8ae10", state64(rax=DATA))


# -- FXSAVE / FXRSTOR ----------------------------------------------------------------

def fill_legacy(m: Machine) -> None:
    put16(m.area, FCW, 0x027F)
    for i in range(16):
        m.area[XMM0 + 16 * i : XMM0 + 16 * (i + 1)] = bytes([i + 1]) * 16
    put64(m.area, XSTATE_BV, 3)


def test_fxsave_writes_the_legacy_image(m: Machine) -> None:
    fill_legacy(m)
    m.put(DATA, b"\xcc" * 512)
    ok(m, "0fae00", state64(rax=DATA))  # fxsave [rax]
    image = m.get(DATA, 512)
    assert u16(image, FCW) == 0x027F
    assert u32(image, MXCSR) == 0x1F80
    assert u32(image, MXCSR_MASK) == host_cpu().mxcsr_mask
    assert image[XMM0 + 16 * 15 : XMM0 + 16 * 16] == bytes([16]) * 16
    assert image[464:512] == b"\xcc" * 48  # the software-available bytes are not written


def test_fxsave_outside_64_bit_mode_saves_eight_xmm(m: Machine) -> None:
    fill_legacy(m)
    m.put(DATA, b"\xcc" * 512)
    ok(m, "0fae00", state32(rax=DATA))
    image = m.get(DATA, 512)
    assert image[XMM0 + 16 * 7 : XMM0 + 16 * 8] == bytes([8]) * 16
    assert image[XMM0 + 16 * 8 : XMM0 + 16 * 9] == b"\xcc" * 16


def test_fast_fxsave_skips_xmm(m: Machine) -> None:
    fill_legacy(m)
    m.put(DATA, b"\xcc" * 512)
    st = state64(rax=DATA)
    st.efer |= EFER_FFXSR
    ok(m, "0fae00", st)
    assert m.get(DATA + XMM0, 16) == b"\xcc" * 16


def test_fxrstor_loads_and_checks(m: Machine) -> None:
    image = bytearray(512)
    put16(image, FCW, 0x0272)
    put32(image, MXCSR, 0x9F80)
    image[XMM0 + 16 : XMM0 + 32] = b"\x42" * 16
    m.put(DATA, bytes(image))
    ok(m, "0fae08", state64(rax=DATA))  # fxrstor [rax]
    assert u16(m.area, FCW) == 0x0272
    assert u32(m.area, MXCSR) == 0x9F80
    assert m.area[XMM0 + 16 : XMM0 + 32] == b"\x42" * 16
    assert u64(m.area, XSTATE_BV) & 3 == 3
    put32(image, MXCSR, 0x8000_1F80)
    m.put(DATA, bytes(image))
    fault(m, "0fae08", state64(rax=DATA), V.GP, 0)
    fault(m, "0fae08", state64(rax=DATA + 8), V.GP, 0)  # misaligned
    fault(m, "0fae00", state64(rax=RO_PAGE), V.PF, 3)
    st = state64(rax=DATA)
    st.cr0 |= CR0_EM
    fault(m, "0fae00", st, V.NM)  # FXSAVE: CR0.EM is #NM, not #UD


# -- XSAVE family ---------------------------------------------------------------------

def xsave_area(m: Machine) -> None:
    fill_legacy(m)
    if HAS_YMM:
        ymm = LAYOUT.components[2].offset
        m.area[ymm : ymm + 256] = b"\x77" * 256
        put64(m.area, XSTATE_BV, 7)


def test_xsave_standard_form(m: Machine) -> None:
    xsave_area(m)
    m.put(DATA, bytes(1024))
    m.put(DATA + 512, struct.pack("<QQ", 1 << 40, 0x55))  # old XSTATE_BV, XCOMP_BV
    ok(m, "0fae26", _xsave_state(DATA, m.xcr0))  # xsave [rsi]
    image = m.get(DATA, 1024)
    assert u16(image, FCW) == 0x027F
    assert image[XMM0 : XMM0 + 16] == bytes([1]) * 16
    # XSTATE_BV: RFBM bits from XINUSE, the others kept; XCOMP_BV untouched.
    assert u64(image, XSTATE_BV) == (1 << 40) | (u64(m.area, XSTATE_BV) & m.xcr0)
    assert u64(image, XCOMP_BV) == 0x55
    if HAS_YMM:
        ymm = LAYOUT.components[2].offset
        assert image[ymm : ymm + 256] == b"\x77" * 256


def _xsave_state(area: int, mask: int) -> CpuState:
    """The operand [rsi] = ``area``, EDX:EAX = the requested-feature bitmap."""
    return state64(rsi=area, rax=mask & 0xFFFF_FFFF, rdx=mask >> 32)


def test_xsave_requested_features_limit_what_is_written(m: Machine) -> None:
    xsave_area(m)
    m.put(DATA, b"\xcc" * 1024)
    m.put(DATA + 512, bytes(64))
    st = _xsave_state(DATA, 1)  # x87 only
    ok(m, "0fae26", st)  # xsave [rsi]
    image = m.get(DATA, 1024)
    assert u16(image, FCW) == 0x027F
    assert image[MXCSR : MXCSR + 4] == b"\xcc" * 4  # MXCSR belongs to SSE/AVX
    assert image[XMM0 : XMM0 + 16] == b"\xcc" * 16
    assert u64(image, XSTATE_BV) == 1


def test_xsaveopt_skips_components_in_their_initial_state(m: Machine) -> None:
    put64(m.area, XSTATE_BV, 0)  # nothing in use
    m.put(DATA, b"\xcc" * 1024)
    m.put(DATA + 512, bytes(64))
    ok(m, "0fae36", _xsave_state(DATA, 3))  # xsaveopt [rsi]
    image = m.get(DATA, 1024)
    assert image[0:2] == b"\xcc\xcc"  # x87 not written
    assert u32(image, MXCSR) == 0x1F80  # MXCSR is
    assert u64(image, XSTATE_BV) == 0


@pytest.mark.skipif(not LAYOUT.xsavec, reason="no XSAVEC on this host")
def test_xsavec_and_compacted_xrstor(m: Machine) -> None:
    xsave_area(m)
    m.put(DATA, b"\xcc" * 1024)
    mask = m.xcr0
    ok(m, "0fc726", _xsave_state(DATA, mask))  # xsavec [rsi]
    image = bytearray(m.get(DATA, 1024))
    assert u64(image, XCOMP_BV) == (1 << 63) | mask
    assert image[XSTATE_BV + 16 : XSTATE_BV + 64] == bytes(48)
    if HAS_YMM:
        assert image[576 : 576 + 256] == b"\x77" * 256  # YMM right after the header
        image[576 : 576 + 16] = b"\x88" * 16
    image[XMM0 : XMM0 + 16] = b"\x99" * 16
    m.put(DATA, bytes(image))
    m.area[XMM0 : XMM0 + 16] = bytes(16)
    ok(m, "0fae2e", _xsave_state(DATA, mask))  # xrstor [rsi]
    assert m.area[XMM0 : XMM0 + 16] == b"\x99" * 16
    if HAS_YMM:
        ymm = LAYOUT.components[2].offset
        assert m.area[ymm : ymm + 16] == b"\x88" * 16
    # Compacted-form checks.
    for offset, value in ((XCOMP_BV, (1 << 63) | (1 << 30)),
                          (XSTATE_BV, 1 << 1 | 1 << 5),
                          (XSTATE_BV + 16, 1)):
        bad = bytearray(image)
        if offset == XSTATE_BV:
            put64(bad, XCOMP_BV, (1 << 63) | 1)
            put64(bad, XSTATE_BV, 3)  # SSE in use but not in XCOMP_BV
        else:
            put64(bad, offset, value)
        m.put(DATA, bytes(bad))
        fault(m, "0fae2e", _xsave_state(DATA, mask), V.GP, 0)


def test_xrstor_standard_form(m: Machine) -> None:
    image = bytearray(1024)
    put16(image, FCW, 0x0261)
    put32(image, MXCSR, 0x3F80)
    image[XMM0 : XMM0 + 16] = b"\x31" * 16
    put64(image, XSTATE_BV, 3)
    m.put(DATA, bytes(image))
    m.area[XMM0 + 16 : XMM0 + 32] = b"\x11" * 16
    ok(m, "0fae2e", _xsave_state(DATA, 3))  # xrstor [rsi]
    assert u16(m.area, FCW) == 0x0261
    assert u32(m.area, MXCSR) == 0x3F80
    assert m.area[XMM0 : XMM0 + 16] == b"\x31" * 16
    assert m.area[XMM0 + 16 : XMM0 + 32] == bytes(16)  # loaded from the image (zero)
    # XSTATE_BV[1] clear: XMM initialized, MXCSR still loaded (standard form).
    put64(image, XSTATE_BV, 1)
    put32(image, MXCSR, 0x5F80)
    m.put(DATA, bytes(image))
    ok(m, "0fae2e", _xsave_state(DATA, 3))
    assert m.area[XMM0 : XMM0 + 16] == bytes(16)
    assert u32(m.area, MXCSR) == 0x5F80
    assert u64(m.area, XSTATE_BV) & 2  # so that KVM keeps that MXCSR


def test_xrstor_faults_change_nothing(m: Machine) -> None:
    image = bytearray(1024)
    put64(image, XSTATE_BV, 1 << 30)  # not in XCR0
    m.put(DATA, bytes(image))
    fault(m, "0fae2e", _xsave_state(DATA, 3), V.GP, 0)
    image = bytearray(1024)
    put64(image, XSTATE_BV + 16, 1)  # header bytes 16-23
    m.put(DATA, bytes(image))
    fault(m, "0fae2e", _xsave_state(DATA, 3), V.GP, 0)
    image = bytearray(1024)
    put32(image, MXCSR, 0xFFFF_0000)
    m.put(DATA, bytes(image))
    fault(m, "0fae2e", _xsave_state(DATA, 3), V.GP, 0)
    fault(m, "0fae2e", _xsave_state(DATA + 16, 3), V.GP, 0)  # misaligned
    st = _xsave_state(DATA, 3)
    st.cr4 &= ~CR4_OSXSAVE
    fault(m, "0fae2e", st, V.UD)


def test_xsave_fault_writes_nothing(m: Machine) -> None:
    area = ABSENT - 0x200  # the header lies in the missing page
    m.put(area, b"\xcc" * 0x200)
    fault(m, "0fae26", _xsave_state(area, 3), V.PF, 2)  # XSTATE_BV is written
    assert m.get(area, 0x200) == b"\xcc" * 0x200


def test_xgetbv(m: Machine) -> None:
    put64(m.area, XSTATE_BV, 1)
    new = ok(m, "0f01d0", state64(rcx=0))
    assert (new.gprs[RAX], new.gprs[RDX]) == (m.xcr0, 0)
    if LAYOUT.xgetbv1:
        new = ok(m, "0f01d0", state64(rcx=1))
        assert new.gprs[RAX] == 1
    fault(m, "0f01d0", state64(rcx=2), V.GP, 0)
    st = state64()
    st.cr4 &= ~CR4_OSXSAVE
    fault(m, "0f01d0", st, V.UD)


def test_xsaves_is_not_emulated(m: Machine) -> None:
    with pytest.raises(Unsupported):
        m.run(bytes.fromhex("0fc72e"), _xsave_state(DATA, 3))  # xsaves [rsi]


# -- RDTSCP, MONITOR/MWAIT, FWAIT -------------------------------------------------------

@pytest.mark.skipif(not host_cpu().rdtscp, reason="no RDTSCP on this host")
def test_rdtscp(m: Machine) -> None:
    m.tsc = 0x1234_5678_9ABC_DEF0
    new = ok(m, "0f01f9", state64(rax=-1 & (2**64 - 1), rcx=-1 & (2**64 - 1)))
    assert (new.gprs[RDX], new.gprs[RAX], new.gprs[RCX]) == (0x1234_5678, 0x9ABC_DEF0,
                                                             0x1234_5678)
    st = state64(cpl=3)
    st.cr4 |= CR4_TSD
    fault(m, "0f01f9", st, V.GP, 0)


def test_monitor_mwait(m: Machine) -> None:
    ok(m, "0f01c8", state64(rax=DATA))
    ok(m, "0f01c9", state64())
    if host_cpu().has(5, 0, 2, 1):
        ok(m, "0f01c9", state64(rcx=1))  # interrupts as break events
    fault(m, "0f01c8", state64(rax=DATA, rcx=1), V.GP, 0)
    fault(m, "0f01c8", state64(rax=1 << 63), V.GP, 0)
    fault(m, "0f01c8", state64(rax=ABSENT), V.PF, 0)
    fault(m, "0f01c9", state64(rcx=4), V.GP, 0)
    fault(m, "0f01c8", state64(cpl=3, rax=DATA), V.UD)


def test_fwait(m: Machine) -> None:
    ok(m, "9b", state64())
    st = state64()
    st.cr0 |= CR0_TS  # with CR0.MP (set): #NM
    fault(m, "9b", st, V.NM)
    put16(m.area, 2, 0x0084)  # FSW: ZE | ES
    fault(m, "9b", state64(), V.MF)


# -- CMPXCHG8B / CMPXCHG16B ------------------------------------------------------------

def cx16(m: Machine, addr: int, expected: int, new: int) -> CpuState | GuestException:
    st = state64(rax=expected & (2**64 - 1), rdx=expected >> 64, rbx=new & (2**64 - 1),
                 rcx=new >> 64, rdi=addr)
    return m.run(bytes.fromhex("f0480fc70f"), st)  # lock cmpxchg16b [rdi]


def test_cmpxchg16b(m: Machine) -> None:
    m.put(DATA, (5 | 6 << 64).to_bytes(16, "little"))
    new = cx16(m, DATA, 5 | 6 << 64, 7 | 8 << 64)
    assert isinstance(new, CpuState) and new.rflags & RFLAGS_ZF
    assert m.get(DATA, 16) == (7 | 8 << 64).to_bytes(16, "little")
    new = cx16(m, DATA, 0, 1)
    assert isinstance(new, CpuState) and not new.rflags & RFLAGS_ZF
    assert (new.gprs[RAX], new.gprs[RDX]) == (7, 8)
    assert m.get(DATA, 16) == (7 | 8 << 64).to_bytes(16, "little")
    exc = cx16(m, DATA + 8, 0, 1)
    assert isinstance(exc, GuestException) and (exc.vector, exc.error_code) == (V.GP, 0)
    exc = cx16(m, RO_PAGE, 0, 1)  # a write access even when the comparison fails
    assert isinstance(exc, GuestException) and (exc.vector, exc.error_code) == (V.PF, 3)


def test_cmpxchg8b_in_32_bit_code_and_across_lines(m: Machine) -> None:
    for addr in (DATA + 0x10, DATA + 0x3C, DATA + 0xFFC):  # aligned, across a line, a page
        m.put(addr, (0x11 | 0x22 << 32).to_bytes(8, "little"))
        st = state32(rax=0x11, rdx=0x22, rbx=0x33, rcx=0x44, rdi=addr)
        new = m.run(bytes.fromhex("f00fc70f"), st)  # lock cmpxchg8b [edi]
        assert isinstance(new, CpuState) and new.rflags & RFLAGS_ZF
        assert m.get(addr, 8) == (0x33 | 0x44 << 32).to_bytes(8, "little")
        st = state32(rax=0, rdx=0, rdi=addr)
        new = m.run(bytes.fromhex("f00fc70f"), st)
        assert isinstance(new, CpuState) and not new.rflags & RFLAGS_ZF
        assert (new.gprs[RAX], new.gprs[RDX]) == (0x33, 0x44)
    assert len(m.logged) == 1  # the non-atomic case is reported (once)


# -- single step --------------------------------------------------------------------

def test_trap_flag_raises_a_single_step_trap_after_the_instruction(m: Machine) -> None:
    st = state64()
    st.rflags |= RFLAGS_TF
    new = ok(m, "9b", st)
    assert new.rflags & RFLAGS_TF
    assert [(e.vector, e.payload) for e in m.injected] == [(V.DB, 1 << 14)]
