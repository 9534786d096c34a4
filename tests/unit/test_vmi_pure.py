"""pyxen.vmi's pure parts: DebugExit decoding, the register dict, the guest-debug state."""

from __future__ import annotations

import ctypes
import struct

import pytest

from pyxen.kvm import ioctls as k
from pyxen.kvm import structs as s
from pyxen.kvm.exits import KVM_EXIT_DEBUG, DebugExit, decode_exit
from pyxen.vmi.events import (
    Action,
    Event,
    EventKind,
    EventResponse,
    guest_debug,
)
from pyxen.vmi.regs import GPR_NAMES, SETTABLE, regs_to_dict, set_in_regs


def test_debug_exit_layout_matches_the_uapi() -> None:
    # struct kvm_debug_exit_arch { __u32 exception; __u32 pad; __u64 pc, dr6, dr7; }
    assert ctypes.sizeof(s.kvm_debug_exit_arch) == 32
    assert s.kvm_debug_exit_arch.pc.offset == 8
    assert s.kvm_debug_exit_arch.dr6.offset == 16
    assert s.kvm_debug_exit_arch.dr7.offset == 24
    # struct kvm_guest_debug { __u32 control, pad; struct { __u64 debugreg[8]; } arch; }
    assert ctypes.sizeof(s.kvm_guest_debug) == 72
    assert k.KVM_SET_GUEST_DEBUG == 0x4048AE9B  # _IOW(KVMIO, 0x9b, struct kvm_guest_debug)


def test_decode_debug_exit() -> None:
    page = bytearray(ctypes.sizeof(s.kvm_run))
    run = s.kvm_run.from_buffer(page)
    struct.pack_into("<I", page, s.kvm_run.exit_reason.offset, KVM_EXIT_DEBUG)
    base = s.kvm_run.exit.offset
    struct.pack_into("<IIQQQ", page, base, 1, 0, 0x100070, 0xFFFF4FF1, 0x403)
    decoded = decode_exit(run, page)
    assert decoded == DebugExit(1, 0x100070, 0xFFFF4FF1, 0x403)
    del run


def test_register_dict() -> None:
    regs = s.kvm_regs()
    for i, name in enumerate(GPR_NAMES):
        setattr(regs, name, 0x1000 + i)
    sregs = s.kvm_sregs()
    sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4, sregs.efer = 0x80000011, 0x20, 0x110000, 0x20, 0x500
    sregs.cs.selector, sregs.cs.base, sregs.fs.base = 0x10, 0, 0xDEAD000
    sregs.ldt.selector, sregs.gdt.base, sregs.idt.limit = 0x28, 0x117000, 0xFFF
    d = regs_to_dict(regs, sregs)
    assert d["rax"] == 0x1000 and d["rflags"] == 0x1000 + 17 and d["rip"] == 0x1000 + 16
    assert d["r15"] == 0x1000 + 15
    assert (d["cr0"], d["cr2"], d["cr3"], d["cr4"], d["efer"]) == (
        0x80000011, 0x20, 0x110000, 0x20, 0x500)
    assert d["cs_sel"] == 0x10 and d["fs_base"] == 0xDEAD000
    assert d["ldtr_sel"] == 0x28 and d["gdtr_base"] == 0x117000 and d["idtr_limit"] == 0xFFF


def test_set_in_regs() -> None:
    regs = s.kvm_regs()
    set_in_regs(regs, "rip", -1)
    assert regs.rip == (1 << 64) - 1
    assert "rip" in SETTABLE and "cr3" not in SETTABLE
    with pytest.raises(ValueError):
        set_in_regs(regs, "cr3", 0)
    with pytest.raises(ValueError):
        set_in_regs(regs, "nonsense", 0)


def test_guest_debug_state() -> None:
    assert guest_debug(False, [None] * 4) is None
    step = guest_debug(True, [None] * 4)
    assert step is not None
    assert step.control == k.KVM_GUESTDBG_ENABLE | k.KVM_GUESTDBG_SINGLESTEP
    bp = guest_debug(False, [0x100070, None, 0x2000, None])
    assert bp is not None
    assert bp.control == k.KVM_GUESTDBG_ENABLE | k.KVM_GUESTDBG_USE_HW_BP
    assert list(bp.arch.debugreg)[:4] == [0x100070, 0, 0x2000, 0]
    assert bp.arch.debugreg[7] == 0x400 | 1 | 1 << 4  # L0, L2, RW/LEN 00: execute
    only0 = guest_debug(False, [0x100070, None, None, None])
    assert only0 is not None and only0.arch.debugreg[7] == 0x401  # feasibility: 0x403 incl. G0


def test_events_and_responses() -> None:
    e = Event.breakpoint(-1, lambda v, i: None)
    assert e.kind is EventKind.BREAKPOINT and e.address == (1 << 64) - 1
    st = Event.singlestep(1, lambda v, i: None)
    assert st.kind is EventKind.SINGLESTEP and st.vcpu == 1
    assert st != Event.singlestep(1, st.callback)  # identity is the registration
    assert EventResponse.CONTINUE.action is Action.CONTINUE
    assert EventResponse.SINGLESTEP.action is Action.SINGLESTEP
    r = EventResponse.set_regs({"rip": 5, "rax": 1})
    assert r.action is Action.SET_REGS and dict(r.regs) == {"rip": 5, "rax": 1}
