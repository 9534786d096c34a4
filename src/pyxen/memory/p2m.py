"""The guest-physical map (p2m) of one domain as immutable snapshots.

Design (read-copy-update):
- A ``Snapshot`` is the whole p2m: the sorted extents (runs of frames backed
  by consecutive pool pages), held in *chunks* of at most ``2 * CHUNK``
  consecutive extents.  A chunk is a pair of tuples (the extents' first
  frames, for bisection, and the extents); the snapshot lists the chunks and
  their first frames.  Nothing in a snapshot is ever changed once published.
- Readers (vCPU threads translating guest addresses, the page-table walker,
  the grant code, the instruction fallback, services' foreign maps) load the
  current snapshot with one attribute read and use only it: they take no
  lock and always see a p2m that existed, never a half-made change.  A
  lookup is two bisections (chunk, then extent).
- A writer (one at a time: the owner, ``physmap.GuestMemory``, serialises
  them) makes an ``Edit`` of the current snapshot: a private copy of the
  chunk list, in which each change (``map``/``map_foreign``/``unmap``)
  replaces the few chunks around it with new ones.  The result becomes the
  next snapshot when the owner publishes it with one assignment.  An edit
  may hold several changes (move a page, replace a frame): they become
  visible together, or not at all if the edit is abandoned.  Cost: a copy of
  the chunk list (n / CHUNK entries) plus a few chunks, so an edit of a p2m
  fragmented to 32,000 extents stays in the microseconds (a flat copy of
  every extent per edit cost ~200 us there); unchanged chunks are shared
  between snapshots.
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
neighbours could merge; no chunk is empty; ``firsts[c]`` is the first frame
of chunk ``c`` and each chunk's ``starts[i] == extents[i].gfn``; ``size`` is
the number of extents; a foreign extent covers exactly one frame.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import operator
from collections.abc import Sequence
from typing import NamedTuple

# A chunk holds at most 2 * CHUNK extents: an edit re-makes the one or two
# chunks it touches, so this bounds its work as n / CHUNK bounds the copy of
# the chunk list.
CHUNK = 64
_gfn = operator.attrgetter("gfn")


class PageKind(enum.Enum):
    RAM = "ram"
    HEAP = "heap"
    FOREIGN = "foreign"  # another domain's page, mapped through a grant


class Extent(NamedTuple):
    """Frames [gfn, gfn + pages) backed by pool pages [pool_page, pool_page + pages).

    (A named tuple: immutable, and made in a fraction of a frozen dataclass's time.)"""

    gfn: int
    pages: int
    pool_page: int
    kind: PageKind
    foreign_host: int = 0  # FOREIGN: host address of the other domain's page
    readonly: bool = False  # FOREIGN: a read-only KVM slot

    @property
    def end(self) -> int:
        return self.gfn + self.pages

    def joins(self, nxt: Extent) -> bool:
        """Whether ``nxt`` continues this extent (they may merge)."""
        return (self.end == nxt.gfn and self.kind is nxt.kind
                and self.kind is not PageKind.FOREIGN
                and self.pool_page + self.pages == nxt.pool_page)

    def part(self, lo: int, hi: int) -> Extent:
        """The frames [lo, hi) of this extent (lo <= hi, within it)."""
        if lo == self.gfn and hi == self.end:
            return self
        return Extent(lo, hi - lo, self.pool_page + lo - self.gfn, self.kind,
                      self.foreign_host, self.readonly)


class Chunk(NamedTuple):
    starts: tuple[int, ...]
    extents: tuple[Extent, ...]


class Snapshot(NamedTuple):
    """One published p2m (see the module docstring): never mutated."""

    firsts: Sequence[int]
    chunks: Sequence[Chunk]
    size: int

    def find(self, gfn: int) -> Extent | None:
        """The extent containing ``gfn``, or None for a hole."""
        c = bisect.bisect_right(self.firsts, gfn) - 1
        if c >= 0:
            starts, extents = self.chunks[c]
            e = extents[bisect.bisect_right(starts, gfn) - 1]
            if gfn < e.gfn + e.pages:
                return e
        return None

    def next_start(self, gfn: int) -> int | None:
        """The first frame of the first extent that starts after ``gfn``."""
        c = bisect.bisect_right(self.firsts, gfn) - 1
        if c >= 0:
            starts = self.chunks[c].starts
            i = bisect.bisect_right(starts, gfn)
            if i < len(starts):
                return starts[i]
        return self.firsts[c + 1] if c + 1 < len(self.firsts) else None

    def extents(self) -> list[Extent]:
        """Every extent, in frame order."""
        return list(itertools.chain.from_iterable(c.extents for c in self.chunks))


EMPTY = Snapshot((), (), 0)


def _merged(pieces: list[Extent]) -> list[Extent]:
    out: list[Extent] = []
    for e in pieces:
        if out and out[-1].joins(e):
            prev = out[-1]
            out[-1] = Extent(prev.gfn, prev.pages + e.pages, prev.pool_page, prev.kind)
        else:
            out.append(e)
    return out


def _chunked(starts: tuple[int, ...], extents: tuple[Extent, ...]) -> list[Chunk]:
    """The extents cut into as few chunks of at most 2 * CHUNK as will do (none if empty)."""
    n = len(extents)
    if n <= 2 * CHUNK:
        return [Chunk(starts, extents)] if n else []
    k = -(-n // (2 * CHUNK))
    cuts = [j * n // k for j in range(k + 1)]
    return [Chunk(starts[a:b], extents[a:b]) for a, b in itertools.pairwise(cuts)]


class Edit:
    """A change being made to ``base``: see the module docstring.

    ``removed`` are extents of ``base`` that the result no longer has,
    ``added`` the result's extents that ``base`` lacks (both by identity).
    """

    def __init__(self, base: Snapshot) -> None:
        self.base = base
        self._firsts: list[int] | None = None
        self._chunks: list[Chunk] = []
        self._size = base.size
        self._splices = 0
        self.removed: dict[int, Extent] = {}
        self.added: dict[int, Extent] = {}

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.added)

    def result(self) -> Snapshot:
        """The new snapshot.  The edit must not be used afterwards."""
        if self._firsts is None:
            return self.base
        self._settle()
        snap = Snapshot(self._firsts, self._chunks, self._size)
        self._firsts = None
        self.base = snap
        return snap

    def _settle(self) -> None:
        """An extent taken out and made again equal (e.g. a page unmapped, then mapped
        back) is the base's object again: its slot stays as it is."""
        if self._splices < 2 or not (self.removed and self.added):
            return  # one splice never makes again what it took out
        originals = {e: e for e in self.removed.values()}
        for key, e in list(self.added.items()):
            orig = originals.get(e)
            if orig is None:
                continue
            firsts, chunks = self._own()
            c = bisect.bisect_right(firsts, e.gfn) - 1
            starts, extents = chunks[c]
            i = bisect.bisect_left(starts, e.gfn)
            chunks[c] = Chunk(starts, (*extents[:i], orig, *extents[i + 1 :]))
            del self.added[key]
            del self.removed[id(orig)]

    # -- reading the state being built -----------------------------------------

    def _view(self) -> Snapshot:
        if self._firsts is None:
            return self.base
        return Snapshot(self._firsts, self._chunks, self._size)

    def find(self, gfn: int) -> Extent | None:
        return self._view().find(gfn)

    def __len__(self) -> int:
        return self._size

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
        view = self._view()
        nxt = view.next_start(gfn)
        if view.find(gfn) is not None or (nxt is not None and nxt < gfn + count):
            raise ValueError(f"frames {gfn:#x}+{count} overlap an existing mapping")

    def _own(self) -> tuple[list[int], list[Chunk]]:
        if self._firsts is None:
            self._firsts = list(self.base.firsts)
            self._chunks = list(self.base.chunks)
        return self._firsts, self._chunks

    def _splice(self, lo: int, hi: int, middle: list[Extent]) -> None:
        """Replace frames [lo, hi) by ``middle`` (sorted extents within [lo, hi)).

        The extents overlapping or touching [lo, hi) are cut and merged again
        with ``middle``, which keeps the canonical form.  They lie in the chunks
        from the one holding ``lo - 1`` to the one holding ``hi``; those chunks
        are made again (split when they grow past 2 * CHUNK, gone when empty)."""
        firsts, chunks = self._own()
        left = bisect.bisect_right(firsts, lo) - 1
        if left > 0 and firsts[left] == lo:
            left -= 1  # what ends at lo is the previous chunk's last extent
        left = max(left, 0)
        right = bisect.bisect_right(firsts, hi)  # exclusive
        if right - left == 1:
            starts, extents = chunks[left]
        else:
            starts = tuple(itertools.chain.from_iterable(c.starts for c in chunks[left:right]))
            extents = tuple(itertools.chain.from_iterable(c.extents for c in chunks[left:right]))
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
        self._size += len(new) - len(old)
        self._splices += 1
        cut = _chunked(starts[:i] + tuple(e.gfn for e in new) + starts[j:],
                       extents[:i] + tuple(new) + extents[j:])
        chunks[left:right] = cut
        firsts[left:right] = [c.starts[0] for c in cut]
        new_ids = {id(e) for e in new}
        for e in old:  # gone: a base extent, or one this edit made earlier
            if id(e) not in new_ids and self.added.pop(id(e), None) is None:
                self.removed[id(e)] = e
        old_ids = {id(e) for e in old}
        for e in new:  # not an old object: made just now
            if id(e) not in old_ids:
                self.added[id(e)] = e

