"""The instruction-emulation fallback: what pyxen does when KVM cannot emulate an
instruction (KVM_EXIT_INTERNAL_ERROR, suberror KVM_INTERNAL_ERROR_EMULATION).

Flow for one exit, in the vCPU's thread:
1. Take the vCPU state (sync regs), decode the instruction (``decode``) in the
   guest's mode (16/32/64-bit from CR0.PE, RFLAGS.VM, EFER.LMA, CS.L, CS.D).
2. Dispatch by mnemonic: a dedicated handler (``fpu_state``, ``system``,
   ``interrupts``) for instructions that involve state KVM owns or that must
   not run on the host with guest values, else the native executor
   (``native``) if the whitelist admits the instruction.
3. The handler computes the instruction's effect on a copy of the state.
   Success: the new registers (and XSAVE area) are committed, RIP is past
   the instruction; a single-step trap follows if RFLAGS.TF was set.  A
   ``GuestException``: nothing is committed (RIP stays) and the exception is
   injected as the hardware would raise it.
4. ``Unsupported`` (pyxen cannot do this instruction) and any other Python
   exception (a pyxen bug) crash *this domain* with the decoded instruction,
   its bytes, RIP and mode in the log; the hypervisor and other domains go on.

Every fallback is counted in ``Domain.emulation_counts`` (mnemonic -> count);
the first of each mnemonic per domain is logged once, and the counts are
logged in one line when the domain shuts down.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from iced_x86 import Mnemonic

from pyxen.hv.emulate import fpu_state, interrupts, native, system
from pyxen.hv.emulate.address import LinearMemory
from pyxen.hv.emulate.context import Backend, Emulation
from pyxen.hv.emulate.decode import Decoded, decode, reported_bytes
from pyxen.hv.emulate.faults import GuestException, Unsupported
from pyxen.hv.emulate.faults import Vector as V
from pyxen.hv.emulate.kvm_backend import KvmBackend
from pyxen.hv.emulate.state import RFLAGS_TF, CpuState
from pyxen.kvm.exits import InternalErrorExit

if TYPE_CHECKING:
    from pyxen.hv.domain import Domain
    from pyxen.hv.vcpu import VcpuRunner

Handler = Callable[[Emulation], None]

M = Mnemonic
HANDLERS: dict[int, Handler] = {
    M.LDMXCSR: fpu_state.ldmxcsr, M.VLDMXCSR: fpu_state.ldmxcsr,
    M.STMXCSR: fpu_state.stmxcsr, M.VSTMXCSR: fpu_state.stmxcsr,
    M.FXSAVE: fpu_state.fxsave, M.FXSAVE64: fpu_state.fxsave,
    M.FXRSTOR: fpu_state.fxrstor, M.FXRSTOR64: fpu_state.fxrstor,
    M.XSAVE: fpu_state.xsave, M.XSAVE64: fpu_state.xsave,
    M.XSAVEOPT: fpu_state.xsave, M.XSAVEOPT64: fpu_state.xsave,
    M.XSAVEC: fpu_state.xsave, M.XSAVEC64: fpu_state.xsave,
    M.XRSTOR: fpu_state.xrstor, M.XRSTOR64: fpu_state.xrstor,
    M.XSAVES: fpu_state.xsaves, M.XSAVES64: fpu_state.xsaves,
    M.XRSTORS: fpu_state.xsaves, M.XRSTORS64: fpu_state.xsaves,
    M.XGETBV: fpu_state.xgetbv,
    M.RDTSCP: system.rdtscp,
    M.MONITOR: system.monitor, M.MWAIT: system.mwait,
    M.CMPXCHG8B: system.cmpxchg, M.CMPXCHG16B: system.cmpxchg,
    M.WAIT: system.fwait,
    M.INT3: interrupts.software_interrupt, M.INT: interrupts.software_interrupt,
    M.INTO: interrupts.software_interrupt,
}
_NO_SINGLE_STEP = frozenset({M.INT3, M.INT, M.INTO})  # TF is cleared by the delivery
_count_lock = threading.Lock()


def handler_for(decoded: Decoded) -> Handler:
    return HANDLERS.get(decoded.instr.mnemonic, native.run_natively)


_MNEMONIC_NAMES = {value: name.lower() for name, value in vars(Mnemonic).items()
                   if name.isupper() and isinstance(value, int)}


def mnemonic_name(decoded: Decoded) -> str:
    """iced's mnemonic in lower case ("cmpxchg16b", "addps", ...)."""
    return _MNEMONIC_NAMES.get(decoded.instr.mnemonic, "?")


