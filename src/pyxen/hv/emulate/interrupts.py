"""Software interrupts (INT3, INT n, INTO) delivered through the guest's IDT.

This KVM cannot emulate INT n/INT3 in protected mode, and injecting them
with KVM_SET_VCPU_EVENTS would lose what makes them software interrupts
(the gate-DPL check, the return address after the instruction, vectors
32-255 that exception injection cannot carry).  So pyxen performs the
delivery itself, as the processor does (SDM 3A 6.12, 6.14, 6.12.1.1 and
the INT n pseudo-code in vol. 2):

- The gate: vector * 16 (IA-32e) or * 8 (protected mode) + size - 1 must be
  within the IDT limit, the gate type an interrupt or trap gate (64-bit
  ones in IA-32e mode, 32-bit ones in protected mode), else #GP(vector*8+2);
  a software interrupt needs gate DPL >= CPL, else #GP(vector*8+2); a gate
  that is not present is #NP(vector*8+2).
- The target code segment (GDT or LDT): a non-null code segment with
  DPL <= CPL (#GP(selector)), present (#NP(selector)), a 64-bit one in
  IA-32e mode (#GP(selector)).
- The stack: a non-conforming segment with DPL < CPL switches to the TSS's
  stack for the new privilege level (IA-32e: RSPn, or ISTn whenever the gate
  names one, a null SS with RPL = new CPL, RSP aligned down to 16; 32-bit:
  SSn:ESPn with the SS descriptor's checks, #TS(selector)); then SS:RSP (on
  a switch, and always in IA-32e mode), RFLAGS, CS and the return address
  (the next instruction: these are traps) are pushed.  A push that faults is
  the guest's #PF/#SS, with nothing changed.
- Afterwards TF, NT, RF and VM are clear, IF too for an interrupt gate.
INTO raises vector 4 only when OF = 1 (it is invalid in 64-bit mode: #UD).
Not emulated (the domain is crashed with the reason): real-mode and
virtual-8086 delivery (KVM handles real mode itself), task gates, 16-bit
gates, INT1/ICEBP.  Descriptors' accessed bits are not set.
"""

from __future__ import annotations

from iced_x86 import Mnemonic, Register

from pyxen.hv.emulate.address import is_canonical, linear_address
from pyxen.hv.emulate.context import Emulation
from pyxen.hv.emulate.faults import GuestException, Unsupported, gp, idt_error_code
from pyxen.hv.emulate.faults import Vector as V
from pyxen.hv.emulate.state import (
    M32,
    M64,
    RFLAGS_IF,
    RFLAGS_NT,
    RFLAGS_OF,
    RFLAGS_RF,
    RFLAGS_TF,
    RFLAGS_VM,
    RSP,
    Segment,
)
from pyxen.hv.emulate.xstate import u16, u32

_GATE_INTERRUPT = 0xE  # 32-bit (protected mode) or 64-bit (IA-32e) interrupt gate
_GATE_TRAP = 0xF
_TYPE_CODE = 1 << 3
_TYPE_CONFORMING = 1 << 2
_TYPE_WRITABLE = 1 << 1
_TYPE_ACCESSED = 1 << 0


def software_interrupt(emu: Emulation) -> None:
    mnemonic = emu.instr.mnemonic
    if mnemonic == Mnemonic.INT3:
        vector = 3
    elif mnemonic == Mnemonic.INTO:
        if not emu.old.rflags & RFLAGS_OF:
            emu.complete()
            return
        vector = 4
    elif mnemonic == Mnemonic.INT:
        vector = emu.instr.immediate8
    else:
        raise Unsupported(f"{emu.decoded.text} is not emulated")
    if not emu.old.protected:
        raise Unsupported("real-mode software interrupts are left to KVM")
    if emu.old.v86:
        raise Unsupported("virtual-8086 mode software interrupts are not emulated")
    deliver(emu, vector)


