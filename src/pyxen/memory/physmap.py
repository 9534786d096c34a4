"""Guest RAM and the guest-physical map (p2m) of one domain.

Design:
- All memory a domain can ever have lives in one memfd, the *pool*, mapped
  once into the hypervisor.  The pool has ``ram_capacity`` pages for RAM
  (the domain's ``max_pages``) followed by ``heap_pages`` pages that belong
  to the hypervisor (Xen's "xen-heap": shared_info, grant frames).  The memfd
  is sparse: a page costs host memory only once it is touched.
- The p2m maps guest frames to pool pages as a sorted list of *extents*
  (runs of frames backed by consecutive pool pages).  Every extent is one
  KVM memory slot, so a guest access to a frame outside every extent is an
  MMIO exit.
- Mapping a page over a hole or removing a frame from the middle of an
  extent splits the extent and reprograms the affected slots.
- A *foreign* extent (``PageKind.FOREIGN``, one frame) is a page of another
  domain's pool that this domain has mapped through a grant: its slot points
  at that page's host address (every pool is mapped in this one process),
  read-only if the grant was mapped read-only.  The owner of this map (the
  hypervisor's grant code) removes it before the other pool goes away.

Invariants:
- Extents never overlap and ``_starts`` is the sorted list of their first frames.
- A RAM pool page is in exactly one of: mapped in one extent, the free list,
  or "orphaned" (replaced by another mapping while still owned by the
  domain, as Xen leaves it); heap pages are never on the RAM free list.
- Freed RAM pages are punched out of the memfd (they read as zero when reused).
- A foreign extent covers exactly one frame; its ``pool_page`` indexes the
  *other* pool and is never on this pool's free list.  The hypervisor's
  guest-physical accessors (``read``, ``write``, ``page``, ...) do not
  reach foreign frames: they fault like a hole.

Locking: callers serialise changes (the domain holds its p2m lock); reads of
mapped pages need no lock.
"""

from __future__ import annotations

import bisect
import ctypes
import enum
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pyxen.memory.addr import PAGE_SHIFT, PAGE_SIZE, Gfn, Gpa
from pyxen.memory.errors import MemoryFault


class PageKind(enum.Enum):
    RAM = "ram"
    HEAP = "heap"
    FOREIGN = "foreign"  # another domain's page, mapped through a grant


@dataclass(slots=True)
class Extent:
    gfn: int
    count: int
    pool_page: int
    kind: PageKind
    slot: int = -1
    foreign_host: int = 0  # FOREIGN: host address of the other domain's page
    readonly: bool = False  # FOREIGN: a read-only KVM slot

    @property
    def end(self) -> int:
        return self.gfn + self.count


class SlotProgrammer:
    """Where extents become memory slots.  The default does nothing (no KVM).

    ``readonly`` is passed (as a keyword, True) only for read-only slots."""

    def set_slot(self, slot: int, gpa: int, size: int, host_addr: int,
                 readonly: bool = False) -> None:
        pass


