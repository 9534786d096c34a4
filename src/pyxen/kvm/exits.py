"""Typed values for KVM_RUN exits, decoded once from the kvm_run page.

``decode_exit`` is the only place that interprets ``kvm_run.exit_reason``;
the vCPU loop dispatches on the type of the value it returns.  Port-I/O data
is not copied here: the handler reads or writes it in the kvm_run mapping
at ``data_offset`` (see ``Vcpu.io_data``).
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from typing import NamedTuple

from pyxen.kvm.structs import kvm_run, kvm_run_io

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_X86_RDMSR = 29
KVM_EXIT_X86_WRMSR = 30

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1


class IoExit(NamedTuple):
    """IN/OUT (possibly a string instruction with ``count`` > 1).

    All exits are NamedTuples rather than dataclasses: one is made on every
    exit, tuple construction is the cheapest typed value Python has, and a
    NamedTuple class costs a sixth of a dataclass's at import (start-up).
    """

    port: int
    size: int
    is_out: bool
    repeat: int
    data_offset: int


class MmioExit(NamedTuple):
    """An access to guest-physical memory that no memory slot backs."""

    phys_addr: int
    length: int
    is_write: bool
    data: bytes


class MsrExit(NamedTuple):
    """RDMSR/WRMSR of an MSR the filter sends to user space."""

    is_write: bool
    number: int  # the MSR's index
    data: int
    reason: int


class HltExit(NamedTuple):
    """HLT with no in-kernel local APIC."""


class IrqWindowExit(NamedTuple):
    """The guest can take an interrupt (requested with request_interrupt_window)."""


class ShutdownExit(NamedTuple):
    """Triple fault."""


class InterruptedExit(NamedTuple):
    """KVM_RUN returned early: a signal, or immediate_exit was set."""


class InternalErrorExit(NamedTuple):
    """KVM could not handle the guest (e.g. an emulation failure, suberror 1)."""

    suberror: int
    data: tuple[int, ...]


class FailEntryExit(NamedTuple):
    """VM entry failed (invalid guest state)."""

    reason: int


class DebugExit(NamedTuple):
    """A guest-debug event (KVM_SET_GUEST_DEBUG): a single step or a breakpoint.

    From ``kvm_run.debug.arch`` (``struct kvm_debug_exit_arch``: u32
    exception, u32 pad, u64 pc, u64 dr6, u64 dr7).  ``exception`` is the
    vector (1 for #DB: single step, DR0-3 hit; 3 for an int3 with
    USE_SW_BP on hosts that report it), ``pc`` the RIP (after the
    instruction for a step, at the address for an execute breakpoint),
    ``dr6`` says why (BS = bit 14 for a step, B0-B3 = bits 0-3 for a DR
    hit).
    """

    exception: int
    pc: int
    dr6: int = 0
    dr7: int = 0


class SystemEventExit(NamedTuple):
    """KVM_SYSTEM_EVENT (shutdown, reset, crash)."""

    type: int


class UnknownExit(NamedTuple):
    """Any exit reason pyxen does not handle."""

    reason: int


Exit = (
    IoExit
    | MmioExit
    | MsrExit
    | HltExit
    | IrqWindowExit
    | ShutdownExit
    | InterruptedExit
    | InternalErrorExit
    | FailEntryExit
    | DebugExit
    | SystemEventExit
    | UnknownExit
)

_HLT = HltExit()
_IRQ_WINDOW = IrqWindowExit()
_SHUTDOWN = ShutdownExit()
_INTERRUPTED = InterruptedExit()


_REASON = struct.Struct("<I")
_REASON_OFFSET = kvm_run.exit_reason.offset
_IO = struct.Struct("<BBHIQ")
_IO_OFFSET = kvm_run.exit.offset
if _IO.size != ctypes.sizeof(kvm_run_io):  # pragma: no cover - a layout bug
    raise ImportError("kvm_run_io layout mismatch")


def decode_exit(run: kvm_run, page: mmap.mmap | bytearray) -> Exit:
    """Turn the exit described by ``run`` (mapped at ``page``) into a typed value."""
    reason = _REASON.unpack_from(page, _REASON_OFFSET)[0]
    if reason == KVM_EXIT_IO:
        direction, size, port, count, data_offset = _IO.unpack_from(page, _IO_OFFSET)
        return IoExit(port, size, direction == KVM_EXIT_IO_OUT, count, data_offset)
    if reason == KVM_EXIT_MMIO:
        m = run.exit.mmio
        length = min(m.len, 8)
        return MmioExit(m.phys_addr, length, bool(m.is_write), bytes(m.data)[:length])
    if reason in (KVM_EXIT_X86_RDMSR, KVM_EXIT_X86_WRMSR):
        msr = run.exit.msr
        return MsrExit(reason == KVM_EXIT_X86_WRMSR, msr.index, msr.data, msr.reason)
    if reason == KVM_EXIT_HLT:
        return _HLT
    if reason == KVM_EXIT_INTR:
        return _INTERRUPTED
    if reason == KVM_EXIT_IRQ_WINDOW_OPEN:
        return _IRQ_WINDOW
    if reason == KVM_EXIT_SHUTDOWN:
        return _SHUTDOWN
    if reason == KVM_EXIT_INTERNAL_ERROR:
        internal = run.exit.internal
        n = min(internal.ndata, 16)
        return InternalErrorExit(internal.suberror, tuple(internal.data[:n]))
    if reason == KVM_EXIT_FAIL_ENTRY:
        return FailEntryExit(run.exit.fail_entry.hardware_entry_failure_reason)
    if reason == KVM_EXIT_DEBUG:
        debug = run.exit.debug
        return DebugExit(debug.exception, debug.pc, debug.dr6, debug.dr7)
    if reason == KVM_EXIT_SYSTEM_EVENT:
        return SystemEventExit(run.exit.system_event.type)
    return UnknownExit(reason)
