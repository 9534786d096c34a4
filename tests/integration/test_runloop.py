"""The C fast path for hypercall exits (pyxen.kvm._runloop) against the Python path.

Each case is a few instructions in a bare KVM VM, no hypervisor around it:
load arguments, ``out 0xEA, eax`` (pyxen's hypercall stub), copy RAX to RBX,
then ``out 0xEB, al`` to stop.  The same VM is run twice, once through
``RUN_ONCE`` (registers decoded in C) and once through ``Vcpu.run`` and
``vcpu_exits.hypercall`` (decoded in Python, the pure-Python loop); both
must hand the worker the same number, convention and arguments, and leave
the same RAX in the guest.
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pyxen.abi.errno import XenErrno
from pyxen.hv.vcpu_exits import hypercall
from pyxen.kvm import exits as ex
from pyxen.kvm import structs as s
from pyxen.kvm.system import System
from pyxen.kvm.vcpu import RUN_ONCE, Vcpu
from pyxen.kvm.vm import Vm

pytestmark = pytest.mark.kvm

MEM = 2 << 20
PML4, PDPT, PD, CODE = 0x1000, 0x2000, 0x3000, 0x10000
HYPERCALL_PORT, STOP_PORT = 0xEA, 0xEB
P, RW, US, PS = 1, 2, 4, 0x80

ARGS = (0x1111_2222_3333_4444, 0x5555_6666_7777_8888, 3, 0x8000_0000_0000_0004, 5, 6)
ARGS32 = (0x8000_0001, 2, 0xFFFF_FFFF, 4, 5, 0x7FFF_FFFF)


def _mov64(opcode: bytes, value: int) -> bytes:
    return opcode + value.to_bytes(8, "little")


# mov eax, 17; mov rdi/rsi/rdx/r10/r8/r9, imm64; out 0xEA, eax; mov rbx, rax; out 0xEB, al
CODE64 = (b"\xb8\x11\x00\x00\x00"
          + b"".join(_mov64(op, v) for op, v in zip(
              (b"\x48\xbf", b"\x48\xbe", b"\x48\xba", b"\x49\xba", b"\x49\xb8", b"\x49\xb9"),
              ARGS, strict=True))
          + b"\xe7\xea\x48\x89\xc3\xe6\xeb")
# mov eax, 17; mov ebx/ecx/edx/esi/edi/ebp, imm32; out 0xEA, eax; mov ebx, eax; out 0xEB, al
CODE32 = (b"\xb8\x11\x00\x00\x00"
          + b"".join(op + v.to_bytes(4, "little") for op, v in zip(
              (b"\xbb", b"\xb9", b"\xba", b"\xbe", b"\xbf", b"\xbd"), ARGS32, strict=True))
          + b"\xe7\xea\x89\xc3\xe6\xeb")


def _segment(selector: int, code: bool, dpl: int, long: bool) -> s.kvm_segment:
    seg = s.kvm_segment()
    seg.base, seg.limit, seg.selector = 0, 0xFFFF_FFFF, selector
    seg.type = 11 if code else 3
    seg.present, seg.s, seg.g, seg.dpl = 1, 1, 1, dpl
    seg.l = int(long)
    seg.db = int(not long)
    return seg


class BareVm:
    """One vCPU in long mode (identity-mapped 2 MiB, user-accessible) or 32-bit
    protected mode without paging, at CPL 0 or 3 (IOPL 3, so OUT is allowed)."""

    def __init__(self, system: System, code: bytes, long: bool, cpl: int) -> None:
        self.vm = Vm(system)
        self.mem = mmap.mmap(-1, MEM)
        self.vm.set_memory_region(0, 0, MEM, _address(self.mem))
        for at, value in ((PML4, PDPT | P | RW | US), (PDPT, PD | P | RW | US),
                          (PD, P | RW | US | PS)):
            self.mem[at:at + 8] = value.to_bytes(8, "little")
        self.mem[CODE:CODE + len(code)] = code
        self.vcpu = Vcpu(self.vm, 0)
        self.vcpu.set_cpuid(system.supported_cpuid())
        sregs = self.vcpu.get_sregs()
        sregs.cs = _segment(0x08 | cpl, True, cpl, long)
        sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = _segment(0x10 | cpl, False, cpl,
                                                                         False)
        if long:
            sregs.cr3, sregs.cr4, sregs.cr0 = PML4, 1 << 5, (1 << 0) | (1 << 31) | (1 << 16)
            sregs.efer = (1 << 8) | (1 << 10)
        else:
            sregs.cr0, sregs.cr4, sregs.efer = 1, 0, 0
        self.vcpu.set_sregs(sregs)
        regs = s.kvm_regs()
        regs.rip, regs.rsp, regs.rflags = CODE, 0x80000, 0x2 | (3 << 12)
        regs.rax = 0xDEAD_0000_0000_0000  # a 32-bit caller's nr is EAX only
        self.vcpu.set_regs(regs)

    def close(self) -> None:
        self.vcpu.close()
        self.vm.close()
        self.mem.close()


def _address(buf: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


@dataclass
class FakeRunner:
    """What vcpu_exits.hypercall touches of a VcpuRunner."""

    kvm: Vcpu
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    result: int = -XenErrno.ENOSYS

    def serve_hypercall(self, nr: int, compat: bool, *args: int) -> int:
        self.calls.append((nr, compat, *args))
        return self.result


def run_to_stop(vm: BareVm, runner: FakeRunner, fast: bool) -> ex.IoExit:
    """Run until the OUT to STOP_PORT, serving hypercalls by the path chosen."""
    kvm = vm.vcpu
    for _ in range(10):
        if fast:
            assert RUN_ONCE is not None
            if RUN_ONCE(kvm.fd, kvm.run_addr, HYPERCALL_PORT, runner.serve_hypercall):
                continue
            exit_ = kvm.last_exit()
        else:
            exit_ = kvm.run()
            if type(exit_) is ex.IoExit and exit_.port == HYPERCALL_PORT and exit_.is_out:
                hypercall(runner)  # type: ignore[arg-type]
                continue
        assert type(exit_) is ex.IoExit, exit_
        assert exit_.port == STOP_PORT
        return exit_
    raise AssertionError("the guest never reached its stop port")


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    sysfd = System()
    yield sysfd
    sysfd.close()


@pytest.fixture
def make_vm(system: System) -> Iterator[Callable[..., BareVm]]:
    vms: list[BareVm] = []

    def make(code: bytes, long: bool = True, cpl: int = 0) -> BareVm:
        vm = BareVm(system, code, long, cpl)
        vms.append(vm)
        return vm

    yield make
    for vm in vms:
        vm.close()


paths = pytest.mark.parametrize("fast", [
    pytest.param(True, id="C", marks=pytest.mark.skipif(RUN_ONCE is None,
                                                          reason="_runloop not built")),
    pytest.param(False, id="python"),
])


@paths
def test_a_64_bit_call_gets_its_six_arguments_and_its_result(make_vm: Callable[..., BareVm],
                                                             fast: bool) -> None:
    vm = make_vm(CODE64)
    runner = FakeRunner(vm.vcpu, result=-XenErrno.ENOSYS)
    run_to_stop(vm, runner, fast)
    assert runner.calls == [(17, False, *ARGS)]
    assert vm.vcpu.unpack_regs()[1] == (-XenErrno.ENOSYS) & (2**64 - 1)  # rbx = rax


@paths
def test_a_32_bit_call_uses_eax_and_ebx_to_ebp_and_gets_32_bits_back(
        make_vm: Callable[..., BareVm], fast: bool) -> None:
    vm = make_vm(CODE32, long=False)
    runner = FakeRunner(vm.vcpu, result=-XenErrno.EINVAL)
    run_to_stop(vm, runner, fast)
    assert runner.calls == [(17, True, *ARGS32)]
    rax, rbx = vm.vcpu.unpack_regs()[:2]
    assert rax == rbx == (-XenErrno.EINVAL) & 0xFFFF_FFFF


@paths
def test_a_call_from_cpl_3_is_refused_without_reaching_a_worker(
        make_vm: Callable[..., BareVm], fast: bool) -> None:
    vm = make_vm(CODE64, cpl=3)
    runner = FakeRunner(vm.vcpu, result=0)
    run_to_stop(vm, runner, fast)
    assert runner.calls == []
    assert vm.vcpu.unpack_regs()[1] == (-XenErrno.EPERM) & (2**64 - 1)


@pytest.mark.skipif(RUN_ONCE is None, reason="_runloop not built")
def test_other_exits_and_failures_reach_the_caller(make_vm: Callable[..., BareVm]) -> None:
    assert RUN_ONCE is not None
    vm = make_vm(CODE64)
    kvm = vm.vcpu

    def broken(*_args: int) -> int:
        raise RuntimeError("a worker bug")

    with pytest.raises(RuntimeError, match="a worker bug"):
        RUN_ONCE(kvm.fd, kvm.run_addr, HYPERCALL_PORT, broken)
    # A port that is not the hypercall port is left for the Python decoder.
    assert RUN_ONCE(kvm.fd, kvm.run_addr, 0x1234, broken) is False
    exit_ = kvm.last_exit()
    assert type(exit_) is ex.IoExit and exit_.port == STOP_PORT
    kvm.kvm_run.immediate_exit = 1
    with pytest.raises(InterruptedError):
        RUN_ONCE(kvm.fd, kvm.run_addr, HYPERCALL_PORT, broken)