def _read_descriptor(emu: Emulation, selector: int) -> tuple[Segment, int]:
    """The segment a selector names (GDT or LDT) and its raw access byte; #GP(selector)
    for an index beyond the table."""
    st = emu.old
    index = selector & ~7
    if selector & 4:
        if st.ldt.unusable:
            raise gp("selector in an unusable LDT", selector & 0xFFFC)
        base, limit = st.ldt.base, st.ldt.limit
    else:
        base, limit = st.gdt_base, st.gdt_limit
    if index + 7 > limit:
        raise gp(f"selector {selector:#x} beyond the descriptor table", selector & 0xFFFC)
    raw = emu.mem.read((base + index) & emu.mem.wrap, 8, user=False)
    access, flags = raw[5], raw[6] >> 4
    seg_limit = u16(raw, 0) | (raw[6] & 0xF) << 16
    if flags & 8:
        seg_limit = seg_limit << 12 | 0xFFF
    seg = Segment(selector=selector, base=u16(raw, 2) | raw[4] << 16 | raw[7] << 24,
                  limit=seg_limit, type=(access & 0xF) | _TYPE_ACCESSED,
                  present=bool(access & 0x80), dpl=access >> 5 & 3, db=bool(flags & 4),
                  s=bool(access & 0x10), l=bool(flags & 2), g=bool(flags & 8),
                  avl=bool(flags & 1))
    return seg, access


def _tss_read(emu: Emulation, offset: int, size: int) -> int:
    tr = emu.old.tr
    if tr.unusable or offset + size - 1 > tr.limit:
        raise GuestException(V.TS, tr.selector & 0xFFFC, why="TSS too small for the stack")
    return int.from_bytes(emu.mem.read((tr.base + offset) & emu.mem.wrap, size, user=False),
                          "little")


def deliver(emu: Emulation, vector: int) -> None:
    st = emu.old
    ia32e = st.long_mode
    gate_size = 16 if ia32e else 8
    err = idt_error_code(vector)
    if vector * gate_size + gate_size - 1 > st.idt_limit:
        raise gp(f"vector {vector:#x} beyond the IDT limit", err)
    gate = emu.mem.read((st.idt_base + vector * gate_size) & emu.mem.wrap, gate_size,
                        user=False)
    gtype, gdpl, gpresent = gate[5] & 0xF, gate[5] >> 5 & 3, bool(gate[5] & 0x80)
    if gtype not in (_GATE_INTERRUPT, _GATE_TRAP):
        if not ia32e and gtype in (5, 6, 7):
            raise Unsupported(f"vector {vector:#x}: task and 16-bit gates are not emulated")
        raise gp(f"vector {vector:#x}: IDT gate type {gtype:#x}", err)
    if gdpl < st.cpl:
        raise gp(f"vector {vector:#x}: gate DPL {gdpl} < CPL {st.cpl}", err)
    if not gpresent:
        raise GuestException(V.NP, err, why=f"vector {vector:#x}: gate not present")
    selector = u16(gate, 2)
    offset = u16(gate, 0) | u16(gate, 6) << 16
    if ia32e:
        offset |= u32(gate, 8) << 32
    if selector & 0xFFFC == 0:
        raise gp("null code segment in the gate")
    cs, _access = _read_descriptor(emu, selector)
    sel_err = selector & 0xFFFC
    if not cs.s or not cs.type & _TYPE_CODE or cs.dpl > st.cpl:
        raise gp(f"gate selector {selector:#x} is not a usable code segment", sel_err)
    if not cs.present:
        raise GuestException(V.NP, sel_err, why=f"code segment {selector:#x} not present")
    if ia32e and not (cs.l and not cs.db):
        raise gp(f"code segment {selector:#x} is not a 64-bit segment", sel_err)
    new_cpl = st.cpl if cs.type & _TYPE_CONFORMING else cs.dpl
    return_ip = (st.rip + emu.instr.len) & st.ip_mask
    old_flags = st.rflags & ~RFLAGS_RF
    if ia32e and not is_canonical(st, offset):
        raise gp(f"handler address {offset:#x} is not canonical")
    if not ia32e and offset > cs.limit:
        raise gp(f"handler offset {offset:#x} beyond its code segment")
    # The pushes come last: they check every page before writing any.
    if ia32e:
        _push_frame_64(emu, gate[4] & 7, new_cpl, old_flags, return_ip)
    else:
        _push_frame_32(emu, new_cpl, old_flags, return_ip)
    cs.selector = (selector & 0xFFFC) | new_cpl
    emu.new.cs = cs
    emu.segments_changed = True
    emu.new.rip = offset
    flags = emu.new.rflags & ~(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM)
    if gtype == _GATE_INTERRUPT:
        flags &= ~RFLAGS_IF
    emu.new.rflags = flags


