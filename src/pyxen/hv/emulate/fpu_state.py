"""Instructions that move the FPU/SSE/AVX state itself: LDMXCSR/STMXCSR (and VEX),
FXSAVE/FXRSTOR (+64), XSAVE/XSAVEOPT/XSAVEC (+64), XRSTOR (+64), XGETBV.

They work on the vCPU's XSAVE area from KVM (``Emulation.xsave``) and on
guest memory; none runs on the host CPU.  RFBM = XCR0 (the *guest's*, from
KVM_GET_XCRS) AND EDX:EAX.  Save formats and rules: SDM vol. 1 13.4-13.10
and vol. 2 under each instruction; see ``xstate`` for the layout.

- XSAVE writes every requested component (XSAVE does not use the init
  optimization) and only the XSTATE_BV field of the header.
- XSAVEOPT uses the init optimization (components not in use are not
  written, their XSTATE_BV bit is 0) but not the modified optimization,
  which is always allowed.
- XSAVEC writes the compacted format: components in use only, XCOMP_BV =
  RFBM | bit 63, the header's reserved bytes written as zero.
- XRSTOR takes the standard or (XCOMP_BV bit 63) the compacted form with
  their #GP checks; MXCSR is loaded in the standard form whenever RFBM
  names SSE or AVX, in the compacted form with SSE's XSTATE_BV bit (and set
  to its initial 0x1F80 without it).
- XSAVES/XRSTORS (supervisor state) are not emulated.
All of these fault before they write anything: #UD/#NM, the operand's
segment and alignment (#GP(0) unless 64-byte aligned; 16 for FXSAVE), page
faults for every piece written (or read), reserved MXCSR bits (#GP(0)).
"""

from __future__ import annotations

from iced_x86 import Mnemonic

from pyxen.hv.emulate import checks
from pyxen.hv.emulate.context import Emulation
from pyxen.hv.emulate.faults import Unsupported, gp, ud
from pyxen.hv.emulate.host import host_cpu
from pyxen.hv.emulate.state import CR4_OSFXSR, EFER_FFXSR, M32, RAX, RCX, RDX
from pyxen.hv.emulate.xstate import (
    EXTENDED,
    MXCSR,
    MXCSR_INIT,
    MXCSR_MASK,
    SSE,
    X87,
    XCOMP_BV,
    XCOMP_COMPACTED,
    XFEATURE_SSE,
    XFEATURE_X87,
    XFEATURE_YMM,
    XMM0,
    XSTATE_BV,
    Layout,
    init_component,
    put32,
    put64,
    registers_in_mode,
    u32,
    u64,
    xmm_bytes,
)

_EDX_EAX_MASK = (1 << 63) - 1


def _mxcsr_ok(value: int) -> None:
    if value & ~host_cpu().mxcsr_mask:
        raise gp(f"reserved MXCSR bits in {value:#x}")


def _mark_in_use(area: bytearray, bits: int) -> None:
    put64(area, XSTATE_BV, u64(area, XSTATE_BV) | bits)


def _set32(emu: Emulation, reg: int, value: int) -> None:
    """Write a 32-bit result (zero-extended, as in 64-bit mode)."""
    emu.new.gprs[reg] = value & M32


# -- LDMXCSR / STMXCSR -----------------------------------------------------------

def _mxcsr_checks(emu: Emulation) -> None:
    if emu.instr.mnemonic in (Mnemonic.VLDMXCSR, Mnemonic.VSTMXCSR):
        checks.avx(emu)
    else:
        checks.sse(emu)


def ldmxcsr(emu: Emulation) -> None:
    _mxcsr_checks(emu)
    la = emu.operand_address(4, write=False)
    value = int.from_bytes(emu.read(la, 4), "little")
    _mxcsr_ok(value)
    area = emu.xsave()
    put32(area, MXCSR, value)
    _mark_in_use(area, XFEATURE_SSE)
    emu.xsave_changed = True
    emu.complete()


def stmxcsr(emu: Emulation) -> None:
    _mxcsr_checks(emu)
    la = emu.operand_address(4, write=True)
    emu.write(la, emu.xsave()[MXCSR : MXCSR + 4])
    emu.complete()


# -- FXSAVE / FXRSTOR ---------------------------------------------------------------

def _fast_fxsave(emu: Emulation) -> bool:
    """AMD's EFER.FFXSR: in 64-bit mode at CPL 0, FXSAVE/FXRSTOR skip the XMM registers."""
    return bool(emu.old.efer & EFER_FFXSR) and emu.mode64 and emu.old.cpl == 0


