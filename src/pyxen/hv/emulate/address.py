"""Memory operands: effective address, segmentation, paging, faults.

An emulated access follows the processor's order (SDM 3A 3.4, 5.3-5.4, 4.7):
effective address (base + index * scale + displacement, truncated to the
address size) -> segment checks and base (protected-mode types and limits,
64-bit FS/GS bases, canonical addresses in 64-bit mode: #GP(0), or #SS(0)
when the segment is SS) -> translation through the guest's page tables for
the access (read or write, user when CPL = 3) -> guest-physical frames.

A translation failure becomes #PF with CR2 = the linear address of the first
byte that did not translate and the architectural error code: P (protection
violation rather than a not-present page; decided by walking again for a
plain supervisor read), W, U.  Reserved-bit faults are not detected (the
walker does not check reserved bits), nor protection keys.

Writes are all or nothing: every page of the operand is translated, and
every frame checked to be RAM, before a byte is written.  A frame that is
not RAM (an MMIO hole) is ``Unsupported``: such accesses are left to KVM.
Accessed and dirty bits are not set (the walker does not set them either).
"""

from __future__ import annotations

from iced_x86 import Instruction, OpKind, Register, Register_, RegisterExt

from pyxen.hv.emulate.faults import PF_PRESENT, PF_USER, PF_WRITE, GuestException, Unsupported
from pyxen.hv.emulate.faults import Vector as V
from pyxen.hv.emulate.state import M64, CpuState, read_gpr
from pyxen.memory import PAGE_SIZE, Gla, GuestMemory, MemoryFault, PageFault, PagingState
from pyxen.memory import translate as walk
from pyxen.memory.paging import CR4_LA57

_SEG_TYPE_CODE = 1 << 3
_SEG_TYPE_RW = 1 << 1  # data: writable; code: readable
_SEG_TYPE_EXPAND_DOWN = 1 << 2


def memory_operand(instr: Instruction) -> int | None:
    """The index of the instruction's explicit memory operand, if it has one."""
    for i in range(instr.op_count):
        if instr.op_kind(i) == OpKind.MEMORY:
            return i
    return None


def address_size(instr: Instruction, bitness: int) -> int:
    """The address size in bytes (2, 4 or 8) of the memory operand."""
    if instr.memory_base != Register.NONE:
        return RegisterExt.size(instr.memory_base)
    if instr.memory_index != Register.NONE:
        return RegisterExt.size(instr.memory_index)
    if instr.memory_displ_size in (2, 4, 8):
        return instr.memory_displ_size
    return bitness // 8


def effective_address(instr: Instruction, state: CpuState) -> int:
    """The offset of the memory operand within its segment."""
    mask = (1 << (8 * address_size(instr, state.bitness))) - 1
    base = instr.memory_base
    if base in (Register.RIP, Register.EIP):
        return instr.memory_displacement & mask  # iced resolved it against the next IP
    ea = instr.memory_displacement
    if base != Register.NONE:
        ea += read_gpr(state.gprs, base)
    if instr.memory_index != Register.NONE:
        ea += read_gpr(state.gprs, instr.memory_index) * instr.memory_index_scale
    return ea & mask


def _segment_fault(seg: Register_, why: str) -> GuestException:
    return GuestException(V.SS if seg == Register.SS else V.GP, 0, why=why)


def is_canonical(state: CpuState, la: int) -> bool:
    bits = 57 if state.cr4 & CR4_LA57 else 48
    top = la >> (bits - 1)
    return top in (0, (1 << (64 - bits + 1)) - 1)


