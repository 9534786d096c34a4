"""The native executor: whitelisted instructions run on this host's CPU on a guest's state.

No KVM: the "guest" is ``emulate_harness.Machine`` (guest memory with page
tables, an XSAVE area).  These tests execute real machine code in this
process, so they also show that guest values cannot make the host fault
(an unmasked SIMD exception would be SIGFPE and end the test run).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from emulate_harness import ABSENT, DATA, RO_PAGE, Machine, state32, state64
from iced_x86 import Instruction

from pyxen.hv.emulate import native
from pyxen.hv.emulate.faults import GuestException, Unsupported
from pyxen.hv.emulate.faults import Vector as V
from pyxen.hv.emulate.host import host_cpu
from pyxen.hv.emulate.hostcode import host_fxsave
from pyxen.hv.emulate.native import NativeExecutor, executor, x87_opcode
from pyxen.hv.emulate.state import (
    CR0_EM,
    CR0_TS,
    CR4_OSFXSR,
    CR4_OSXMMEXCPT,
    RAX,
    RCX,
    RFLAGS_ZF,
    RSP,
    CpuState,
)
from pyxen.hv.emulate.xstate import (
    FCW,
    FDP,
    FIP,
    FOP,
    FSW,
    MXCSR,
    ST0,
    XMM0,
    XSTATE_BV,
    put16,
    put32,
    put64,
    u16,
    u32,
    u64,
)

F = struct.Struct("<4f")
HAS_AVX = bool(host_cpu().xcr0 & 4) and host_cpu().has(1, 0, 2, 28)


@pytest.fixture
def m() -> Iterator[Machine]:
    machine = Machine()
    yield machine
    machine.close()


def xmm(area: bytes | bytearray, n: int) -> bytes:
    return bytes(area[XMM0 + 16 * n : XMM0 + 16 * (n + 1)])


def set_xmm(m: Machine, n: int, value: bytes) -> None:
    m.area[XMM0 + 16 * n : XMM0 + 16 * (n + 1)] = value
    put64(m.area, XSTATE_BV, u64(m.area, XSTATE_BV) | 2)


def set_fcw(m: Machine, value: int) -> None:
    put16(m.area, FCW, value)
    put64(m.area, XSTATE_BV, u64(m.area, XSTATE_BV) | 1)  # x87 state not initial


def done(result: CpuState | GuestException, st: CpuState, length: int) -> CpuState:
    assert isinstance(result, CpuState), result
    assert result.rip == st.rip + length
    return result


def fault(result: CpuState | GuestException, vector: int) -> GuestException:
    assert isinstance(result, GuestException), result
    assert result.vector == vector, result
    return result


def test_pxor_zeroes_a_register_and_keeps_the_others(m: Machine) -> None:
    set_xmm(m, 0, b"\x11" * 16)
    set_xmm(m, 1, b"\x22" * 16)
    st = state64(rax=5, rbx=6)
    new = done(m.run(bytes.fromhex("660fefc0"), st), st, 4)  # pxor xmm0, xmm0
    assert xmm(m.area, 0) == bytes(16)
    assert xmm(m.area, 1) == b"\x22" * 16
    assert new.gprs == st.gprs


def test_addps_with_a_memory_operand(m: Machine) -> None:
    set_xmm(m, 0, F.pack(1, 2, 3, 4))
    m.put(DATA, F.pack(10, 20, 30, 40))
    st = state64(rax=DATA)
    done(m.run(bytes.fromhex("0f5800"), st), st, 3)  # addps xmm0, [rax]
    assert F.unpack(xmm(m.area, 0)) == (11, 22, 33, 44)


def test_rsp_relative_operand_uses_the_guest_stack(m: Machine) -> None:
    st = state64()
    m.put(st.gprs[RSP] + 16, F.pack(1, 1, 1, 1))
    done(m.run(bytes.fromhex("0f58442410"), st), st, 5)  # addps xmm0, [rsp+16]
    assert F.unpack(xmm(m.area, 0)) == (1, 1, 1, 1)


def test_general_registers_in_and_out(m: Machine) -> None:
    st = state64(rax=3)
    done(m.run(bytes.fromhex("f2480f2ac8"), st), st, 5)  # cvtsi2sd xmm1, rax
    assert xmm(m.area, 1)[:8] == struct.pack("<d", 3.0)
    st2 = state64(rbx=0xF0F0_0000_0000_000F)
    new = done(m.run(bytes.fromhex("f3480fb8c3"), st2), st2, 5)  # popcnt rax, rbx
    assert new.gprs[RAX] == 12
    assert new.rflags & RFLAGS_ZF == 0


def test_flags_and_implicit_registers(m: Machine) -> None:
    set_xmm(m, 0, b"c\0" + bytes(14))
    set_xmm(m, 1, b"abc\0" + bytes(12))
    st = state64(rcx=0xFFFF_FFFF_FFFF_FFFF)
    new = done(m.run(bytes.fromhex("660f3a63c100"), st), st, 6)  # pcmpistri xmm0, xmm1, 0
    assert new.gprs[RCX] == 2  # "c" is at index 2; ECX written, the upper half cleared
    assert new.rflags & 1  # CF: a match


def test_memory_destination_is_written_back(m: Machine) -> None:
    set_xmm(m, 0, struct.pack("<f", 2.5) + bytes(12))
    m.put(DATA, b"\xee" * 8)
    st = state64(rax=DATA)
    done(m.run(bytes.fromhex("f30f1100"), st), st, 4)  # movss [rax], xmm0
    assert m.get(DATA, 8) == struct.pack("<f", 2.5) + b"\xee" * 4


def test_masked_divide_by_zero_sets_the_flag(m: Machine) -> None:
    set_xmm(m, 0, struct.pack("<f", 1.0) + bytes(12))
    st = state64()
    done(m.run(bytes.fromhex("f30f5ec1"), st), st, 4)  # divss xmm0, xmm1 (0.0)
    assert xmm(m.area, 0)[:4] == struct.pack("<f", float("inf"))
    assert u32(m.area, MXCSR) == 0x1F80 | 0x4  # ZE


def test_unmasked_divide_by_zero_is_xm_and_changes_nothing_else(m: Machine) -> None:
    set_xmm(m, 0, struct.pack("<f", 1.0) + bytes(12))
    put32(m.area, MXCSR, 0x1F80 & ~(1 << 9))
    before = bytes(m.area)
    st = state64()
    exc = fault(m.run(bytes.fromhex("f30f5ec1"), st), V.XM)
    assert exc.keep_xsave
    assert m.committed is None
    assert xmm(m.area, 0) == xmm(before, 0)
    assert u32(m.area, MXCSR) == (0x1F80 & ~(1 << 9)) | 0x4
    st.cr4 &= ~CR4_OSXMMEXCPT
    fault(m.run(bytes.fromhex("f30f5ec1"), st), V.UD)


def test_host_state_survives_guest_control_values(m: Machine) -> None:
    before = host_fxsave()
    put32(m.area, MXCSR, 0x7FC0)  # round up, flush to zero, DAZ, everything masked
    set_fcw(m, 0x007F)  # 24-bit precision, masked
    st = state64()
    done(m.run(bytes.fromhex("d9e8"), st), st, 2)  # fld1
    done(m.run(bytes.fromhex("660fefc0"), st), st, 4)
    after = host_fxsave()
    assert after[0:2] == before[0:2]  # host FCW
    assert after[24:28] == before[24:28]  # host MXCSR
    assert u32(m.area, MXCSR) == 0x7FC0


def test_misaligned_legacy_sse_operand_is_gp(m: Machine) -> None:
    st = state64(rax=DATA + 8)
    exc = fault(m.run(bytes.fromhex("0f5800"), st), V.GP)  # addps xmm0, [rax]
    assert exc.error_code == 0
    done(m.run(bytes.fromhex("0f1000"), st), st, 3)  # movups: no alignment needed


def test_page_faults_of_the_operand(m: Machine) -> None:
    st = state64(rax=ABSENT + 4)
    exc = fault(m.run(bytes.fromhex("0f1000"), st), V.PF)  # movups xmm0, [rax]
    assert (exc.error_code, exc.cr2) == (0, ABSENT + 4)
    st = state64(rax=RO_PAGE)
    exc = fault(m.run(bytes.fromhex("f30f1100"), st), V.PF)  # movss [rax], xmm0
    assert (exc.error_code, exc.cr2) == (3, RO_PAGE)


def test_x87_store_across_into_a_missing_page_writes_nothing(m: Machine) -> None:
    m.put(ABSENT - 8, b"\x5a" * 8)
    done(m.run(bytes.fromhex("d9e8"), state64()), state64(), 2)  # fld1
    before = bytes(m.area)
    st = state64(rax=ABSENT - 4)
    exc = fault(m.run(bytes.fromhex("dd18"), st), V.PF)  # fstp qword [rax]
    assert (exc.error_code, exc.cr2) == (2, ABSENT)
    assert m.get(ABSENT - 8, 8) == b"\x5a" * 8
    assert bytes(m.area) == before  # the x87 stack was not popped


def test_x87_arithmetic_and_pointers(m: Machine) -> None:
    st = state64()
    for code in ("d9e8", "d9e8", "dec1"):  # fld1; fld1; faddp
        done(m.run(bytes.fromhex(code), st), st, 2)
    st = state64(rax=DATA)
    done(m.run(bytes.fromhex("dd18"), st), st, 2)  # fstp qword [rax]
    assert struct.unpack("<d", m.get(DATA, 8))[0] == 2.0
    assert u64(m.area, FIP) == st.rip  # the guest's instruction, not the stub's
    assert u64(m.area, FDP) == DATA
    assert u16(m.area, FOP) == 0x518  # DD 18
    st32 = state32(rax=DATA)
    done(m.run(bytes.fromhex("dd00"), st32), st32, 2)  # fld qword [eax]
    assert u64(m.area, FIP) == st32.rip | 0x18 << 32  # FCS in the 32-bit layout
    assert u64(m.area, FDP) == DATA | 0x10 << 32


def test_x87_unmasked_exception_is_pending_until_a_waiting_instruction(m: Machine) -> None:
    set_fcw(m, 0x037B)  # zero-divide unmasked
    m.put(DATA, struct.pack("<f", 0.0))
    st = state64(rax=DATA)
    done(m.run(bytes.fromhex("d9e8"), st), st, 2)  # fld1
    done(m.run(bytes.fromhex("d830"), st), st, 2)  # fdiv dword [rax]: no fault now
    assert u16(m.area, FSW) & 0x84 == 0x84  # ZE and ES
    done(m.run(bytes.fromhex("dfe0"), st), st, 2)  # fnstsw ax does not wait
    fault(m.run(bytes.fromhex("9b"), st), V.MF)  # fwait takes it
    fault(m.run(bytes.fromhex("d9e8"), st), V.MF)  # so does fld1
    fault(m.run(bytes.fromhex("0ffcc1"), st), V.MF)  # and an MMX instruction


def test_fnstenv_reports_the_guest_instruction(m: Machine) -> None:
    st = state64()
    done(m.run(bytes.fromhex("d9e8"), st), st, 2)
    st2 = state64(rax=DATA)
    st2.rip += 0x40
    done(m.run(bytes.fromhex("d930"), st2), st2, 2)  # fnstenv [rax]
    env = m.get(DATA, 28)
    assert u32(env, 12) == st.rip
    assert u32(env, 16) >> 16 == 0x1E8


def test_mmx(m: Machine) -> None:
    m.area[ST0 : ST0 + 8] = bytes(range(1, 9))
    m.area[ST0 + 16 : ST0 + 24] = bytes([1] * 8)
    put64(m.area, XSTATE_BV, 1)
    m.area[4] = 0xFF  # abridged tag word: all valid
    st = state64()
    done(m.run(bytes.fromhex("0ffcc1"), st), st, 3)  # paddb mm0, mm1
    new = done(m.run(bytes.fromhex("480f7ec0"), st), st, 4)  # movq rax, mm0
    assert new.gprs[RAX] == int.from_bytes(bytes(range(2, 10)), "little")
    done(m.run(bytes.fromhex("0f77"), st), st, 2)  # emms
    assert m.area[4] == 0  # tag word: all empty


def test_control_register_checks(m: Machine) -> None:
    st = state64()
    st.cr0 |= CR0_TS
    fault(m.run(bytes.fromhex("660fefc0"), st), V.NM)
    fault(m.run(bytes.fromhex("d9e8"), st), V.NM)
    st = state64()
    st.cr0 |= CR0_EM
    fault(m.run(bytes.fromhex("660fefc0"), st), V.UD)
    fault(m.run(bytes.fromhex("d9e8"), st), V.NM)
    fault(m.run(bytes.fromhex("0ffcc1"), st), V.UD)
    st = state64()
    st.cr4 &= ~CR4_OSFXSR
    fault(m.run(bytes.fromhex("660fefc0"), st), V.UD)
    done(m.run(bytes.fromhex("f3480fb8c3"), st), st, 5)  # popcnt needs none of these


def test_conversion_from_a_memory_operand_is_sse_like_its_register_form(m: Machine) -> None:
    """cvtsd2si eax, [m64] names no XMM register, yet it is an SSE instruction: the
    guest's MXCSR (rounding, flags, masks) and CR0/CR4 apply, not the host's."""
    m.put(DATA, struct.pack("<d", 2.75))
    put32(m.area, MXCSR, 0x7F80)  # round toward zero, everything masked
    st = state64(rax=DATA)
    new = done(m.run(bytes.fromhex("f20f2d00"), st), st, 4)  # cvtsd2si eax, [rax]
    assert new.gprs[RAX] == 2  # the host's round-to-nearest would give 3
    assert u32(m.area, MXCSR) == 0x7F80 | 0x20  # inexact: PE in the guest's MXCSR
    put32(m.area, MXCSR, 0x1F80 & ~(1 << 12))  # precision exception unmasked
    fault(m.run(bytes.fromhex("f20f2d00"), st), V.XM)
    put32(m.area, MXCSR, 0x1F80)
    st.cr0 |= CR0_TS
    fault(m.run(bytes.fromhex("f20f2d00"), st), V.NM)
    st = state64(rax=DATA)
    st.cr4 &= ~CR4_OSFXSR
    fault(m.run(bytes.fromhex("f30f2c00"), st), V.UD)  # cvttss2si eax, [rax]
    if HAS_AVX:
        m.xcr0 = 3  # AVX not enabled: the VEX form is #UD
        fault(m.run(bytes.fromhex("c5fb2d00"), state64(rax=DATA)), V.UD)


@pytest.mark.skipif(not HAS_AVX, reason="the host has no AVX")
def test_avx_needs_the_guests_xcr0(m: Machine) -> None:
    m.put(DATA, F.pack(1, 2, 3, 4) * 2)
    st = state64(rax=DATA)
    done(m.run(bytes.fromhex("c5f45800"), st), st, 4)  # vaddps ymm0, ymm1, [rax]
    assert F.unpack(xmm(m.area, 0)) == (1, 2, 3, 4)
    assert u64(m.area, XSTATE_BV) & 4
    fault(m.run(bytes.fromhex("c5fc2800"), state64(rax=DATA + 16)), V.GP)  # vmovaps ymm0
    m.xcr0 = 3
    fault(m.run(bytes.fromhex("c5f45800"), st), V.UD)


@pytest.mark.skipif(not HAS_AVX, reason="the host has no AVX")
def test_32_bit_code_cannot_touch_registers_8_to_15(m: Machine) -> None:
    ymm = host_cpu().layout.components[2].offset
    set_xmm(m, 9, b"\x99" * 16)
    m.area[ymm + 16 * 9 : ymm + 16 * 10] = b"\x77" * 16
    m.area[ymm : ymm + 16] = b"\x66" * 16
    put64(m.area, XSTATE_BV, 7)
    st = state32()
    done(m.run(bytes.fromhex("c5f877"), st), st, 3)  # vzeroupper
    assert m.area[ymm : ymm + 16] == bytes(16)  # YMM0's upper half cleared
    assert m.area[ymm + 16 * 9 : ymm + 16 * 10] == b"\x77" * 16  # YMM9's kept
    assert xmm(m.area, 9) == b"\x99" * 16


def test_invalid_encodings_are_ud(m: Machine) -> None:
    fault(m.run(bytes.fromhex("f00f58c1"), state64()), V.UD)  # lock addps
    fault(m.run(bytes.fromhex("ce"), state64()), V.UD)  # into in 64-bit mode
    assert m.committed is None


@pytest.mark.parametrize("code", [
    "66480f7ec4",  # movq rsp, xmm0 (writes the stack pointer)
    "660ff7c1",  # maskmovdqu (implicit [rdi])
    "c4e2752e10",  # vmaskmovps (masked store)
    "c4e26d900488",  # vpgatherdd (VSIB)
    "0f31",  # rdtsc
    "0fa2",  # cpuid
    "480fc7f0",  # rdrand
    "50",  # push rax
    "a4",  # movsb
    "0f01e0",  # smsw
])
def test_refused_instructions_crash_without_touching_anything(m: Machine, code: str) -> None:
    before = bytes(m.area)
    with pytest.raises(Unsupported):
        m.run(bytes.fromhex(code), state64(rax=DATA, rdi=DATA))
    assert m.committed is None and not m.injected
    assert bytes(m.area) == before


def test_stub_cache_eviction_keeps_results_right(m: Machine) -> None:
    ex = executor()
    codes = [bytes([0xF3, rex, 0x0F, 0xB8, 0xC0 | (dst << 3) | 3])
             for rex in (0x48, 0x4C) for dst in range(8) if (rex, dst) != (0x48, 4)]
    codes += [bytes.fromhex("f30f5ec1"), bytes.fromhex("660fefc0")]
    for _ in range(3):
        for code in codes * 2:
            st = state64(rbx=0xFF)
            new = m.run(code, st)
            assert isinstance(new, CpuState)
    assert len(ex._slots) <= ex.SLOTS_CACHED
    st = state64(rbx=0x7)
    new = done(m.run(codes[0], st), st, 5)
    assert new.gprs[RAX] == 3


def test_a_stub_that_fails_to_encode_never_lets_another_key_run_its_slot(
        m: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every slot cached, a new instruction evicts the oldest; if its encoding
    fails, that slot must not be handed to the next instruction while a cached key
    still maps to it (the cached key would then run the other instruction's code
    with its own plan)."""
    ex = NativeExecutor()
    monkeypatch.setattr(native, "_executor", ex)

    def pshufd(imm: int) -> bytes:
        return bytes([0x66, 0x0F, 0x70, 0xC1, imm])  # pshufd xmm0, xmm1, imm

    def result(imm: int) -> bytes:
        set_xmm(m, 1, bytes(range(16)))
        st = state64()
        done(m.run(pshufd(imm), st), st, 5)
        return xmm(m.area, 0)

    expected = {imm: b"".join(bytes(range(16))[4 * (imm >> (2 * i) & 3):][:4] for i in range(4))
                for imm in range(256)}
    for imm in range(ex.SLOTS_CACHED):
        assert result(imm) == expected[imm]
    real_encode = ex._encode
    fail_once = [True]

    def encode(instr: Instruction, slot: int, has_memory: bool) -> bytes:
        if fail_once.pop() if fail_once else False:
            raise Unsupported("cannot re-encode (test)")
        return real_encode(instr, slot, has_memory)

    monkeypatch.setattr(ex, "_encode", encode)
    with pytest.raises(Unsupported):
        m.run(pshufd(0xE4), state64())
    for imm in (0x1B, 0x4E):  # two new instructions take slots
        assert result(imm) == expected[imm]
    for imm in reversed(range(ex.SLOTS_CACHED)):  # the cached ones run their own code
        assert result(imm) == expected[imm]
    assert len(set(ex._slots.values())) == len(ex._slots)


def test_x87_opcode_from_the_guest_bytes() -> None:
    assert x87_opcode(bytes.fromhex("dd18"), 64) == 0x518
    assert x87_opcode(bytes.fromhex("2e67dd18"), 32) == 0x518
    assert x87_opcode(bytes.fromhex("41dd18"), 64) == 0x518
    assert x87_opcode(bytes.fromhex("0f58c1"), 64) == 0
