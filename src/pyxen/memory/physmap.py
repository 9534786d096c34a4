"""Guest RAM and the guest-physical map (p2m) of one domain.

Design:
- All memory a domain can ever have lives in one memfd, the *pool*, mapped
  once into the hypervisor.  The pool has ``ram_capacity`` pages for RAM
  (the domain's ``max_pages``) followed by ``heap_pages`` pages that belong
  to the hypervisor (Xen's "xen-heap": shared_info, grant frames).  The memfd
  is sparse: a page costs host memory only once it is touched.
- The p2m maps guest frames to pool pages as sorted, merged *extents*, held
  as immutable snapshots replaced by one assignment (``memory.p2m``: the
  design, the canonical form and the cost are described there).  Readers
  take ``_p2m`` once and need no lock; writers make an ``edit()`` under the
  writer lock, and ``_commit`` reprograms the KVM slots of what changed and
  publishes the new snapshot.  A guest access to a frame outside every
  extent is an MMIO exit.
- Every extent is one KVM memory slot, and the host has a fixed number of
  them (KVM_CAP_NR_MEMSLOTS, ``slot_limit``).  The *slot budget*: an edit
  that leaves more extents than it found may use at most ``slot_limit -
  slot_reserve`` of them, or all ``slot_limit`` when it is made with
  ``reserve=True`` (grant mappings, the hypervisor's own removals).  So a
  guest that fragments its own memory (ballooning every other page) cannot
  take the slots that grant mappings need, and nothing ever asks KVM for a
  slot it does not have.  An edit over budget raises ``SlotsExhausted``
  before anything changed; the hypercalls turn that into Xen's answer for a
  p2m that cannot grow (see hv/hypercalls/memory_op.py).
- A *foreign* extent (``PageKind.FOREIGN``, one frame) is a page of another
  domain's pool that this domain has mapped through a grant: its slot points
  at that page's host address (every pool is mapped in this one process),
  read-only if the grant was mapped read-only.  The owner of this map (the
  hypervisor's grant code) removes it before the other pool goes away.

Invariants:
- Every extent of the published snapshot has exactly one live KVM slot
  (``_slot_of``, keyed by its first frame) covering exactly its frames.
- A RAM pool page is in exactly one of: mapped in one extent, the free list,
  or "orphaned" (replaced by another mapping while still owned by the
  domain, as Xen leaves it); heap pages are never on the RAM free list.
- Freed RAM pages are punched out of the memfd (they read as zero when reused).
  The free list is last in, first out: a page ballooned out and populated
  again gets its own pool page back, and its extent merges whole again.
- A foreign extent's ``pool_page`` indexes the *other* pool and is never on
  this pool's free list.  The hypervisor's guest-physical accessors
  (``read``, ``write``, ``page``, ...) do not reach foreign frames: they
  fault like a hole.

Slot overrides (altp2m views, hv/altp2m.py): ``set_overrides`` gives single
RAM frames a different KVM mapping from the p2m's: another RAM frame's
page behind it (``Override.frame``), a read-only slot, or no slot at all
(every access an exit).  The p2m and the hypervisor's own accessors are
unchanged: overrides shape only what the *guest* sees through KVM.  An
extent holding overridden frames is programmed as several slots around
them (``_pieces``); ``_slot_of`` maps an extent's first frame to all of
its slots.  An override whose frame is not RAM (any more) falls back to
the frame's own page; ``_commit`` re-programs the extents whose overrides
point into frames it changed.  Budget: each override may cost two slots
more, counted against the same limit as extents.

Locking: the writer lock is a leaf (callers hold the domain lock around
their own accounting).  A reader may act on the snapshot just replaced: it
then touches a pool page the domain has just given up, which never leaves
this domain's pool (no other domain can be reached that way).  The pool
allocator (``alloc_ram_pages``/``free_ram_page``) is serialised by the caller.
"""

from __future__ import annotations

