"""Dispatch and bookkeeping of the instruction fallback (no KVM)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from iced_x86 import Decoder

from pyxen.hv.emulate import fallback, fpu_state, interrupts, native, system
from pyxen.hv.emulate.decode import Decoded


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
