"""Exception checks that come before an instruction touches anything (SDM vol. 2
"Exceptions" sections; vol. 1 13.x and 14.x for the XSAVE and AVX enables).

Order as on hardware: #UD (LOCK prefix, a disabled extension), then #NM
(CR0.TS; CR0.EM for the x87/FXSAVE family), then the operand's own faults.
"""

from __future__ import annotations

from pyxen.hv.emulate.context import Emulation
from pyxen.hv.emulate.faults import GuestException, nm, ud
from pyxen.hv.emulate.faults import Vector as V
from pyxen.hv.emulate.state import CR0_EM, CR0_TS, CR4_OSFXSR, CR4_OSXSAVE
from pyxen.hv.emulate.xstate import FCW as FCW_OFF
from pyxen.hv.emulate.xstate import FSW, XFEATURE_SSE, XFEATURE_YMM, u16


def fxsr(emu: Emulation) -> None:
    """FXSAVE/FXRSTOR: #UD with LOCK; #NM if CR0.TS or CR0.EM."""
    emu.require_no_lock()
    if emu.old.cr0 & (CR0_TS | CR0_EM):
        raise nm("CR0.TS or CR0.EM set")


def sse(emu: Emulation) -> None:
    """Legacy SSE: #UD with LOCK, CR0.EM = 1 or CR4.OSFXSR = 0; #NM if CR0.TS."""
    emu.require_no_lock()
    if emu.old.cr0 & CR0_EM:
        raise ud("CR0.EM set")
    if not emu.old.cr4 & CR4_OSFXSR:
        raise ud("CR4.OSFXSR clear")
    if emu.old.cr0 & CR0_TS:
        raise nm("CR0.TS set")


def avx(emu: Emulation, xcr0_bits: int = XFEATURE_SSE | XFEATURE_YMM) -> None:
    """VEX/EVEX on vector registers: #UD unless CR4.OSXSAVE and XCR0 enables ``xcr0_bits``;
    #UD in real and virtual-8086 mode; #NM if CR0.TS."""
    emu.require_no_lock()
    if not emu.old.protected or emu.old.v86:
        raise ud("VEX/EVEX outside protected mode")
    if not emu.old.cr4 & CR4_OSXSAVE:
        raise ud("CR4.OSXSAVE clear")
    if emu.xcr0() & xcr0_bits != xcr0_bits:
        raise ud(f"XCR0 {emu.xcr0():#x} lacks {xcr0_bits:#x}")
    if emu.old.cr0 & CR0_TS:
        raise nm("CR0.TS set")


def xsave(emu: Emulation) -> None:
    """XSAVE family and XGETBV: #UD with LOCK or CR4.OSXSAVE = 0; #NM if CR0.TS."""
    emu.require_no_lock()
    if not emu.old.cr4 & CR4_OSXSAVE:
        raise ud("CR4.OSXSAVE clear")
    if emu.old.cr0 & CR0_TS:
        raise nm("CR0.TS set")


def x87_pending(area: bytes | bytearray) -> bool:
    """An unmasked x87 exception is pending (FSW.ES, or a flag its mask does not cover)."""
    fsw = u16(area, FSW)
    return bool(fsw & 0x80 or fsw & ~u16(area, FCW_OFF) & 0x3F)


def no_pending_x87(emu: Emulation) -> None:
    """A waiting x87 or MMX instruction takes a pending x87 exception first: #MF
    (delivered as #MF whatever CR0.NE says: there is no FERR#/IRQ 13 path here)."""
    if x87_pending(emu.xsave()):
        raise GuestException(V.MF, why="pending x87 exception")


def aligned(la: int, alignment: int) -> None:
    if la & (alignment - 1):
        raise GuestException(V.GP, 0, why=f"operand at {la:#x} not {alignment}-byte aligned")
