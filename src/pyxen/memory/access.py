"""Copying to and from a guest's linear address space (Xen's copy_{from,to}_guest).

A ``GuestAccess`` is made for one hypercall on one vCPU: it holds the
paging state and privilege level at the time of the call.  Reads and writes
translate every page they touch; a write translates all of its pages before
it changes any, so a faulting write leaves guest memory untouched.  Faults
are ``PageFault`` or ``MemoryFault`` (see ``memory.errors.GuestFault``).
"""

from __future__ import annotations

import ctypes
from typing import TypeVar

from pyxen.memory.addr import PAGE_SIZE, Gla, Gpa
from pyxen.memory.paging import PagingState, translate, translate_leaf
from pyxen.memory.physmap import GuestMemory

T = TypeVar("T", bound=ctypes.Structure)

# Linear addresses are at most 64 bits; anything a guest passes is masked to that.
_U64_MASK = (1 << 64) - 1


class GuestAccess:
    def __init__(self, mem: GuestMemory, paging: PagingState, user: bool = False) -> None:
        self.mem = mem
        self.paging = paging
        self.user = user

    def _spans(self, gla: int, size: int, write: bool) -> list[tuple[Gpa, int]]:
        spans: list[tuple[Gpa, int]] = []
        gla &= _U64_MASK
        while size > 0:
            chunk = min(size, PAGE_SIZE - (gla & (PAGE_SIZE - 1)))
            gpa = translate(self.mem, self.paging, Gla(gla), write, self.user)
            spans.append((gpa, chunk))
            gla = (gla + chunk) & _U64_MASK
            size -= chunk
        return spans

    def host_spans(self, gla: int, size: int) -> list[tuple[int, int]]:
        """Where ``size`` bytes at ``gla`` are, for reading: host (address, length)
        ranges in order, each as long as the guest's own page mappings and the
        p2m allow (one walk per guest page, large pages included)."""
        spans: list[tuple[int, int]] = []
        gla &= _U64_MASK
        while size > 0:
            gpa, leaf = translate_leaf(self.mem, self.paging, Gla(gla), False, self.user)
            chunk = min(size, leaf - (gla & (leaf - 1)))
            for addr, n in self.mem.host_ranges(gpa, chunk):
                if spans and spans[-1][0] + spans[-1][1] == addr:
                    spans[-1] = (spans[-1][0], spans[-1][1] + n)
                else:
                    spans.append((addr, n))
            gla = (gla + chunk) & _U64_MASK
            size -= chunk
        return spans

    def read(self, gla: int, size: int) -> bytes:
        if size <= PAGE_SIZE - (gla & (PAGE_SIZE - 1)):
            gpa = translate(self.mem, self.paging, Gla(gla & _U64_MASK), False, self.user)
            return self.mem.read(gpa, size)
        return b"".join(self.mem.read(gpa, n) for gpa, n in self._spans(gla, size, False))

    def write(self, gla: int, data: bytes | bytearray) -> None:
        self.mem.write_spans(self._spans(gla, len(data), True), data)

    def read_struct(self, gla: int, ctype: type[T]) -> T:
        return ctype.from_buffer_copy(self.read(gla, ctypes.sizeof(ctype)))

    def write_struct(self, gla: int, value: ctypes.Structure) -> None:
        self.write(gla, bytes(value))

    def read_u64(self, gla: int) -> int:
        return int.from_bytes(self.read(gla, 8), "little")

    def read_u32(self, gla: int) -> int:
        return int.from_bytes(self.read(gla, 4), "little")

    def read_u16(self, gla: int) -> int:
        return int.from_bytes(self.read(gla, 2), "little")

    def write_u64(self, gla: int, value: int) -> None:
        self.write(gla, (value & _U64_MASK).to_bytes(8, "little"))

    def write_u32(self, gla: int, value: int) -> None:
        self.write(gla, (value & 0xFFFF_FFFF).to_bytes(4, "little"))
