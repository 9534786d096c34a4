"""Dispatch and bookkeeping of the instruction fallback (no KVM)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import pytest
from emulate_harness import Machine, state64
from iced_x86 import Decoder

from pyxen.hv.emulate import fallback, fpu_state, interrupts, native, system
from pyxen.hv.emulate.decode import Decoded
from pyxen.hv.emulate.faults import Vector as V
from pyxen.kvm.exits import InternalErrorExit


def decoded(code: str) -> Decoded:
    raw = bytes.fromhex(code)
    return Decoded(Decoder(64, raw).decode(), raw, 64)


def test_dispatch() -> None:
    cases: dict[str, Callable[..., None]] = {
        "0fae10": fpu_state.ldmxcsr, "c5f8ae18": fpu_state.stmxcsr,
        "480fae00": fpu_state.fxsave, "0fc720": fpu_state.xsave, "480fae28": fpu_state.xrstor,
        "0fc72e": fpu_state.xsaves, "0f01d0": fpu_state.xgetbv, "0f01f9": system.rdtscp,
        "0f01c8": system.monitor, "f0480fc70f": system.cmpxchg, "9b": system.fwait,
        "cc": interrupts.software_interrupt, "cd80": interrupts.software_interrupt,
        "660fefc0": native.run_natively, "d9e8": native.run_natively,
    }
    for code, handler in cases.items():
        assert fallback.handler_for(decoded(code)) is handler, code


def test_mnemonic_names() -> None:
    assert fallback.mnemonic_name(decoded("f0480fc70f")) == "cmpxchg16b"
    assert fallback.mnemonic_name(decoded("9b")) == "wait"
    assert fallback.mnemonic_name(decoded("0f58c1")) == "addps"


class FakeDomain:
    def __init__(self) -> None:
        self.emulation_counts: collections.Counter[str] = collections.Counter(
            {"ldmxcsr": 1, "addps": 3})
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_counts_are_logged_in_one_line() -> None:
    d: Any = FakeDomain()
    fallback.log_counts(d)
    assert d.lines == ["instruction fallbacks: 4 (addps 3, ldmxcsr 1)"]


class FakeRunner:
    """What handle_emulation_failure reads of a VcpuRunner; the vCPU is a Machine."""

    def __init__(self, machine: Machine) -> None:
        self.vcpu_id = 0
        self.domain = LoggingDomain(machine)
        self.kvm = self  # the registers come from CpuState.from_kvm, patched by the test
        self.sregs = b""

    def unpack_regs(self) -> tuple[int, ...]:
        return ()

    def describe(self) -> str:
        return "(registers)"


class LoggingDomain:
    def __init__(self, machine: Machine) -> None:
        self.memory = machine.memory
        self.emulation_counts: collections.Counter[str] = collections.Counter()
        self.on_shutdown: list[Any] = []
        self.lines: list[str] = []
        self.crashed: list[str] = []
        self._reported: set[str] = set()

    def log(self, message: str) -> None:
        self.lines.append(message)

    def log_once(self, key: str, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self.log(message)

    def crash(self, why: str) -> None:
        self.crashed.append(why)


def test_undecodable_instructions_are_each_a_ud_but_logged_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every distinct invalid encoding is the guest's #UD; the log (and the domain's
    set of reported keys) must not grow with each one."""
    m = Machine()
    try:
        runner: Any = FakeRunner(m)
        monkeypatch.setattr(fallback, "KvmBackend", lambda _runner: m)
        codes = ["06", "07", "0e", "16", "17", "1e", "1f", "27", "2f", "37", "3f", "60", "61",
                 "d40a", "d50a", "62c0"]
        for code in codes:  # not instructions in 64-bit mode
            st = state64()
            m.put(st.rip, bytes.fromhex(code) + bytes(14))
            monkeypatch.setattr(fallback.CpuState, "from_kvm", lambda *_a, st=st: st)
            m.injected = []
            fallback.handle_emulation_failure(runner, InternalErrorExit(1, ()))
            assert [e.vector for e in m.injected] == [V.UD], code
        assert not runner.domain.crashed
        assert len(runner.domain.lines) == 1 and "#UD" in runner.domain.lines[0]
        assert len(runner.domain._reported) == 1
    finally:
        m.close()
