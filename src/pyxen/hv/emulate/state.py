"""The vCPU as the emulator sees it: registers, segments, control registers, mode.

``CpuState`` is a copy taken at the exit.  Handlers compute the new values
into a ``CpuState.copy()`` and the fallback commits it only when the whole
instruction succeeded, so a fault leaves the guest exactly as it was.

Mode (SDM 3A 2.2, 5.2.1 and 9.8.5): real mode while CR0.PE = 0, virtual-8086
while RFLAGS.VM = 1, 64-bit while EFER.LMA = 1 and CS.L = 1, otherwise the
default operand size is CS.D/B's.  CPL is SS.DPL (as KVM keeps it; CS.RPL
equals it outside transitions); real mode is CPL 0, virtual-8086 CPL 3.

General registers are indexed in ``kvm_regs`` order (rax rbx rcx rdx rsi rdi
rsp rbp r8 ... r15), which is also the order of the native executor's
register block.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from iced_x86 import Register, Register_, RegisterExt

from pyxen.kvm.structs import kvm_segment, kvm_sregs

CR0_PE = 1 << 0
CR0_MP = 1 << 1
CR0_EM = 1 << 2
CR0_TS = 1 << 3
CR0_NE = 1 << 5
CR0_AM = 1 << 18
CR0_PG = 1 << 31
CR4_TSD = 1 << 2
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
CR4_OSXSAVE = 1 << 18
EFER_NXE = 1 << 11
EFER_LMA = 1 << 10
EFER_FFXSR = 1 << 14

RFLAGS_CF = 1 << 0
RFLAGS_FIXED = 1 << 1
RFLAGS_PF = 1 << 2
RFLAGS_AF = 1 << 4
RFLAGS_ZF = 1 << 6
RFLAGS_SF = 1 << 7
RFLAGS_TF = 1 << 8
RFLAGS_IF = 1 << 9
RFLAGS_DF = 1 << 10
RFLAGS_OF = 1 << 11
RFLAGS_NT = 1 << 14
RFLAGS_RF = 1 << 16
RFLAGS_VM = 1 << 17
RFLAGS_AC = 1 << 18
RFLAGS_ARITH = RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF

M64 = (1 << 64) - 1
M32 = 0xFFFF_FFFF

GPR_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP = range(8)

_GPR_INDEX = {
    Register.RAX: RAX, Register.RBX: RBX, Register.RCX: RCX, Register.RDX: RDX,
    Register.RSI: RSI, Register.RDI: RDI, Register.RSP: RSP, Register.RBP: RBP,
    **{getattr(Register, f"R{n}"): n for n in range(8, 16)},
}
_HIGH_BYTE = frozenset({Register.AH, Register.BH, Register.CH, Register.DH})


def gpr_index(reg: Register_) -> int:
    """The kvm_regs index of a general register of any size (AH ... R15)."""
    return _GPR_INDEX[RegisterExt.full_register(reg)]


def read_gpr(gprs: list[int], reg: Register_) -> int:
    """The value of ``reg`` (8, 16, 32 or 64 bits wide) out of the 64-bit registers."""
    value = gprs[gpr_index(reg)]
    if reg in _HIGH_BYTE:
        return (value >> 8) & 0xFF
    return value & ((1 << (8 * RegisterExt.size(reg))) - 1)


@dataclass(slots=True)
class Segment:
    """A segment register with its hidden descriptor part, as kvm_segment holds it."""

    selector: int = 0
    base: int = 0
    limit: int = 0xFFFF_FFFF
    type: int = 3
    present: int = 1  # the flags are 0 or 1, as in kvm_segment
    dpl: int = 0
    db: int = 1
    s: int = 1
    l: int = 0  # noqa: E741 - the descriptor bit's name
    g: int = 1
    avl: int = 0
    unusable: int = 0

    def to_kvm(self, seg: kvm_segment) -> None:
        seg.selector, seg.base, seg.limit, seg.type = (self.selector, self.base, self.limit,
                                                       self.type)
        seg.present, seg.dpl, seg.db, seg.s = int(self.present), self.dpl, int(self.db), \
            int(self.s)
        seg.l, seg.g, seg.avl, seg.unusable = int(self.l), int(self.g), int(self.avl), \
            int(self.unusable)


# kvm_sregs: 8 x kvm_segment (base, limit, selector, type, present, dpl, db, s, l, g,
# avl, unusable, padding), gdt and idt (base, limit, padding), cr0 cr2 cr3 cr4 cr8 efer.
_SEG_FORMAT = "QIHBBBBBBBBBx"
_SEG_FIELDS = 12
_SREGS = struct.Struct("<" + _SEG_FORMAT * 8 + "QH6xQH6x" + "6Q")
if _SREGS.size != kvm_sregs.apic_base.offset:  # pragma: no cover - a layout bug
    raise ImportError("kvm_sregs layout mismatch")


@dataclass(slots=True)
class CpuState:
    gprs: list[int]
    rip: int
    rflags: int
    cr0: int
    cr2: int
    cr3: int
    cr4: int
    efer: int
    cs: Segment
    ds: Segment
    es: Segment
    fs: Segment
    gs: Segment
    ss: Segment
    tr: Segment
    ldt: Segment
    gdt_base: int = 0
    gdt_limit: int = 0xFFFF
    idt_base: int = 0
    idt_limit: int = 0xFFF

    @classmethod
    def from_kvm(cls, regs: tuple[int, ...], sregs: bytes | bytearray | memoryview,
                 offset: int = 0) -> CpuState:
        """From kvm_regs as a tuple (``Vcpu.unpack_regs``) and the bytes of a kvm_sregs."""
        f = _SREGS.unpack_from(sregs, offset)
        cs, ds, es, fs, gs, ss, tr, ldt = (
            Segment(f[i + 2], f[i], f[i + 1], *f[i + 3 : i + _SEG_FIELDS])
            for i in range(0, 8 * _SEG_FIELDS, _SEG_FIELDS))
        (gdt_base, gdt_limit, idt_base, idt_limit, cr0, cr2, cr3, cr4, _cr8,
         efer) = f[8 * _SEG_FIELDS :]
        return cls(list(regs[:16]), regs[16], regs[17], cr0, cr2, cr3, cr4, efer, cs, ds, es,
                   fs, gs, ss, tr, ldt, gdt_base, gdt_limit, idt_base, idt_limit)

    def copy(self) -> CpuState:
        """A copy to change: the register list is new; ``Segment`` objects are shared
        (they are replaced, never changed, once a state holds them)."""
        return CpuState(list(self.gprs), self.rip, self.rflags, self.cr0, self.cr2,
                        self.cr3, self.cr4, self.efer, self.cs, self.ds, self.es, self.fs,
                        self.gs, self.ss, self.tr, self.ldt, self.gdt_base, self.gdt_limit,
                        self.idt_base, self.idt_limit)

    def segment(self, reg: Register_) -> Segment:
        """The segment register named by an iced segment Register."""
        return {Register.CS: self.cs, Register.DS: self.ds, Register.ES: self.es,
                Register.FS: self.fs, Register.GS: self.gs, Register.SS: self.ss}[reg]

    @property
    def long_mode(self) -> bool:
        return bool(self.efer & EFER_LMA)

    @property
    def protected(self) -> bool:
        return bool(self.cr0 & CR0_PE)

    @property
    def v86(self) -> bool:
        return self.protected and bool(self.rflags & RFLAGS_VM)

    @property
    def bitness(self) -> int:
        """16, 32 or 64: the default operand and address size of the code running."""
        if not self.protected or self.v86:
            return 16
        if self.long_mode and self.cs.l:
            return 64
        return 32 if self.cs.db else 16

    @property
    def cpl(self) -> int:
        if not self.protected:
            return 0
        if self.v86:
            return 3
        return self.ss.dpl & 3

    @property
    def ip_mask(self) -> int:
        return M64 if self.bitness == 64 else (M32 if self.bitness == 32 else 0xFFFF)

    def mode_name(self) -> str:
        if not self.protected:
            return "real mode"
        if self.v86:
            return "virtual-8086 mode"
        if self.long_mode:
            return "64-bit mode" if self.cs.l else f"compatibility mode ({self.bitness}-bit)"
        return f"{self.bitness}-bit protected mode"