def fxsave(emu: Emulation) -> None:
    checks.fxsr(emu)
    la = emu.operand_address(512, write=True)
    checks.aligned(la, 16)
    area = emu.xsave()
    image = bytearray(area[:XMM0])
    put32(image, MXCSR_MASK, host_cpu().mxcsr_mask)
    if not _fast_fxsave(emu):
        image += area[XMM0 : XMM0 + xmm_bytes(emu.mode64)]
    emu.write(la, image)
    emu.complete()


def fxrstor(emu: Emulation) -> None:
    checks.fxsr(emu)
    la = emu.operand_address(512, write=False)
    checks.aligned(la, 16)
    n = XMM0 + xmm_bytes(emu.mode64)
    image = emu.read(la, n)
    sse = bool(emu.old.cr4 & CR4_OSFXSR)  # without it the SSE part is left alone
    if sse:
        _mxcsr_ok(u32(image, MXCSR))
    area = emu.xsave()
    area[0:MXCSR] = image[0:MXCSR]
    area[32:XMM0] = image[32:XMM0]
    in_use = XFEATURE_X87
    if sse:
        area[MXCSR : MXCSR + 4] = image[MXCSR : MXCSR + 4]
        if not _fast_fxsave(emu):
            area[XMM0:n] = image[XMM0:n]
        in_use |= XFEATURE_SSE
    _mark_in_use(area, in_use)
    emu.xsave_changed = True
    emu.complete()


# -- XSAVE family -------------------------------------------------------------------

def _rfbm(emu: Emulation) -> int:
    requested = ((emu.old.gprs[RDX] & M32) << 32 | (emu.old.gprs[RAX] & M32)) & _EDX_EAX_MASK
    return emu.xcr0() & requested


def _component_bytes(area: bytearray, layout: Layout, i: int, mode64: bool
                     ) -> tuple[int, bytes]:
    """(standard offset, bytes) of extended component ``i`` as saved in this mode."""
    comp = layout.components[i]
    n = registers_in_mode(i, comp.size, mode64)
    return comp.offset, bytes(area[comp.offset : comp.offset + n])


def xsave(emu: Emulation) -> None:
    checks.xsave(emu)
    mnemonic = emu.instr.mnemonic
    compacted = mnemonic in (Mnemonic.XSAVEC, Mnemonic.XSAVEC64)
    init_opt = compacted or mnemonic in (Mnemonic.XSAVEOPT, Mnemonic.XSAVEOPT64)
    layout = host_cpu().layout
    if (compacted and not layout.xsavec) or (init_opt and not compacted and not layout.xsaveopt):
        raise ud(f"{emu.decoded.text}: not supported by this CPU")
    rfbm = _rfbm(emu)
    area = emu.xsave()
    xinuse = u64(area, XSTATE_BV)
    saved = rfbm & xinuse if init_opt else rfbm
    size = layout.compacted_size(rfbm) if compacted else layout.standard_size(rfbm)
    la = emu.operand_address(size, write=True)
    checks.aligned(la, 64)
    pieces: list[tuple[int, bytes]] = []
    if saved & XFEATURE_X87:
        pieces += [(0, bytes(area[0:MXCSR])), (32, bytes(area[32:XMM0]))]
    if rfbm & (XFEATURE_SSE | XFEATURE_YMM):
        mxcsr = bytearray(area[MXCSR : MXCSR + 8])
        put32(mxcsr, 4, host_cpu().mxcsr_mask)
        pieces.append((MXCSR, bytes(mxcsr)))
    if saved & XFEATURE_SSE:
        pieces.append((XMM0, bytes(area[XMM0 : XMM0 + xmm_bytes(emu.mode64)])))
    offsets = layout.compacted_offsets(rfbm) if compacted else None
    for i in sorted(layout.components):
        if saved >> i & 1:
            offset, data = _component_bytes(area, layout, i, emu.mode64)
            pieces.append((offsets[i] if offsets is not None else offset, data))
    if compacted:
        header = bytearray(64)
        put64(header, 0, xinuse & rfbm)
        put64(header, 8, XCOMP_COMPACTED | rfbm)
        pieces.append((XSTATE_BV, bytes(header)))
    else:
        old_bv = int.from_bytes(emu.read(la + XSTATE_BV, 8, for_write=True), "little")
        new_bv = (old_bv & ~rfbm) | (xinuse & rfbm)
        pieces.append((XSTATE_BV, new_bv.to_bytes(8, "little")))
    for offset, data in pieces:  # every piece must be writable before any is written
        emu.mem.check_write(la + offset, len(data), emu.user)
    for offset, data in pieces:
        emu.write(la + offset, data)
    emu.complete()


