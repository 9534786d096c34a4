"""The native executor: a whitelisted instruction runs on the host CPU, on the guest's
state, in a generated stub.

Computational x87/MMX/SSE/AVX and bit-manipulation instructions cannot be
emulated bit-exactly in Python; the host CPU computes them exactly as the
guest's CPU would (it is the same CPU model).  Per instruction:

1. ``whitelist.analyse`` admits it (see there) and says what to check.
2. Faults the guest's CPU would raise are raised first, as guest
   exceptions, so the host CPU never faults: #UD/#NM from CR0.EM/TS,
   CR4.OSFXSR, CR4.OSXSAVE and the guest's XCR0; a LOCK prefix (#UD); #MF
   for a pending x87 exception before a waiting x87/MMX instruction; the
   memory operand's segmentation, alignment (#GP(0)) and page faults.
3. The operand is copied into the scratch buffer; the instruction is
   re-encoded by iced-x86 for 64-bit mode with its memory operand made
   RIP-relative to that buffer (segment prefix dropped), between
   ``hostcode.STUB_ENTER`` and ``STUB_LEAVE``.  The stub saves the host's
   vector state, loads the guest's (KVM_GET_XSAVE), the guest's general
   registers except RSP and its arithmetic flags, runs the instruction and
   puts everything back.  Stubs are cached by instruction bytes in the
   slots of one code page (LRU).
4. MXCSR: the instruction runs with every SIMD exception masked and the
   flags cleared, so it cannot raise #XM (SIGFPE in the hypervisor); the
   flags it raised are then compared with the guest's own masks.  An
   unmasked one is #XM (#UD if CR4.OSXMMEXCPT = 0) with the registers and
   memory as they were and MXCSR's flags set as the processor sets them
   (the pre-computation flags IE/DE/ZE if one of those is unmasked, else
   all raised); otherwise the raised flags are ORed into the guest's MXCSR.
   Limitation: an exact tiny result raises UE only when underflow is
   unmasked, which the masked run cannot see.
5. x87: the guest's own control word is used.  x87 exceptions are never
   synchronous (an unmasked one sets FSW.ES and is taken by the *next*
   waiting instruction), and the stub executes no waiting x87 instruction
   after the guest's, so the host cannot fault; the pending exception
   travels in the saved state and the guest's next waiting x87/MMX
   instruction, which comes back here, raises #MF.  The x87 last-
   instruction/data pointers and opcode (FIP, FDP, FOP) would name the
   stub's addresses: after a non-control x87 instruction they are set to
   the guest's RIP (with CS in bits 32-47 outside 64-bit mode), the
   operand's offset (DS likewise) and the opcode from the guest's bytes.
6. Outside 64-bit mode the instruction runs in 64-bit mode: registers the
   guest's mode cannot reach (XMM8-15, upper halves of YMM8-15, ...) are
   restored afterwards (VZEROUPPER/VZEROALL would clear them).
7. A written memory operand is copied back (its pages were checked first),
   then the registers and the XSAVE area are committed.

The host's MXCSR, x87 control word and vector registers are restored by
the stub before it returns to Python (the SysV ABI keeps MXCSR and the x87
control word callee-saved).  One lock serialises the executor.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict

from iced_x86 import Encoder, Instruction, Register

from pyxen.hv.emulate import checks
from pyxen.hv.emulate.address import effective_address
from pyxen.hv.emulate.context import Emulation
from pyxen.hv.emulate.faults import GuestException, Unsupported, nm, ud
from pyxen.hv.emulate.faults import Vector as V
from pyxen.hv.emulate.host import HostCpu, host_cpu
from pyxen.hv.emulate.hostcode import (
    AREA_SIZE,
    CTX_GPRS,
    CTX_GUEST,
    CTX_RFBM,
    CTX_RFLAGS,
    CTX_SCRATCH,
    STUB_ENTER,
    StubArena,
)
from pyxen.hv.emulate.state import (
    CR0_EM,
    CR0_TS,
    CR4_OSFXSR,
    CR4_OSXMMEXCPT,
    RFLAGS_ARITH,
    RFLAGS_FIXED,
    RFLAGS_IF,
    RSP,
)
from pyxen.hv.emulate.whitelist import NativePlan, analyse
from pyxen.hv.emulate.xstate import (
    FDP,
    FIP,
    FOP,
    HEADER_SIZE,
    HI16_ZMM,
    MXCSR,
    MXCSR_FLAGS,
    MXCSR_MM,
    XCOMP_BV,
    XFEATURE_SSE,
    XFEATURE_X87,
    XFEATURE_YMM,
    XFEATURES_AVX512,
    XMM0,
    XSTATE_BV,
    YMM,
    ZMM_HI256,
    Component,
    put16,
    put32,
    put64,
    u32,
    u64,
)

_PRE_COMPUTATION = 0x7  # IE DE ZE
# The context block's first 0x90 bytes: 16 registers, RFLAGS, the component bitmap.
_REGISTER_BLOCK = struct.Struct("<18Q")
if CTX_RFLAGS != CTX_GPRS + 16 * 8 or CTX_RFBM != CTX_RFLAGS + 8:  # pragma: no cover
    raise ImportError("native executor context layout mismatch")
_LEGACY_PREFIXES = frozenset(b"\xf0\xf2\xf3\x2e\x36\x3e\x26\x64\x65\x66\x67")


def x87_opcode(raw: bytes, bitness: int) -> int:
    """FOP: the low 3 bits of the x87 escape opcode and the ModR/M byte (11 bits)."""
    i = 0
    while i < len(raw) and (raw[i] in _LEGACY_PREFIXES
                            or (bitness == 64 and 0x40 <= raw[i] <= 0x4F)):
        i += 1
    if i + 1 < len(raw) and 0xD8 <= raw[i] <= 0xDF:
        return (raw[i] & 7) << 8 | raw[i + 1]
    return 0


class NativeExecutor:
    """The stub arena and the executor's lock; one per hypervisor process."""

    SLOTS_CACHED = 16

    def __init__(self, host: HostCpu | None = None) -> None:
        self.host = host or host_cpu()
        self.arena = StubArena()
        self.lock = threading.Lock()
        self._slots: OrderedDict[bytes, int] = OrderedDict()
        self._free_slots = list(range(min(self.SLOTS_CACHED, self.arena.slots) - 1, -1, -1))
        self._plans: dict[bytes, NativePlan] = {}
        # Components the executor switches: x87 and SSE always, AVX and AVX-512 if
        # the host has them enabled.
        self.rfbm = (self.host.xcr0 & (XFEATURE_YMM | XFEATURES_AVX512)) | XFEATURE_X87 \
            | XFEATURE_SSE
        self.area_size = self.host.layout.standard_size(self.rfbm)
        if self.area_size > AREA_SIZE:
            raise RuntimeError(f"host XSAVE area of {self.area_size} bytes does not fit")

    PLANS_CACHED = 1024

    def plan(self, emu: Emulation) -> NativePlan:
        """``whitelist.analyse`` of the instruction, cached by its bytes and mode (the
        plan does not depend on RIP or on the operand's address)."""
        key = bytes([emu.decoded.bitness]) + emu.decoded.raw
        plan = self._plans.get(key)
        if plan is None:
            plan = analyse(emu.instr, self.host)
            if len(self._plans) >= self.PLANS_CACHED:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    # -- the stub ---------------------------------------------------------------

    def _encode(self, instr: Instruction, slot: int, has_memory: bool) -> bytes:
        copy = instr.copy()
        ip = self.arena.slot_address(slot) + len(STUB_ENTER)
        if has_memory:
            copy.memory_base = Register.RIP
            copy.memory_index = Register.NONE
            copy.memory_index_scale = 1
            copy.memory_displacement = self.arena.ctx + CTX_SCRATCH
            copy.memory_displ_size = 8
            copy.segment_prefix = Register.NONE
        encoder = Encoder(64)
        try:
            encoder.encode(copy, ip)
        except ValueError as e:
            raise Unsupported(f"cannot re-encode for 64-bit mode: {e}") from None
        return encoder.take_buffer()

    def _stub(self, key: bytes, instr: Instruction, has_memory: bool) -> int:
        """The slot holding ``key``'s stub, installed if needed (the lock held).

        Invariant: every slot is either free or holds the code of exactly the
        one key that maps to it, even when encoding or installing fails (the
        plan checked for one instruction must never run another's code)."""
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
            return slot
        if self._free_slots:
            slot = self._free_slots.pop()
        else:
            _old, slot = self._slots.popitem(last=False)
        try:
            self.arena.install(slot, self._encode(instr, slot, has_memory))
        except BaseException:
            self._free_slots.append(slot)  # no key names it any more
            raise
        self._slots[key] = slot
        return slot

    # -- checks before running --------------------------------------------------

    def _precheck(self, emu: Emulation, plan: NativePlan) -> None:
        st = emu.old
        emu.require_no_lock()
        if plan.x87 and st.cr0 & (CR0_EM | CR0_TS):
            raise nm("x87 instruction with CR0.EM or CR0.TS set")
        if (plan.mmx or plan.sse) and st.cr0 & CR0_EM:
            raise ud("MMX/SSE instruction with CR0.EM set")
        if plan.sse and not st.cr4 & CR4_OSFXSR:
            raise ud("SSE instruction with CR4.OSFXSR clear")
        if plan.vex_gpr and (not st.protected or st.v86):
            raise ud("VEX outside protected mode")
        if plan.xcr0:
            checks.avx(emu, plan.xcr0)
        if (plan.mmx or plan.sse) and st.cr0 & CR0_TS:
            raise nm("MMX/SSE instruction with CR0.TS set")
        if plan.waits:
            checks.no_pending_x87(emu)

    # -- running ----------------------------------------------------------------

    def execute(self, emu: Emulation, plan: NativePlan) -> None:
        self._precheck(emu, plan)
        st = emu.old
        la = 0
        data = b""
        if plan.mem_size:
            la = emu.operand_address(plan.mem_size, plan.mem_write)
            if plan.align:
                lifted = plan.align_unless_mm and u32(emu.xsave(), MXCSR) & MXCSR_MM
                if not lifted:
                    checks.aligned(la, plan.align)
            if plan.mem_read or plan.mem_write:
                # A written operand is read too (translated for writing): bytes the
                # instruction leaves alone keep their values.
                data = emu.read(la, plan.mem_size, for_write=plan.mem_write)
        area = emu.xsave() if plan.vector else None
        guest_mxcsr = u32(area, MXCSR) if area is not None else 0
        if area is not None and guest_mxcsr & ~self.host.mxcsr_mask:
            raise Unsupported(f"the vCPU's MXCSR {guest_mxcsr:#x} has reserved bits")
        with self.lock:
            gprs, rflags, result, written = self._run(emu, plan, area, guest_mxcsr, data)
        if area is not None and result is not None:
            self._merge(emu, plan, area, result, guest_mxcsr, la)
        emu.new.gprs = gprs
        emu.new.rflags = (st.rflags & ~RFLAGS_ARITH) | (rflags & RFLAGS_ARITH)
        if plan.mem_write:
            emu.write(la, written)
        emu.complete()

    def _run(self, emu: Emulation, plan: NativePlan, area: bytearray | None,
             guest_mxcsr: int, data: bytes
             ) -> tuple[list[int], int, bytearray | None, bytes]:
        """Run the stub (the lock held): (gprs, rflags, guest area after, operand bytes)."""
        view = self.arena.view
        key = bytes([emu.decoded.bitness]) + emu.decoded.raw
        slot = self._stub(key, emu.instr, plan.mem_size > 0)
        st = emu.old
        rfbm = self.rfbm if area is not None else 0
        _REGISTER_BLOCK.pack_into(view, CTX_GPRS, *st.gprs,
                                  (st.rflags & RFLAGS_ARITH) | RFLAGS_FIXED | RFLAGS_IF, rfbm)
        guest = CTX_GUEST
        if area is not None:
            size = self.area_size
            view[guest : guest + size] = area[:size]
            # Run with every SIMD exception masked and the flags clear.
            exec_mxcsr = (guest_mxcsr | (MXCSR_FLAGS << 7)) & ~MXCSR_FLAGS
            view[guest + MXCSR : guest + MXCSR + 4] = exec_mxcsr.to_bytes(4, "little")
            header = bytearray(HEADER_SIZE)
            put64(header, 0, u64(area, XSTATE_BV) & rfbm)
            view[guest + XSTATE_BV : guest + XSTATE_BV + HEADER_SIZE] = header
        else:
            view[guest + XSTATE_BV : guest + XSTATE_BV + HEADER_SIZE] = bytes(HEADER_SIZE)
        if plan.mem_size:
            view[CTX_SCRATCH : CTX_SCRATCH + plan.mem_size] = data.ljust(plan.mem_size, b"\0")
        self.arena.run(slot)
        *out, rflags, _rfbm = _REGISTER_BLOCK.unpack_from(view, CTX_GPRS)
        gprs = list(out)
        gprs[RSP] = st.gprs[RSP]
        if emu.decoded.bitness != 64:
            gprs[8:] = st.gprs[8:]
        result = bytearray(view[guest : guest + self.area_size]) if area is not None else None
        written = bytes(view[CTX_SCRATCH : CTX_SCRATCH + plan.mem_size])
        return gprs, rflags, result, written

    def _merge(self, emu: Emulation, plan: NativePlan, area: bytearray, result: bytearray,
               guest_mxcsr: int, la: int) -> None:
        """Fold the state after the instruction into the vCPU's area, or raise #XM."""
        raised = u32(result, MXCSR) & MXCSR_FLAGS
        unmasked = raised & ~(guest_mxcsr >> 7) & MXCSR_FLAGS
        if unmasked:
            flags = raised & _PRE_COMPUTATION if unmasked & _PRE_COMPUTATION else raised
            put32(area, MXCSR, guest_mxcsr | flags)
            put64(area, XSTATE_BV, u64(area, XSTATE_BV) | XFEATURE_SSE)
            emu.xsave_changed = True
            vector = V.XM if emu.old.cr4 & CR4_OSXMMEXCPT else V.UD
            raise GuestException(vector, why=f"unmasked SIMD exception flags {unmasked:#x}",
                                 keep_xsave=True)
        mode64 = emu.mode64
        before = bytes(area)
        area[0:XMM0 + 256] = result[0:XMM0 + 256]
        layout = self.host.layout
        for i, comp in layout.components.items():
            if self.rfbm >> i & 1 and comp.offset + comp.size <= len(result):
                area[comp.offset : comp.offset + comp.size] = \
                    result[comp.offset : comp.offset + comp.size]
        bv = (u64(area, XSTATE_BV) & ~self.rfbm) | (u64(result, XSTATE_BV) & self.rfbm)
        put64(area, XSTATE_BV, bv)
        put64(area, XCOMP_BV, 0)
        put32(area, MXCSR, guest_mxcsr | raised)
        if not mode64:
            _restore_unreachable(area, before, layout.components)
        if plan.x87 and not plan.x87_control:
            st = emu.old
            fip, fdp = st.rip & st.ip_mask, u64(before, FDP)
            if plan.mem_size:
                fdp = effective_address(emu.instr, st)
            if not mode64:
                fip |= st.cs.selector << 32
                if plan.mem_size:
                    fdp |= st.segment(emu.instr.memory_segment).selector << 32
            put64(area, FIP, fip)
            put64(area, FDP, fdp)
            put16(area, FOP, x87_opcode(emu.decoded.raw, emu.decoded.bitness))
        emu.xsave_changed = True


def _restore_unreachable(area: bytearray, before: bytes,
                         components: dict[int, Component]) -> None:
    """Outside 64-bit mode: put back the registers the guest's mode cannot address
    (their components stay marked in use, so KVM keeps them)."""
    area[XMM0 + 128 : XMM0 + 256] = before[XMM0 + 128 : XMM0 + 256]
    kept = u64(before, XSTATE_BV) & (XFEATURE_SSE | XFEATURE_YMM | XFEATURES_AVX512)
    for i, start in ((YMM, 8 * 16), (ZMM_HI256, 8 * 32), (HI16_ZMM, 0)):
        comp = components.get(i)
        if comp is not None:
            lo, hi = comp.offset + start, comp.offset + comp.size
            area[lo:hi] = before[lo:hi]
    put64(area, XSTATE_BV, u64(area, XSTATE_BV) | kept)


_executor: NativeExecutor | None = None
_executor_lock = threading.Lock()


def executor() -> NativeExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = NativeExecutor()
        return _executor


def run_natively(emu: Emulation) -> None:
    ex = executor()
    ex.execute(emu, ex.plan(emu))