import ctypes
import enum
import mmap
import os
import struct
import threading
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pyxen.memory.addr import PAGE_SHIFT, PAGE_SIZE, Gfn, Gpa
from pyxen.memory.errors import MemoryFault, SlotsExhausted
from pyxen.memory.p2m import EMPTY, Edit, Extent, PageKind, Snapshot

__all__ = ["Extent", "GuestMemory", "Override", "PageKind", "SlotMode", "SlotProgrammer"]


class SlotMode(enum.IntEnum):
    """How KVM maps one overridden frame."""

    NORMAL = 0  # read, write and execute run in the guest
    READONLY = 1  # writes exit (KVM_EXIT_MMIO, not performed)
    ABSENT = 2  # no slot: reads and writes exit, fetches fail


@dataclass(frozen=True, slots=True)
class Override:
    """The guest's mapping of one RAM frame, instead of the p2m's: ``frame`` (a
    gfn whose page backs it; None: its own page) with ``mode``."""

    frame: int | None = None
    mode: SlotMode = SlotMode.NORMAL


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
                 slots: SlotProgrammer | None = None, slot_limit: int | None = None,
                 slot_reserve: int = 0) -> None:
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
        # None: no limit (no KVM).  The reserve is what an edit without
        # reserve=True leaves free.
        self.slot_limit = slot_limit
        self.slot_reserve = slot_reserve if slot_limit is not None else 0
        self._free_slot_ids: list[int] = []
        self._next_slot_id = 0
        # first frame of a live extent -> its slots (more than one around overrides)
        self._slot_of: dict[int, list[tuple[int, int]]] = {}  # (slot, its gpa)
        self._overrides: dict[int, Override] = {}
        self._override_gfns: list[int] = []  # sorted keys of _overrides
        self._writer = threading.Lock()
        self._p2m: Snapshot = EMPTY
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

    # -- the p2m: readers ---------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The current p2m (immutable; see memory.p2m)."""
        return self._p2m

    def lookup(self, gfn: Gfn) -> tuple[int, PageKind] | None:
        """The pool page and kind backing ``gfn``, or None for a hole."""
        e = self._p2m.find(gfn)
        if e is None:
            return None
        return e.pool_page + (gfn - e.gfn), e.kind

    def extent_at(self, gfn: Gfn) -> Extent | None:
        """The extent containing ``gfn`` (None for a hole)."""
        return self._p2m.find(gfn)

    def extents(self) -> list[Extent]:
        """Every extent, in frame order (a copy: later changes do not show)."""
        return self._p2m.extents()

    @property
    def slots_in_use(self) -> int:
        return self._p2m.size

    def slot_ids(self) -> dict[int, int]:
        """First frame of each extent -> its (first) KVM slot (a copy, for tests and tools)."""
        with self._writer:
            return {gfn: slots[0][0] for gfn, slots in self._slot_of.items() if slots}

    def override_of(self, gfn: int) -> Override | None:
        """How KVM maps ``gfn`` if not as the p2m says (lock-free: one dict read)."""
        return self._overrides.get(gfn)

    def overrides(self) -> dict[int, Override]:
        """The frames KVM maps differently from the p2m (a copy)."""
        with self._writer:
            return dict(self._overrides)

    # -- the p2m: writers ---------------------------------------------------------

    @contextmanager
    def edit(self, reserve: bool = False) -> Iterator[Edit]:
        """Change the p2m: every change made to the yielded ``Edit`` becomes visible
        at once when the block ends, or none if it raises.  ``reserve`` lets the
        change use the reserved slots (see the module docstring).  Raises
        ``SlotsExhausted`` (nothing changed) if the result is over budget."""
        with self._writer:
            ed = Edit(self._p2m)
            yield ed
            self._commit(ed, reserve)

    def map(self, gfn: Gfn, count: int, pool_page: int, kind: PageKind) -> None:
        """Back frames [gfn, gfn+count) with pool pages from ``pool_page``; must be a hole."""
        with self._writer:
            ed = Edit(self._p2m)
            ed.map(gfn, count, pool_page, kind)
            self._commit(ed, False)

    def map_foreign(self, gfn: Gfn, host_addr: int, pool_page: int, readonly: bool) -> None:
        """Back one frame (a hole) with another pool's page at ``host_addr``."""
        with self._writer:
            ed = Edit(self._p2m)
            ed.map_foreign(gfn, host_addr, pool_page, readonly)
            self._commit(ed, True)

    def unmap(self, gfn: Gfn) -> tuple[int, PageKind] | None:
        """Remove the mapping of one frame; return what backed it (None if it was a hole)."""
        with self._writer:
            ed = Edit(self._p2m)
            found = ed.unmap(gfn)
            self._commit(ed, False)
            return found

    def _commit(self, ed: Edit, reserve: bool) -> None:
        old = self._p2m.size
        snap = ed.result()
        if not ed.changed:
            return
        new = snap.size
        if self.slot_limit is not None and new > old:
            cap = self.slot_limit - (0 if reserve else self.slot_reserve)
            if new + 2 * len(self._overrides) > cap:
                raise SlotsExhausted(new, cap)
        removed, added = dict(ed.removed), dict(ed.added)
        if any(o.frame is not None for o in self._overrides.values()):
            self._repoint(removed, added, snap)
        self._program(list(removed.values()), list(added.values()), snap)
        self._p2m = snap

    def _repoint(self, removed: dict[int, Extent], added: dict[int, Extent],
                 snap: Snapshot) -> None:
        """Add to ``removed``/``added`` the unchanged extents holding an override whose
        ``frame`` lies in a changed extent: their slots point at the old page."""
        changed = [*removed.values(), *added.values()]
        for gfn, o in self._overrides.items():
            if o.frame is None or not any(e.gfn <= o.frame < e.gfn + e.pages for e in changed):
                continue
            old, new = self._p2m.find(Gfn(gfn)), snap.find(Gfn(gfn))
            if old is not None and old is new and old.gfn not in removed:
                removed[old.gfn] = old
                added[old.gfn] = old

    def set_overrides(self, overrides: dict[int, Override]) -> None:
        """Make KVM map the frames of ``overrides`` so (and every other frame as the p2m
        says).  Raises ``SlotsExhausted`` (nothing changed) if the slots would not
        fit, or the KVM error after restoring the old mapping."""
        with self._writer:
            old = self._overrides
            cap = self.slot_limit - self.slot_reserve if self.slot_limit is not None else None
            if cap is not None and self._p2m.size + 2 * len(overrides) > cap:
                raise SlotsExhausted(self._p2m.size + 2 * len(overrides), cap)
            touched = {g for g in old.keys() | overrides.keys()
                       if old.get(g) != overrides.get(g)}
            extents: dict[int, Extent] = {}
            for gfn in touched:
                e = self._p2m.find(Gfn(gfn))
                if e is not None and e.kind is PageKind.RAM:
                    extents[e.gfn] = e
            affected = list(extents.values())
            for e in affected:
                self._delete_slot(e)
            self._overrides = dict(overrides)
            self._override_gfns = sorted(overrides)
            created: list[Extent] = []
            try:
                for e in affected:
                    self._create_slot(e, self._p2m)
                    created.append(e)
            except Exception:
                for e in created:
                    self._delete_slot(e)
                self._overrides = old
                self._override_gfns = sorted(old)
                for e in affected:
                    self._create_slot(e, self._p2m)
                raise

    def _program(self, removed: list[Extent], added: list[Extent], snap: Snapshot) -> None:
        """Delete the slots of ``removed``, then create slots for ``added`` (KVM
        refuses overlapping slots); on a KVM failure undo what was done and re-raise."""
        deleted: list[Extent] = []
        created: list[Extent] = []
        try:
            for ext in removed:
                self._delete_slot(ext)
                deleted.append(ext)
            for ext in added:
                self._create_slot(ext, snap)
                created.append(ext)
        except Exception:
            for ext in reversed(created):
                self._delete_slot(ext)
            for ext in reversed(deleted):
                self._create_slot(ext, self._p2m)
            raise

    def _pieces(self, ext: Extent, snap: Snapshot) -> list[tuple[int, int, int, bool]]:
        """The slots of a non-foreign extent as (first gfn, pages, host address,
        read-only): one, or several around its overridden frames."""
        base = self.host_base + (ext.pool_page << PAGE_SHIFT) - (ext.gfn << PAGE_SHIFT)
        end = ext.gfn + ext.pages
        keys = self._override_gfns
        i = bisect_right(keys, ext.gfn - 1)
        if ext.kind is not PageKind.RAM or i == len(keys) or keys[i] >= end:
            return [(ext.gfn, ext.pages, base + (ext.gfn << PAGE_SHIFT), False)]
        out: list[tuple[int, int, int, bool]] = []
        gfn = ext.gfn
        while i < len(keys) and keys[i] < end:
            g = keys[i]
            if g > gfn:
                out.append((gfn, g - gfn, base + (gfn << PAGE_SHIFT), False))
            o = self._overrides[g]
            if o.mode is not SlotMode.ABSENT:
                host = base + (g << PAGE_SHIFT)
                if o.frame is not None:
                    f = snap.find(Gfn(o.frame))
                    if f is not None and f.kind is PageKind.RAM:
                        host = self.host_base + ((f.pool_page + o.frame - f.gfn) << PAGE_SHIFT)
                out.append((g, 1, host, o.mode is SlotMode.READONLY))
            gfn = g + 1
            i += 1
        if gfn < end:
            out.append((gfn, end - gfn, base + (gfn << PAGE_SHIFT), False))
        return out

    def _create_slot(self, ext: Extent, snap: Snapshot) -> None:
        if ext.kind is PageKind.FOREIGN:
            pieces = [(ext.gfn, 1, ext.foreign_host, ext.readonly)]
        else:
            pieces = self._pieces(ext, snap)
        slots: list[tuple[int, int]] = []
        try:
            for gfn, pages, host, readonly in pieces:
                slot = self._free_slot_ids.pop() if self._free_slot_ids else self._next_slot_id
                if slot == self._next_slot_id:
                    self._next_slot_id += 1
                try:
                    if readonly:
                        self._slots.set_slot(slot, gfn << PAGE_SHIFT, pages * PAGE_SIZE, host,
                                             readonly=True)
                    else:
                        self._slots.set_slot(slot, gfn << PAGE_SHIFT, pages * PAGE_SIZE, host)
                except Exception:
                    self._free_slot_ids.append(slot)
                    raise
                slots.append((slot, gfn << PAGE_SHIFT))
        except Exception:
            for slot, gpa in slots:
                self._slots.set_slot(slot, gpa, 0, 0)
                self._free_slot_ids.append(slot)
            raise
        self._slot_of[ext.gfn] = slots

    def _delete_slot(self, ext: Extent) -> None:
        for slot, gpa in self._slot_of.pop(ext.gfn):
            self._slots.set_slot(slot, gpa, 0, 0)
            self._free_slot_ids.append(slot)

    # -- guest-physical access (each call uses one snapshot) -------------------

    def _pool_offset(self, gpa: int) -> int:
        return _offset(self._p2m, gpa)

    def host_address(self, gpa: int) -> int:
        """The hypervisor's address of a byte of guest RAM or heap (else MemoryFault)."""
        return self.host_base + _offset(self._p2m, gpa)

    def host_ranges(self, gpa: int, size: int) -> list[tuple[int, int]]:
        """Host (address, length) ranges holding guest-physical [gpa, gpa+size), one
        per extent crossed; MemoryFault if any byte is a hole or a foreign frame.
        The addresses stay valid until this memory is closed (a page freed
        meanwhile reads as zero)."""
        p2m = self._p2m
        out: list[tuple[int, int]] = []
        while size > 0:
            e = p2m.find(gpa >> PAGE_SHIFT)
            if e is None or e.kind is PageKind.FOREIGN:
                raise MemoryFault(gpa)
            end = (e.gfn + e.pages) << PAGE_SHIFT
            n = min(size, end - gpa)
            out.append((self.host_base + (e.pool_page << PAGE_SHIFT) + gpa - (e.gfn << PAGE_SHIFT),
                        n))
            gpa += n
            size -= n
        return out

    def read(self, gpa: Gpa, size: int) -> bytes:
        """Read ``size`` bytes at ``gpa``; MemoryFault if any byte is not populated."""
        p2m = self._p2m
        if size <= PAGE_SIZE - (gpa & (PAGE_SIZE - 1)):
            if size <= 0:
                return b""
            off = _offset(p2m, gpa)
            return self.pool[off : off + size]
        out = bytearray()
        while size > 0:
            off = _offset(p2m, gpa)
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
            chunk = min(len(data) - pos, PAGE_SIZE - ((gpa + pos) & (PAGE_SIZE - 1)))
            spans.append((Gpa(gpa + pos), chunk))
            pos += chunk
        self.write_spans(spans, data)

    def write_spans(self, spans: Sequence[tuple[Gpa, int]],
                    data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` to the (address, length) spans in order, each within one
        page; nothing is written unless every span is populated."""
        p2m = self._p2m
        offsets = [_offset(p2m, gpa) for gpa, _n in spans]
        pos = 0
        for off, (_gpa, n) in zip(offsets, spans, strict=True):
            self.pool[off : off + n] = data[pos : pos + n]
            pos += n

    def require(self, gpa: Gpa, size: int) -> None:
        """MemoryFault unless every byte of [gpa, gpa+size) is populated."""
        p2m = self._p2m
        end = gpa + size
        while gpa < end:
            _offset(p2m, gpa)
            gpa = Gpa((gpa | (PAGE_SIZE - 1)) + 1)

    def read_u64(self, gpa: int) -> int:
        if gpa & (PAGE_SIZE - 1) > PAGE_SIZE - 8:
            return int.from_bytes(self.read(Gpa(gpa), 8), "little")
        value: int = _U64.unpack_from(self.pool, _offset(self._p2m, gpa))[0]
        return value

    def read_u32(self, gpa: int) -> int:
        if gpa & (PAGE_SIZE - 1) > PAGE_SIZE - 4:
            return int.from_bytes(self.read(Gpa(gpa), 4), "little")
        value: int = _U32.unpack_from(self.pool, _offset(self._p2m, gpa))[0]
        return value

    def page(self, gfn: Gfn) -> memoryview:
        """A writable view of one populated guest page."""
        off = _offset(self._p2m, gfn << PAGE_SHIFT)
        return memoryview(self.pool)[off : off + PAGE_SIZE]

    def close(self) -> None:
        """Unmap every slot and release the pool."""
        with self._writer:
            for ext in self._p2m.extents():
                self._delete_slot(ext)
            self._p2m = EMPTY
        del self._anchor
        self.pool.close()
        os.close(self._fd)


def _offset(p2m: Snapshot, gpa: int) -> int:
    """Pool offset of ``gpa`` in ``p2m``; MemoryFault for a hole or a foreign frame.

    (Snapshot.find, inlined: this is every guest-physical access's path.)"""
    gfn = gpa >> PAGE_SHIFT
    c = bisect_right(p2m.firsts, gfn) - 1
    if c >= 0:
        starts, extents = p2m.chunks[c]
        e = extents[bisect_right(starts, gfn) - 1]
        if gfn < e.gfn + e.pages and e.kind is not PageKind.FOREIGN:
            return ((e.pool_page + gfn - e.gfn) << PAGE_SHIFT) | (gpa & (PAGE_SIZE - 1))
    raise MemoryFault(gpa)
