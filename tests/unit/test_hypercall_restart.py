"""vcpu_exits.restart_hypercall on a stand-in vCPU (no KVM): which registers a
continuation rewrites in each calling convention, and how far RIP goes back."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any

import pytest

from pyxen.hv.dispatch import CannotContinue
from pyxen.hv.vcpu_exits import restart_hypercall
from pyxen.kvm import structs as ks

CODE_BASE = 0x10_0000


class FakeKvm:
    def __init__(self, rip: int, skips: int) -> None:
        self.regs = ks.kvm_regs()
        self.regs.rip = rip
        self.sregs = SimpleNamespace(cs=SimpleNamespace(base=0))
        self.skips = skips  # what the completion KVM_RUN adds to RIP
        self.dirty = False

    def run(self) -> None:
        self.regs.rip += self.skips
        raise InterruptedError

    def mark_regs_dirty(self) -> None:
        self.dirty = True


class FakeControl:
    def complete_pending_io(self, run: Any) -> None:
        with contextlib.suppress(InterruptedError):
            run()


def runner_for(code: bytes, out_at: int, skips: int, rip_after: bool) -> Any:
    """A vCPU whose guest code is ``code`` at CODE_BASE, stopped at the OUT at
    ``out_at`` -- on it (KVM on VMX/SVM) or past it (nested PVM)."""
    out_len = 1 if code[out_at] in (0xEE, 0xEF) else 2
    rip = CODE_BASE + out_at + (out_len if rip_after else 0)
    kvm = FakeKvm(rip, 0 if rip_after else out_len)

    def read(addr: int, size: int) -> bytes:
        return code[addr - CODE_BASE : addr - CODE_BASE + size]

    return SimpleNamespace(kvm=kvm, control=FakeControl(),
                           guest_access=lambda: SimpleNamespace(read=read))


STUB = b"\xb8\x14\x00\x00\x00\xe7\xea\xc3"  # mov eax, 20; out 0xEA, eax; ret


@pytest.mark.parametrize("rip_after", [False, True])
def test_64_bit_continuation(rip_after: bool) -> None:
    runner = runner_for(STUB, 5, 2, rip_after)
    regs = runner.kvm.regs
    regs.rax, regs.rdi, regs.rsi, regs.rdx, regs.r10 = 7, 1, 2, 3, 4
    restart_hypercall(runner, 20, (0, 0x8000_0000_1000, 0x7FFF_0000), compat=False)
    assert regs.rip == CODE_BASE + 5  # back on the OUT
    assert (regs.rax, regs.rdi, regs.rsi, regs.rdx) == (20, 0, 0x8000_0000_1000, 0x7FFF_0000)
    assert regs.r10 == 4 and regs.rbx == 0  # not an argument of this continuation
    assert runner.kvm.dirty


@pytest.mark.parametrize("rip_after", [False, True])
def test_compat_continuation(rip_after: bool) -> None:
    runner = runner_for(STUB, 5, 2, rip_after)
    regs = runner.kvm.regs
    regs.rdi = 0x55
    restart_hypercall(runner, 12, (6 | 100 << 6, 0xFFFF_F000), compat=True)
    assert regs.rip == CODE_BASE + 5
    assert (regs.rax, regs.rbx, regs.rcx) == (12, 6 | 100 << 6, 0xFFFF_F000)
    assert regs.rdi == 0x55


def test_out_dx_form_goes_back_one_byte() -> None:
    code = b"\x66\xba\xea\x00\xef\xc3"  # mov dx, 0xEA; out dx, eax; ret
    runner = runner_for(code, 4, 1, rip_after=True)
    restart_hypercall(runner, 29, (1, 0), compat=False)
    assert runner.kvm.regs.rip == CODE_BASE + 4


def test_no_out_before_rip_is_refused() -> None:
    code = b"\x90\x90\x90\x90"
    runner = runner_for(b"\x90\x90\xe7\xea" + code, 2, 2, rip_after=True)
    runner.kvm.regs.rip += 1  # not right after the OUT
    with pytest.raises(CannotContinue, match="cannot restart"):
        restart_hypercall(runner, 20, (0,), compat=False)