def xrstor(emu: Emulation) -> None:
    checks.xsave(emu)
    layout = host_cpu().layout
    rfbm = _rfbm(emu)
    xcr0 = emu.xcr0()
    la = emu.operand_address(EXTENDED, write=False)
    checks.aligned(la, 64)
    header = emu.read(la + XSTATE_BV, 64)
    xstate_bv, xcomp_bv = u64(header, 0), u64(header, 8)
    compacted = bool(xcomp_bv & XCOMP_COMPACTED)
    if compacted:
        if not layout.xsavec:
            raise gp("compacted XRSTOR without XSAVEC support")
        if xcomp_bv & ~XCOMP_COMPACTED & ~xcr0:
            raise gp(f"XCOMP_BV {xcomp_bv:#x} names components not in XCR0 {xcr0:#x}")
        if xstate_bv & ~xcomp_bv:
            raise gp(f"XSTATE_BV {xstate_bv:#x} not a subset of XCOMP_BV")
        if any(header[16:64]):
            raise gp("reserved XSAVE header bytes 16-63 set")
        offsets = layout.compacted_offsets(xcomp_bv)
    else:
        if xstate_bv & ~xcr0:
            raise gp(f"XSTATE_BV {xstate_bv:#x} names components not in XCR0 {xcr0:#x}")
        if any(header[8:24]):
            raise gp("XSAVE header bytes 8-23 set in the standard form")
        offsets = {i: c.offset for i, c in layout.components.items()}
    load = rfbm & xstate_bv
    legacy = emu.read(la, XMM0 + xmm_bytes(emu.mode64)) if load & 3 or rfbm & 6 else b""
    mxcsr: int | None = None
    if compacted:
        if rfbm & XFEATURE_SSE:
            mxcsr = u32(legacy, MXCSR) if load & XFEATURE_SSE else MXCSR_INIT
    elif rfbm & (XFEATURE_SSE | XFEATURE_YMM):
        mxcsr = u32(legacy, MXCSR)
    if mxcsr is not None:
        _mxcsr_ok(mxcsr)
    extended: dict[int, bytes] = {}
    for i in sorted(layout.components):
        if load >> i & 1:
            comp = layout.components[i]
            n = registers_in_mode(i, comp.size, emu.mode64)
            extended[i] = emu.read(la + offsets[i], n) if n else b""
    # Every read and check is done: change the state.
    area = emu.xsave()
    if rfbm & XFEATURE_X87:
        if load & XFEATURE_X87:
            area[0:MXCSR] = legacy[0:MXCSR]
            area[32:XMM0] = legacy[32:XMM0]
        else:
            init_component(area, layout, X87, emu.mode64)
    if rfbm & XFEATURE_SSE:
        if load & XFEATURE_SSE:
            n = xmm_bytes(emu.mode64)
            area[XMM0 : XMM0 + n] = legacy[XMM0 : XMM0 + n]
        else:
            init_component(area, layout, SSE, emu.mode64)
    if mxcsr is not None:
        put32(area, MXCSR, mxcsr)
    for i in sorted(layout.components):
        if rfbm >> i & 1:
            if i in extended:
                offset = layout.components[i].offset
                area[offset : offset + len(extended[i])] = extended[i]
            else:
                init_component(area, layout, i, emu.mode64)
    bv = (u64(area, XSTATE_BV) & ~rfbm) | load
    if mxcsr is not None and mxcsr != MXCSR_INIT:
        bv |= XFEATURE_SSE  # KVM takes MXCSR only with x87, SSE or AVX marked in use
    put64(area, XSTATE_BV, bv)
    put64(area, XCOMP_BV, 0)
    emu.xsave_changed = True
    emu.complete()


def xsaves(emu: Emulation) -> None:
    raise Unsupported("XSAVES/XRSTORS (supervisor state components) are not emulated")


def xgetbv(emu: Emulation) -> None:
    checks.xsave(emu)
    index = emu.old.gprs[RCX] & M32
    if index == 0:
        value = emu.xcr0()
    elif index == 1 and host_cpu().layout.xgetbv1:
        value = emu.xcr0() & u64(emu.xsave(), XSTATE_BV)
    else:
        raise gp(f"XGETBV of XCR{index}")
    _set32(emu, RAX, value)
    _set32(emu, RDX, value >> 32)
    emu.complete()
