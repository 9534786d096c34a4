"""The native executor's admission rules (pure: decoded bytes in, plan or refusal out)."""

from __future__ import annotations

import pytest
from iced_x86 import Decoder

from pyxen.hv.emulate.faults import Unsupported
from pyxen.hv.emulate.host import host_cpu
from pyxen.hv.emulate.whitelist import NativePlan, analyse
from pyxen.hv.emulate.xstate import XFEATURE_SSE, XFEATURE_YMM


def plan(code: str, bitness: int = 64) -> NativePlan:
    return analyse(Decoder(bitness, bytes.fromhex(code)).decode(), host_cpu())


def test_sse_arithmetic() -> None:
    p = plan("0f5800")  # addps xmm0, [rax]
    assert (p.sse, p.vector, p.mem_size, p.mem_read, p.mem_write, p.align) == (
        True, True, 16, True, False, 16)
    assert p.align_unless_mm
    assert plan("0f1000").align == 0  # movups
    assert plan("0f2800").align == 16 and not plan("0f2800").align_unless_mm  # movaps
    assert plan("f30f1100").mem_write and plan("f30f1100").align == 0  # movss [rax], xmm0
    assert plan("0f58442408").mem_size == 16  # [rsp+8]: the stack pointer only addresses


def test_x87_and_mmx() -> None:
    p = plan("d9e8")  # fld1
    assert (p.x87, p.waits, p.x87_control, p.sse) == (True, True, False, False)
    p = plan("dfe0")  # fnstsw ax
    assert (p.x87, p.waits, p.x87_control) == (True, False, True)
    p = plan("d930")  # fnstenv [rax]
    assert (p.mem_size, p.mem_write, p.waits) == (28, True, False)
    p = plan("0ffcc1")  # paddb mm0, mm1
    assert (p.mmx, p.waits, p.sse) == (True, True, False)
    assert plan("0f77").mmx  # emms


def test_general_register_instructions() -> None:
    p = plan("f3480fb8c3")  # popcnt
    assert not p.vector and p.xcr0 == 0
    p = plan("f20f38f1c3")  # crc32 eax, ebx
    assert not p.vector and not p.sse
    if host_cpu().has(7, 0, 1, 3):
        p = plan("c4e2e0f2c1")  # andn: VEX, but no vector state
        assert p.vex_gpr and p.xcr0 == 0 and not p.vector


@pytest.mark.skipif(not host_cpu().has(1, 0, 2, 28), reason="no AVX on this host")
def test_avx_needs_xcr0() -> None:
    p = plan("c5f45800")  # vaddps ymm0, ymm1, [rax]
    assert p.xcr0 == XFEATURE_SSE | XFEATURE_YMM and p.align == 0
    assert plan("c5fc2800").align == 32  # vmovaps ymm0, [rax]
    assert plan("c5f877").xcr0  # vzeroupper touches the vector registers implicitly


@pytest.mark.parametrize(("code", "why"), [
    ("66480f7ec4", "stack pointer"),  # movq rsp, xmm0
    ("660f7ee4", "stack pointer"),  # movd esp, xmm4
    ("f3480fb8e0", "stack pointer"),  # popcnt rsp, rax
    ("660ff7c1", "masked"),  # maskmovdqu ([rdi] implicit)
    ("c4e2752e10", "masked"),  # vmaskmovps store
    ("c4e26d900488", "VSIB"),  # vpgatherdd
    ("0f31", "whitelist"),  # rdtsc
    ("0fa2", "whitelist"),  # cpuid
    ("0f01d0", "whitelist"),  # xgetbv
    ("0f01f9", "whitelist"),  # rdtscp
    ("480fc7f0", "whitelist"),  # rdrand
    ("f3480faec0", "whitelist"),  # rdfsbase
    ("0f01e0", "whitelist"),  # smsw
    ("0fae00", "whitelist"),  # fxsave
    ("0fae20", "whitelist"),  # xsave
    ("50", "whitelist"),  # push
    ("a4", "whitelist"),  # movsb
    ("e800000000", "whitelist"),  # call
    ("0f22c0", "whitelist"),  # mov cr0, rax
    ("e6e9", "whitelist"),  # out
    ("0f0fc19e", "whitelist"),  # 3DNow! pfadd
    ("0f01ee", "whitelist"),  # rdpkru
])
def test_refused(code: str, why: str) -> None:
    with pytest.raises(Unsupported, match=why):
        plan(code)