def linear_address(state: CpuState, seg: Register_, offset: int, size: int,
                   write: bool) -> int:
    """Segmentation of [offset, offset + size) in ``seg``: the linear address, or a fault."""
    if state.long_mode and state.cs.l:
        base = state.segment(seg).base if seg in (Register.FS, Register.GS) else 0
        la = (base + offset) & M64
        if not (is_canonical(state, la) and is_canonical(state, (la + max(size, 1) - 1) & M64)):
            raise _segment_fault(seg, f"non-canonical address {la:#x}")
        return la
    s = state.segment(seg)
    last = offset + max(size, 1) - 1
    if not state.protected or state.v86:
        if last > s.limit:
            raise _segment_fault(seg, f"offset {offset:#x}+{size} beyond the limit {s.limit:#x}")
        return (s.base + offset) & 0xFFFF_FFFF
    if s.unusable or not s.present:
        raise _segment_fault(seg, f"segment {seg} is not usable")
    if s.type & _SEG_TYPE_CODE:
        if write or not s.type & _SEG_TYPE_RW:
            raise _segment_fault(seg, "code segment not readable/writable as data")
    elif write and not s.type & _SEG_TYPE_RW:
        raise _segment_fault(seg, "read-only data segment")
    if not s.type & _SEG_TYPE_CODE and s.type & _SEG_TYPE_EXPAND_DOWN:
        upper = 0xFFFF_FFFF if s.db else 0xFFFF
        ok = s.limit < offset and last <= upper
    else:
        ok = last <= s.limit
    if not ok:
        raise _segment_fault(seg, f"offset {offset:#x}+{size} outside the segment limit")
    return (s.base + offset) & 0xFFFF_FFFF


class LinearMemory:
    """The guest's linear address space as of the exit, with architectural faults."""

    def __init__(self, memory: GuestMemory, state: CpuState) -> None:
        self.memory = memory
        self.paging = PagingState(state.cr0, state.cr3, state.cr4, state.efer)
        self.wrap = M64 if state.long_mode else 0xFFFF_FFFF

    def _translate(self, la: int, write: bool, user: bool) -> int:
        try:
            return walk(self.memory, self.paging, Gla(la), write, user)
        except PageFault:
            pass
        code = (PF_WRITE if write else 0) | (PF_USER if user else 0)
        try:  # present for a supervisor read: the fault was a protection violation
            walk(self.memory, self.paging, Gla(la), False, False)
            code |= PF_PRESENT
        except PageFault:
            pass
        raise GuestException(V.PF, code, cr2=la, why="page fault")

    def spans(self, la: int, size: int, write: bool, user: bool) -> list[tuple[int, int]]:
        """(guest-physical address, length) of every page of [la, la + size)."""
        out = []
        while size > 0:
            chunk = min(size, PAGE_SIZE - (la & (PAGE_SIZE - 1)))
            gpa = self._translate(la, write, user)
            try:
                self.memory.require(gpa, chunk)  # type: ignore[arg-type]
            except MemoryFault:
                raise Unsupported(f"memory operand at linear {la:#x} (guest-physical "
                                  f"{gpa:#x}) is not RAM") from None
            out.append((gpa, chunk))
            la = (la + chunk) & self.wrap
            size -= chunk
        return out

    def read(self, la: int, size: int, user: bool, for_write: bool = False) -> bytes:
        """Read ``size`` bytes; ``for_write`` translates for writing (read-modify-write)."""
        return b"".join(self.memory.read(gpa, n)  # type: ignore[arg-type]
                        for gpa, n in self.spans(la, size, for_write, user))

    def check_write(self, la: int, size: int, user: bool) -> None:
        """Fault now if a write of [la, la + size) would."""
        self.spans(la, size, True, user)

    def write(self, la: int, data: bytes | bytearray, user: bool) -> None:
        pos = 0
        for gpa, n in self.spans(la, len(data), True, user):
            self.memory.write(gpa, data[pos : pos + n])  # type: ignore[arg-type]
            pos += n

    def host_address(self, la: int, size: int, user: bool) -> int:
        """The hypervisor's address of [la, la + size), which must lie in one page and be
        writable (for locked read-modify-write instructions)."""
        (gpa, _n), = self.spans(la, size, True, user)
        try:
            return self.memory.host_address(gpa)
        except MemoryFault:  # the frame went away since spans() looked (a p2m change)
            raise Unsupported(f"memory operand at linear {la:#x} (guest-physical "
                              f"{gpa:#x}) is not RAM") from None
