"""The guest-physical map (p2m) of one domain as immutable snapshots.

Design (read-copy-update):
- A ``Snapshot`` is the whole p2m: the sorted extents (runs of frames backed
  by consecutive pool pages) and, in a parallel sequence, their first frames
  for bisection.  A snapshot is never changed once published.
- Readers (vCPU threads translating guest addresses, the page-table walker,
  the grant code, the instruction fallback, services' foreign maps) load the
  current snapshot with one attribute read and use only it: they take no
  lock and always see a p2m that existed, never a half-made change.
- A writer (one at a time: the owner, ``physmap.GuestMemory``, serialises
  them) makes an ``Edit`` of the current snapshot: a private copy of the two
  sequences, changed in place by ``map``/``map_foreign``/``unmap``, which
  becomes the next snapshot when the owner publishes it with one assignment.
  An edit may hold several changes (move a page, replace a frame): they
  become visible together, or not at all if the edit is abandoned.
- Each extent is one KVM memory slot.  An edit records which extents of the
  base snapshot it removed and which new ones it added, so the owner
  reprograms exactly those slots; an extent that an edit leaves as it was
  (even if it was cut out and put back) keeps its slot.

Canonical form (merging): two extents that touch in guest-physical space,
continue each other in the pool and have the same kind are one extent (RAM
or heap; a foreign frame, another domain's page, is always an extent of its
own).  Every edit restores this form around what it changed, so the number
of extents -- and of KVM slots -- is the real fragmentation of the p2m: a
page ballooned out and populated again with the same pool page leaves the
p2m as it was.

Invariants of a snapshot: extents are sorted, do not overlap, and no two
neighbours could merge; ``starts[i] == extents[i].gfn``; a foreign extent
covers exactly one frame.

Cost: an edit copies both sequences once (about 50 us per 32,000 extents, a
C-level copy), less than the KVM slot ioctls of the same change; a lookup is
one bisection, as before.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple


class PageKind(enum.Enum):
    RAM = "ram"
    HEAP = "heap"
    FOREIGN = "foreign"  # another domain's page, mapped through a grant


@dataclass(frozen=True, slots=True)
class Extent:
    """Frames [gfn, gfn + count) backed by pool pages [pool_page, pool_page + count)."""

    gfn: int
    count: int
    pool_page: int
    kind: PageKind
    foreign_host: int = 0  # FOREIGN: host address of the other domain's page
    readonly: bool = False  # FOREIGN: a read-only KVM slot

    @property
    def end(self) -> int:
        return self.gfn + self.count

    def joins(self, nxt: Extent) -> bool:
        """Whether ``nxt`` continues this extent (they may merge)."""
        return (self.end == nxt.gfn and self.kind is nxt.kind
                and self.kind is not PageKind.FOREIGN
                and self.pool_page + self.count == nxt.pool_page)

    def part(self, lo: int, hi: int) -> Extent:
        """The frames [lo, hi) of this extent (lo <= hi, within it)."""
        if lo == self.gfn and hi == self.end:
            return self
        return Extent(lo, hi - lo, self.pool_page + lo - self.gfn, self.kind,
                      self.foreign_host, self.readonly)


class Snapshot(NamedTuple):
    """One published p2m (see the module docstring): never mutated."""

    starts: Sequence[int]
    extents: Sequence[Extent]

    def find(self, gfn: int) -> Extent | None:
        """The extent containing ``gfn``, or None for a hole."""
        i = bisect.bisect_right(self.starts, gfn) - 1
        if i >= 0:
            e = self.extents[i]
            if gfn < e.gfn + e.count:
                return e
        return None


EMPTY = Snapshot((), ())


def _merged(pieces: list[Extent]) -> list[Extent]:
    out: list[Extent] = []
    for e in pieces:
        if out and out[-1].joins(e):
            prev = out[-1]
            out[-1] = Extent(prev.gfn, prev.count + e.count, prev.pool_page, prev.kind)
        else:
            out.append(e)
    return out


class Edit:
    """A change being made to ``base``: see the module docstring.

    ``removed`` are extents of ``base`` that the result no longer has,
    ``added`` the result's extents that ``base`` lacks (both by identity).
    """

    def __init__(self, base: Snapshot) -> None:
        self.base = base
        self._starts: list[int] | None = None
        self._extents: list[Extent] = []
        self.removed: dict[int, Extent] = {}
        self.added: dict[int, Extent] = {}

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.added)

    def result(self) -> Snapshot:
        """The new snapshot.  The edit must not be used afterwards."""
        if self._starts is None:
            return self.base
        self._settle()
        snap = Snapshot(self._starts, self._extents)
        self._starts = None
        self.base = snap
        return snap

    def _settle(self) -> None:
        """An extent taken out and made again equal (e.g. a page unmapped, then mapped
        back) is the base's object again: its slot stays as it is."""
        if not (self.removed and self.added) or self._starts is None:
            return
        originals = {e: e for e in self.removed.values()}
        for key, e in list(self.added.items()):
            orig = originals.get(e)
            if orig is not None:
                self._extents[bisect.bisect_left(self._starts, e.gfn)] = orig
                del self.added[key]
                del self.removed[id(orig)]

    # -- reading the state being built -----------------------------------------

    def find(self, gfn: int) -> Extent | None:
        if self._starts is None:
            return self.base.find(gfn)
        return Snapshot(self._starts, self._extents).find(gfn)

    def __len__(self) -> int:
        return len(self._extents) if self._starts is not None else len(self.base.extents)

    # -- changes ---------------------------------------------------------------

    def map(self, gfn: int, count: int, pool_page: int, kind: PageKind) -> None:
        """Back frames [gfn, gfn+count) with pool pages from ``pool_page``; must be a hole."""
        if kind is PageKind.FOREIGN:
            raise ValueError("foreign frames are mapped with map_foreign")
        if count <= 0:
            return
        self._require_hole(gfn, count)
        self._splice(gfn, gfn + count, [Extent(gfn, count, pool_page, kind)])

    def map_foreign(self, gfn: int, host_addr: int, pool_page: int, readonly: bool) -> None:
        """Back one frame (a hole) with another pool's page at ``host_addr``."""
        self._require_hole(gfn, 1)
        self._splice(gfn, gfn + 1,
                     [Extent(gfn, 1, pool_page, PageKind.FOREIGN, host_addr, readonly)])

    def unmap(self, gfn: int) -> tuple[int, PageKind] | None:
        """Make ``gfn`` a hole; return what backed it (None if it was a hole)."""
        e = self.find(gfn)
        if e is None:
            return None
        self._splice(gfn, gfn + 1, [])
        return e.pool_page + gfn - e.gfn, e.kind

    def _require_hole(self, gfn: int, count: int) -> None:
        starts, extents = self._view()
        i = bisect.bisect_left(starts, gfn)
        if (i > 0 and extents[i - 1].end > gfn) or (i < len(starts) and starts[i] < gfn + count):
            raise ValueError(f"frames {gfn:#x}+{count} overlap an existing mapping")

    def _view(self) -> tuple[Sequence[int], Sequence[Extent]]:
        if self._starts is None:
            return self.base
        return self._starts, self._extents

    def _own(self) -> tuple[list[int], list[Extent]]:
        if self._starts is None:
            self._starts = list(self.base.starts)
            self._extents = list(self.base.extents)
        return self._starts, self._extents

    def _splice(self, lo: int, hi: int, middle: list[Extent]) -> None:
        """Replace frames [lo, hi) by ``middle`` (sorted extents within [lo, hi)).

        The extents overlapping or touching [lo, hi) are cut and merged again
        with ``middle``, which keeps the canonical form."""
        starts, extents = self._own()
        i = bisect.bisect_left(starts, lo)
        if i > 0 and extents[i - 1].end >= lo:
            i -= 1
        j = bisect.bisect_right(starts, hi)
        old = extents[i:j]
        pieces: list[Extent] = []
        if old and old[0].gfn < lo:
            pieces.append(old[0].part(old[0].gfn, min(old[0].end, lo)))
        pieces += middle
        if old and old[-1].end > hi:
            pieces.append(old[-1].part(max(old[-1].gfn, hi), old[-1].end))
        new = _merged(pieces)
        kept = {e: e for e in old}  # an extent equal to an old one stays that object
        new = [kept.get(e, e) for e in new]
        extents[i:j] = new
        starts[i:j] = [e.gfn for e in new]
        new_ids = {id(e) for e in new}
        for e in old:  # gone: a base extent, or one this edit made earlier
            if id(e) not in new_ids and self.added.pop(id(e), None) is None:
                self.removed[id(e)] = e
        old_ids = {id(e) for e in old}
        for e in new:  # not an old object: made just now
            if id(e) not in old_ids:
                self.added[id(e)] = e
