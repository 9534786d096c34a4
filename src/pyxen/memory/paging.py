"""Translation of guest linear addresses through the guest's own page tables.

Every hypercall pointer from an HVM/PVH guest is a linear address in the
calling vCPU's current address space (Xen: ``hvm_copy_*_guest_linear``).
``translate`` walks the tables the way the CPU would for a data access:

- paging off (CR0.PG = 0): linear = physical;
- 32-bit paging (2 levels, 4 KiB pages, 4 MiB pages with CR4.PSE);
- PAE paging (CR4.PAE, 3 levels, 2 MiB large pages);
- long mode (EFER.LMA: 4 levels, or 5 with CR4.LA57; 1 GiB and 2 MiB pages;
  non-canonical addresses fault).

Permissions: every level must be present; a write needs RW at every level
when the access is from user mode or CR0.WP is set; a user-mode access needs
US at every level.  Accessed/dirty bits are not updated (Xen sets them; no
guest we run depends on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pyxen.memory.addr import Gla, Gpa
from pyxen.memory.errors import MemoryFault, PageFault

CR0_PE = 1 << 0
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
EFER_LME = 1 << 8
EFER_LMA = 1 << 10

_P = 1 << 0
_RW = 1 << 1
_US = 1 << 2
_PS = 1 << 7
_ADDR = 0x000F_FFFF_FFFF_F000
_NO_PAGING_LEAF = 1 << 30


class PhysReader(Protocol):
    def read_u64(self, gpa: int) -> int: ...
    def read_u32(self, gpa: int) -> int: ...


@dataclass(frozen=True, slots=True)
class PagingState:
    """The control registers that decide how a vCPU translates addresses."""

    cr0: int
    cr3: int
    cr4: int
    efer: int

    @property
    def long_mode(self) -> bool:
        return bool(self.efer & EFER_LMA)


def translate(mem: PhysReader, st: PagingState, gla: Gla, write: bool, user: bool = False) -> Gpa:
    """The guest-physical address of ``gla``, or PageFault."""
    if not st.cr0 & CR0_PG:  # the flat PVH entry state: no walk, no tuple
        return Gpa(gla)
    return translate_leaf(mem, st, gla, write, user)[0]


def translate_leaf(mem: PhysReader, st: PagingState, gla: Gla, write: bool,
                   user: bool = False) -> tuple[Gpa, int]:
    """``translate``, and the size of the page that maps ``gla`` (4 KiB, 2/4 MiB or
    1 GiB; 1 GiB without paging): the bytes from ``gla`` to the end of that page
    are physically contiguous."""
    if not st.cr0 & CR0_PG:
        return Gpa(gla), _NO_PAGING_LEAF
    check_rw = write and (user or bool(st.cr0 & CR0_WP))
    if st.efer & EFER_LMA:
        return _walk_long(mem, st, gla, check_rw, user)
    if st.cr4 & CR4_PAE:
        return _walk_pae(mem, st, gla & 0xFFFF_FFFF, check_rw, user)
    return _walk_32(mem, st, gla & 0xFFFF_FFFF, check_rw, user)


def _check(entry: int, gla: int, check_rw: bool, user: bool, level: int) -> None:
    if not entry & _P:
        raise PageFault(gla, f"not present at level {level}")
    if check_rw and not entry & _RW:
        raise PageFault(gla, f"read-only at level {level}")
    if user and not entry & _US:
        raise PageFault(gla, f"supervisor-only at level {level}")


def _read_entry(mem: PhysReader, gpa: int, gla: int) -> int:
    try:
        return mem.read_u64(gpa)
    except MemoryFault as e:  # a page table in a hole is a fault, not a crash
        raise PageFault(gla, f"page table at {gpa:#x} is not in RAM ({e})") from None


def _walk_long(mem: PhysReader, st: PagingState, gla: int, check_rw: bool,
               user: bool) -> tuple[Gpa, int]:
    levels = 5 if st.cr4 & CR4_LA57 else 4
    va_bits = 12 + 9 * levels
    top = gla >> (va_bits - 1)
    if top not in (0, (1 << (64 - va_bits + 1)) - 1):
        raise PageFault(gla, "non-canonical")
    table = st.cr3 & _ADDR
    for level in range(levels, 0, -1):
        shift = 12 + 9 * (level - 1)
        entry = _read_entry(mem, table + ((gla >> shift) & 0x1FF) * 8, gla)
        _check(entry, gla, check_rw, user, level)
        if level == 1 or (level in (2, 3) and entry & _PS):
            base = entry & _ADDR & ~((1 << shift) - 1)
            return Gpa(base | (gla & ((1 << shift) - 1))), 1 << shift
        table = entry & _ADDR
    raise AssertionError("unreachable")  # pragma: no cover


def _walk_pae(mem: PhysReader, st: PagingState, gla: int, check_rw: bool,
              user: bool) -> tuple[Gpa, int]:
    pdpte = _read_entry(mem, (st.cr3 & 0xFFFF_FFE0) + (gla >> 30) * 8, gla)
    if not pdpte & _P:
        raise PageFault(gla, "not present at level 3")
    pde = _read_entry(mem, (pdpte & _ADDR) + ((gla >> 21) & 0x1FF) * 8, gla)
    _check(pde, gla, check_rw, user, 2)
    if pde & _PS:
        return Gpa((pde & _ADDR & ~0x1FFFFF) | (gla & 0x1FFFFF)), 1 << 21
    pte = _read_entry(mem, (pde & _ADDR) + ((gla >> 12) & 0x1FF) * 8, gla)
    _check(pte, gla, check_rw, user, 1)
    return Gpa((pte & _ADDR) | (gla & 0xFFF)), 1 << 12


def _read_entry32(mem: PhysReader, gpa: int, gla: int) -> int:
    try:
        return mem.read_u32(gpa)
    except MemoryFault as e:
        raise PageFault(gla, f"page table at {gpa:#x} is not in RAM ({e})") from None


def _walk_32(mem: PhysReader, st: PagingState, gla: int, check_rw: bool,
             user: bool) -> tuple[Gpa, int]:
    pde = _read_entry32(mem, (st.cr3 & 0xFFFF_F000) + (gla >> 22) * 4, gla)
    _check(pde, gla, check_rw, user, 2)
    if pde & _PS and st.cr4 & CR4_PSE:
        return Gpa((pde & 0xFFC0_0000) | (gla & 0x3F_FFFF)), 1 << 22
    pte = _read_entry32(mem, (pde & 0xFFFF_F000) + ((gla >> 12) & 0x3FF) * 4, gla)
    _check(pte, gla, check_rw, user, 1)
    return Gpa((pte & 0xFFFF_F000) | (gla & 0xFFF)), 1 << 12