def emulate(backend: Backend, state: CpuState, decoded: Decoded, mem: LinearMemory) -> None:
    """Carry out one decoded instruction: commit it, or inject the exception it raises.

    Raises Unsupported (and lets pyxen bugs through) without having changed the vCPU.
    """
    emu = Emulation(backend, state, decoded, mem)
    try:
        handler_for(decoded)(emu)
    except GuestException as exc:
        if exc.keep_xsave and emu.xsave_changed:
            backend.set_xsave(emu.xsave())
        backend.inject(exc, state)
        return
    emu.commit()
    if state.rflags & RFLAGS_TF and decoded.instr.mnemonic not in _NO_SINGLE_STEP:
        backend.inject(GuestException(V.DB, payload=_DR6_BS, why="single step"), emu.new)


_DR6_BS = 1 << 14


def handle_emulation_failure(runner: VcpuRunner, exit_: InternalErrorExit) -> None:
    """Handle one KVM emulation failure on ``runner``'s vCPU (its own thread).

    Never raises: an instruction pyxen cannot carry out, or a pyxen bug, crashes
    the domain with a description of the instruction.
    """
    domain = runner.domain
    where = f"vcpu {runner.vcpu_id}"
    decoded: Decoded | None = None
    state: CpuState | None = None
    try:
        backend = KvmBackend(runner)
        state = CpuState.from_kvm(runner.kvm.unpack_regs(), bytes(runner.kvm.sregs))
        mem = LinearMemory(domain.memory, state)
        reported = reported_bytes(exit_.data)
        try:
            decoded = decode(reported, mem, state)
        except GuestException as exc:
            if exc.vector == V.UD:
                # One line per domain: a key naming the bytes would let a guest grow
                # the reported-set and the log with every distinct invalid encoding.
                domain.log_once("emulate-ud", f"{where}: {exc.why} at rip {state.rip:#x}: "
                                "#UD (later undecodable instructions are not logged)")
            backend.inject(exc, state)
            return
        name = mnemonic_name(decoded)
        with _count_lock:
            first_ever = not domain.emulation_counts
            first_of_name = not domain.emulation_counts[name]
            domain.emulation_counts[name] += 1
        if first_ever:
            domain.on_shutdown.append(log_counts)
        if first_of_name:
            domain.log(f"{where}: emulating {name} (KVM cannot), first at rip "
                       f"{state.rip:#x}: {decoded.describe()}")
        emulate(backend, state, decoded, mem)
    except Unsupported as e:
        domain.crash(f"{where}: cannot emulate {_what(decoded, state)}: {e}\n"
                     f"{runner.describe()}")
    except Exception:
        domain.log(f"{where}: pyxen bug in the instruction fallback:\n"
                   f"{traceback.format_exc()}")
        domain.crash(f"{where}: internal error emulating {_what(decoded, state)}\n"
                     f"{runner.describe()}")


def log_counts(domain: Domain) -> None:
    """The domain's fallback counts, one line (at shutdown)."""
    with _count_lock:
        counts = domain.emulation_counts.most_common()
    total = sum(n for _name, n in counts)
    domain.log(f"instruction fallbacks: {total} "
               f"({', '.join(f'{name} {n}' for name, n in counts)})")


def _what(decoded: Decoded | None, state: CpuState | None) -> str:
    where = ""
    if state is not None:
        where = f" at rip {state.rip:#x} in {state.mode_name()}"
    if decoded is None:
        return "an undecoded instruction" + where
    return decoded.describe() + where