def _push_frame_64(emu: Emulation, ist: int, new_cpl: int, flags: int,
                   return_ip: int) -> None:
    st = emu.old
    old_rsp = st.gprs[RSP]
    if ist:
        rsp = _tss_read(emu, 0x24 + (ist - 1) * 8, 8)
    elif new_cpl != st.cpl:
        rsp = _tss_read(emu, 4 + new_cpl * 8, 8)
    else:
        rsp = old_rsp
    rsp = (rsp & ~0xF) & M64
    frame_rsp = (rsp - 40) & M64
    if not (is_canonical(st, rsp - 1 & M64) and is_canonical(st, frame_rsp)):
        raise GuestException(V.SS, 0, why=f"stack {rsp:#x} is not canonical")
    frame = b"".join(v.to_bytes(8, "little") for v in (
        return_ip, st.cs.selector, flags, old_rsp, st.ss.selector))
    emu.mem.write(frame_rsp, frame, new_cpl == 3)
    emu.new.gprs[RSP] = frame_rsp
    if new_cpl != st.cpl:
        emu.new.ss = Segment(selector=new_cpl, base=0, limit=0xFFFF_FFFF, type=3,
                             present=True, dpl=new_cpl, db=True, s=True, g=True)


def _push_frame_32(emu: Emulation, new_cpl: int, flags: int, return_ip: int) -> None:
    st = emu.old
    if st.tr.type not in (9, 11):
        raise Unsupported("delivery with a 16-bit TSS is not emulated")
    values = [flags & M32, st.cs.selector, return_ip & M32]
    if new_cpl != st.cpl:
        ss_sel = _tss_read(emu, 8 + new_cpl * 8, 2)
        esp = _tss_read(emu, 4 + new_cpl * 8, 4)
        if ss_sel & 0xFFFC == 0:
            raise GuestException(V.TS, 0, why="null SS in the TSS")
        ss, _ = _read_descriptor(emu, ss_sel)
        bad = (ss_sel & 3 != new_cpl or ss.dpl != new_cpl or not ss.s
               or ss.type & _TYPE_CODE or not ss.type & _TYPE_WRITABLE)
        if bad:
            raise GuestException(V.TS, ss_sel & 0xFFFC, why=f"bad stack segment {ss_sel:#x}")
        if not ss.present:
            raise GuestException(V.SS, ss_sel & 0xFFFC, why="stack segment not present")
        values = [st.ss.selector, st.gprs[RSP] & M32, *values]
        new_ss = ss
    else:
        esp, new_ss = st.gprs[RSP], st.ss
    wrap = M32 if new_ss.db else 0xFFFF
    frame_sp = (esp - 4 * len(values)) & wrap
    probe = emu.old.copy()
    probe.ss = new_ss
    la = linear_address(probe, Register.SS, frame_sp, 4 * len(values), write=True)
    frame = b"".join(v.to_bytes(4, "little") for v in reversed(values))
    emu.mem.write(la, frame, new_cpl == 3)
    emu.new.gprs[RSP] = frame_sp if new_ss.db else (esp & ~0xFFFF) | frame_sp
    if new_cpl != st.cpl:
        emu.new.ss = new_ss