_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class GuestMemory:
    """The pool, the p2m and bounds-checked guest-physical access."""

    def __init__(self, ram_capacity: int, heap_pages: int, name: str = "pyxen-guest",
                 slots: SlotProgrammer | None = None) -> None:
        self.ram_capacity = ram_capacity
        self.heap_pages = heap_pages
        self.pool_pages = ram_capacity + heap_pages
        self._fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(self._fd, self.pool_pages * PAGE_SIZE)
        self.pool = mmap.mmap(self._fd, self.pool_pages * PAGE_SIZE, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        self._anchor = ctypes.c_char.from_buffer(self.pool)
        self.host_base = ctypes.addressof(self._anchor)
        self._slots = slots or SlotProgrammer()
        self._free_slot_ids: list[int] = []
        self._next_slot_id = 0
        self._starts: list[int] = []
        self._extents: list[Extent] = []
        self._free_ram: list[int] = []
        self._next_fresh_ram = 0

    @property
    def fd(self) -> int:
        return self._fd

    # -- pool pages ---------------------------------------------------------

    def alloc_ram_pages(self, count: int) -> int | None:
        """Pool index of ``count`` consecutive fresh RAM pages, or None if the pool is full."""
        if count == 1 and self._free_ram:
            return self._free_ram.pop()
        if self._next_fresh_ram + count <= self.ram_capacity:
            first = self._next_fresh_ram
            self._next_fresh_ram += count
            return first
        return None

    def free_ram_page(self, pool_page: int) -> None:
        """Give a RAM page back: its contents are discarded (it reads as zero when reused)."""
        self.pool.madvise(mmap.MADV_REMOVE, pool_page * PAGE_SIZE, PAGE_SIZE)
        self._free_ram.append(pool_page)

    def free_ram_available(self) -> int:
        return len(self._free_ram) + self.ram_capacity - self._next_fresh_ram

    def heap_pool_page(self, index: int) -> int:
        if not 0 <= index < self.heap_pages:
            raise IndexError(f"heap page {index} out of range")
        return self.ram_capacity + index

    def pool_view(self, pool_page: int) -> memoryview:
        off = pool_page * PAGE_SIZE
        return memoryview(self.pool)[off : off + PAGE_SIZE]

    # -- the p2m ------------------------------------------------------------

    def _index_of(self, gfn: int) -> int:
        """Index of the extent containing ``gfn``, or -1."""
        i = bisect.bisect_right(self._starts, gfn) - 1
        if i >= 0 and gfn < self._extents[i].end:
            return i
        return -1

    def lookup(self, gfn: Gfn) -> tuple[int, PageKind] | None:
        """The pool page and kind backing ``gfn``, or None for a hole."""
        i = self._index_of(gfn)
        if i < 0:
            return None
        e = self._extents[i]
        return e.pool_page + (gfn - e.gfn), e.kind

    def extents(self) -> Iterator[Extent]:
        return iter(list(self._extents))

    def map(self, gfn: Gfn, count: int, pool_page: int, kind: PageKind) -> None:
        """Back frames [gfn, gfn+count) with pool pages from ``pool_page``; must be a hole."""
        if count <= 0:
            return
        i = bisect.bisect_left(self._starts, gfn)
        if (i > 0 and self._extents[i - 1].end > gfn) or (
            i < len(self._starts) and self._starts[i] < gfn + count
        ):
            raise ValueError(f"frames {gfn:#x}+{count} overlap an existing mapping")
        if kind is PageKind.FOREIGN:
            raise ValueError("foreign frames are mapped with map_foreign")
        self._insert(i, Extent(gfn, count, pool_page, kind))

    def map_foreign(self, gfn: Gfn, host_addr: int, pool_page: int, readonly: bool) -> None:
        """Back one frame (a hole) with another pool's page at ``host_addr``."""
        i = bisect.bisect_left(self._starts, gfn)
        if (i > 0 and self._extents[i - 1].end > gfn) or (
            i < len(self._starts) and self._starts[i] == gfn
        ):
            raise ValueError(f"frame {gfn:#x} is not a hole")
        self._insert(i, Extent(gfn, 1, pool_page, PageKind.FOREIGN,
                               foreign_host=host_addr, readonly=readonly))

    def _insert(self, i: int, ext: Extent) -> None:
        self._program(ext)
        self._starts.insert(i, ext.gfn)
        self._extents.insert(i, ext)

    def extent_at(self, gfn: Gfn) -> Extent | None:
        """The extent containing ``gfn`` (None for a hole)."""
        i = self._index_of(gfn)
        return self._extents[i] if i >= 0 else None

    def unmap(self, gfn: Gfn) -> tuple[int, PageKind] | None:
        """Remove the mapping of one frame; return what backed it (None if it was a hole)."""
        i = self._index_of(gfn)
        if i < 0:
            return None
        old = self._extents[i]
        self._release(old)
        del self._starts[i]
        del self._extents[i]
        off = gfn - old.gfn
        pieces = []
        if off > 0:
            pieces.append(Extent(old.gfn, off, old.pool_page, old.kind))
        if off + 1 < old.count:  # (never for a foreign extent: it has one frame)
            pieces.append(Extent(gfn + 1, old.count - off - 1, old.pool_page + off + 1, old.kind))
        for piece in pieces:
            self._program(piece)
            j = bisect.bisect_left(self._starts, piece.gfn)
            self._starts.insert(j, piece.gfn)
            self._extents.insert(j, piece)
        return old.pool_page + off, old.kind

    def _program(self, ext: Extent) -> None:
        slot = self._free_slot_ids.pop() if self._free_slot_ids else self._next_slot_id
        if slot == self._next_slot_id:
            self._next_slot_id += 1
        ext.slot = slot
        try:
            if ext.kind is PageKind.FOREIGN:
                if ext.readonly:
                    self._slots.set_slot(slot, ext.gfn << PAGE_SHIFT, PAGE_SIZE,
                                         ext.foreign_host, readonly=True)
                else:
                    self._slots.set_slot(slot, ext.gfn << PAGE_SHIFT, PAGE_SIZE,
                                         ext.foreign_host)
            else:
                self._slots.set_slot(slot, ext.gfn << PAGE_SHIFT, ext.count * PAGE_SIZE,
                                     self.host_base + ext.pool_page * PAGE_SIZE)
        except Exception:
            self._free_slot_ids.append(slot)
            raise

    def _release(self, ext: Extent) -> None:
        self._slots.set_slot(ext.slot, ext.gfn << PAGE_SHIFT, 0, 0)
        self._free_slot_ids.append(ext.slot)

    # -- guest-physical access ----------------------------------------------

    def _pool_offset(self, gpa: int) -> int:
        i = bisect.bisect_right(self._starts, gpa >> PAGE_SHIFT) - 1
        if i >= 0:
            e = self._extents[i]
            gfn = gpa >> PAGE_SHIFT
            if gfn < e.gfn + e.count and e.kind is not PageKind.FOREIGN:
                return ((e.pool_page + gfn - e.gfn) << PAGE_SHIFT) | (gpa & (PAGE_SIZE - 1))
        raise MemoryFault(gpa)

    def read(self, gpa: Gpa, size: int) -> bytes:
        """Read ``size`` bytes at ``gpa``; MemoryFault if any byte is not populated."""
        out = bytearray()
        while size > 0:
            off = self._pool_offset(gpa)
            chunk = min(size, PAGE_SIZE - (gpa & (PAGE_SIZE - 1)))
            out += self.pool[off : off + chunk]
            gpa = Gpa(gpa + chunk)
            size -= chunk
        return bytes(out)

    def write(self, gpa: Gpa, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``gpa``; nothing is written unless every page is populated."""
        spans = []
        pos = 0
        while pos < len(data):
            off = self._pool_offset(gpa + pos)
            chunk = min(len(data) - pos, PAGE_SIZE - ((gpa + pos) & (PAGE_SIZE - 1)))
            spans.append((off, pos, chunk))
            pos += chunk
        for off, start, chunk in spans:
            self.pool[off : off + chunk] = data[start : start + chunk]

    def require(self, gpa: Gpa, size: int) -> None:
        """MemoryFault unless every byte of [gpa, gpa+size) is populated."""
        end = gpa + size
        while gpa < end:
            self._pool_offset(gpa)
            gpa = Gpa((gpa | (PAGE_SIZE - 1)) + 1)

    def read_u64(self, gpa: int) -> int:
        if gpa & (PAGE_SIZE - 1) > PAGE_SIZE - 8:
            return int.from_bytes(self.read(Gpa(gpa), 8), "little")
        value: int = _U64.unpack_from(self.pool, self._pool_offset(gpa))[0]
        return value

    def read_u32(self, gpa: int) -> int:
        if gpa & (PAGE_SIZE - 1) > PAGE_SIZE - 4:
            return int.from_bytes(self.read(Gpa(gpa), 4), "little")
        value: int = _U32.unpack_from(self.pool, self._pool_offset(gpa))[0]
        return value

    def page(self, gfn: Gfn) -> memoryview:
        """A writable view of one populated guest page."""
        off = self._pool_offset(gfn << PAGE_SHIFT)
        return memoryview(self.pool)[off : off + PAGE_SIZE]

    def close(self) -> None:
        """Unmap every slot and release the pool."""
        for ext in self._extents:
            self._release(ext)
        self._extents.clear()
        self._starts.clear()
        del self._anchor
        self.pool.close()
        os.close(self._fd)
