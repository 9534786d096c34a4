"""The p2m's snapshots, merging and KVM slot budget (memory/p2m.py, memory/physmap.py).

No KVM: a model of KVM's slot table (``SlotModel``) checks every slot call,
and a page-level model of the p2m gives the canonical extents expected.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from pyxen.memory import p2m
from pyxen.memory.addr import PAGE_SIZE, Gfn, Gpa
from pyxen.memory.errors import SlotsExhausted
from pyxen.memory.p2m import EMPTY, Edit, Extent, PageKind, Snapshot
from pyxen.memory.physmap import GuestMemory, Override, SlotMode, SlotProgrammer

RAM = PageKind.RAM
HEAP = PageKind.HEAP
FOREIGN = PageKind.FOREIGN


class SlotModel(SlotProgrammer):
    """KVM's slot table: no overlap, no resize of a live slot, ids below the limit."""

    def __init__(self, limit: int = 1 << 15, fail_after: int | None = None) -> None:
        self.limit = limit
        self.fail_after = fail_after  # raise on that many-th creation from now
        self.active: dict[int, tuple[int, int, int, bool]] = {}
        self.calls = 0

    def set_slot(self, slot: int, gpa: int, size: int, host_addr: int,
                 readonly: bool = False) -> None:
        self.calls += 1
        assert 0 <= slot < self.limit, f"slot id {slot} beyond KVM's {self.limit}"
        if size == 0:
            assert self.active.pop(slot)[0] == gpa
            return
        if self.fail_after is not None:
            if self.fail_after == 0:
                self.fail_after = None  # one failure, then KVM works again
                raise OSError("KVM_SET_USER_MEMORY_REGION: out of memory")
            self.fail_after -= 1
        assert slot not in self.active
        for ogpa, osize, _, _ in self.active.values():
            assert gpa + size <= ogpa or ogpa + osize <= gpa
        self.active[slot] = (gpa, size, host_addr, readonly)

    def regions(self) -> set[tuple[int, int, int, bool]]:
        return set(self.active.values())


def regions_of(mem: GuestMemory) -> set[tuple[int, int, int, bool]]:
    """What KVM should hold for ``mem``'s current extents."""
    out = set()
    for e in mem.extents():
        host = e.foreign_host if e.kind is FOREIGN else mem.host_base + e.pool_page * PAGE_SIZE
        out.add((e.gfn * PAGE_SIZE, e.pages * PAGE_SIZE, host, e.readonly))
    return out


def tuples(mem: GuestMemory) -> list[tuple[int, int, int, PageKind]]:
    return [(e.gfn, e.pages, e.pool_page, e.kind) for e in mem.extents()]


@pytest.fixture
def kvm() -> SlotModel:
    return SlotModel()


@pytest.fixture
def mem(kvm: SlotModel) -> Iterator[GuestMemory]:
    m = GuestMemory(ram_capacity=64, heap_pages=8, slots=kvm)
    yield m
    m.close()
    assert kvm.active == {}


# -- merging -------------------------------------------------------------------------


def test_adjacent_pool_contiguous_extents_merge(mem: GuestMemory, kvm: SlotModel) -> None:
    mem.map(Gfn(10), 2, 5, RAM)
    mem.map(Gfn(12), 3, 7, RAM)  # continues [10, 12) in both spaces
    mem.map(Gfn(8), 2, 3, RAM)  # and from the left
    assert tuples(mem) == [(8, 7, 3, RAM)]
    assert kvm.regions() == regions_of(mem)
    assert mem.slots_in_use == 1


def test_extents_that_only_touch_stay_apart(mem: GuestMemory) -> None:
    mem.map(Gfn(10), 2, 5, RAM)
    mem.map(Gfn(12), 1, 9, RAM)  # touches in frames, not in the pool
    mem.map(Gfn(13), 1, mem.heap_pool_page(0), HEAP)  # another kind
    mem.map(Gfn(14), 1, mem.heap_pool_page(1), HEAP)  # merges with the heap frame
    assert tuples(mem) == [(10, 2, 5, RAM), (12, 1, 9, RAM), (13, 2, 64, HEAP)]


def test_foreign_frames_never_merge(mem: GuestMemory) -> None:
    mem.map_foreign(Gfn(4), 0x7000_0000, 3, readonly=False)
    mem.map_foreign(Gfn(5), 0x7000_1000, 4, readonly=False)
    assert [(e.gfn, e.pages, e.kind) for e in mem.extents()] == [(4, 1, FOREIGN), (5, 1, FOREIGN)]


def test_balloon_out_and_back_restores_one_extent(mem: GuestMemory, kvm: SlotModel) -> None:
    mem.map(Gfn(0), 32, 0, RAM)
    for gfn in range(1, 32, 2):
        mem.unmap(Gfn(gfn))
    assert mem.slots_in_use == 16
    for gfn in range(1, 32, 2):
        mem.map(Gfn(gfn), 1, gfn, RAM)
    assert tuples(mem) == [(0, 32, 0, RAM)]
    assert kvm.regions() == regions_of(mem)


def test_one_edit_that_changes_nothing_touches_no_slot(mem: GuestMemory, kvm: SlotModel) -> None:
    mem.map(Gfn(0), 8, 0, RAM)
    before = mem.snapshot()
    calls = kvm.calls
    with mem.edit() as p2m:
        assert p2m.unmap(Gfn(3)) == (3, RAM)
        p2m.map(Gfn(3), 1, 3, RAM)
    assert kvm.calls == calls
    assert mem.extents()[0] is before.extents()[0]


def test_move_in_one_edit(mem: GuestMemory, kvm: SlotModel) -> None:
    mem.map(Gfn(0), 4, 0, RAM)
    mem.map(Gfn(10), 1, mem.heap_pool_page(0), HEAP)
    with mem.edit() as p2m:
        p2m.unmap(Gfn(3))
        assert p2m.unmap(Gfn(10)) == (64, HEAP)
        p2m.map(Gfn(10), 1, 3, RAM)
    assert tuples(mem) == [(0, 3, 0, RAM), (10, 1, 3, RAM)]
    assert kvm.regions() == regions_of(mem)


# -- snapshots -----------------------------------------------------------------------


def test_snapshot_is_not_changed_by_later_edits(mem: GuestMemory) -> None:
    mem.map(Gfn(0), 8, 0, RAM)
    old = mem.snapshot()
    old_extents = old.extents()
    mem.unmap(Gfn(4))
    mem.map(Gfn(20), 2, 30, RAM)
    assert old.extents() == old_extents
    assert list(old.firsts) == [0] and old.size == 1
    assert old.find(4) == Extent(0, 8, 0, RAM)
    assert mem.snapshot().find(4) is None


def test_failed_edit_changes_nothing(mem: GuestMemory, kvm: SlotModel) -> None:
    mem.map(Gfn(0), 8, 0, RAM)
    before = mem.snapshot()
    calls = kvm.calls
    with pytest.raises(ValueError), mem.edit() as p2m:
        p2m.unmap(Gfn(2))
        p2m.map(Gfn(5), 1, 9, RAM)  # overlaps: the whole edit is abandoned
    assert mem.snapshot() is before
    assert kvm.calls == calls


def test_kvm_failure_is_rolled_back() -> None:
    kvm = SlotModel()
    mem = GuestMemory(ram_capacity=16, heap_pages=1, slots=kvm)
    mem.map(Gfn(0), 8, 0, RAM)
    before, regions = mem.snapshot(), kvm.regions()
    kvm.fail_after = 1  # the split's first piece is created, the second fails
    with pytest.raises(OSError):
        mem.unmap(Gfn(4))
    assert mem.snapshot() is before
    assert kvm.regions() == regions == regions_of(mem)
    assert mem.read(Gpa(4 * PAGE_SIZE), 1) == b"\0"
    mem.close()
    assert kvm.active == {}


# -- the slot budget -----------------------------------------------------------------


def test_budget_stops_fragmentation_before_kvm_does() -> None:
    kvm = SlotModel(limit=8)
    mem = GuestMemory(ram_capacity=32, heap_pages=1, slots=kvm, slot_limit=8, slot_reserve=3)
    mem.map(Gfn(0), 32, 0, RAM)
    for gfn in range(1, 9, 2):  # 1 extent -> 5
        mem.unmap(Gfn(gfn))
    assert mem.slots_in_use == 5
    before, calls = mem.snapshot(), kvm.calls
    with pytest.raises(SlotsExhausted) as info:
        mem.unmap(Gfn(9))  # a sixth extent: over 8 - 3
    assert (info.value.needed, info.value.budget) == (6, 5)
    assert mem.snapshot() is before and kvm.calls == calls
    # Changes that do not add an extent still work at the limit.
    assert mem.unmap(Gfn(0)) == (0, RAM)  # the single frame [0, 1) goes
    assert mem.unmap(Gfn(31)) == (31, RAM)  # shrinks the last extent
    mem.map(Gfn(1), 1, 1, RAM)  # fills a hole: [1, 3) merges with [2, 3)
    assert mem.slots_in_use == 4
    mem.unmap(Gfn(11))  # so there is room for one more split
    assert mem.slots_in_use == 5
    mem.close()


def test_reserve_is_for_reserved_edits() -> None:
    kvm = SlotModel(limit=8)
    mem = GuestMemory(ram_capacity=32, heap_pages=1, slots=kvm, slot_limit=8, slot_reserve=3)
    mem.map(Gfn(0), 32, 0, RAM)
    for gfn in (2, 4, 6, 8):
        mem.unmap(Gfn(gfn))
    assert mem.slots_in_use == 5
    with pytest.raises(SlotsExhausted):
        mem.map(Gfn(100), 1, 0, RAM)
    # A grant mapping may use the reserve, up to every slot KVM has.
    mem.map_foreign(Gfn(2), 0x7000_0000, 0, readonly=False)
    mem.map_foreign(Gfn(4), 0x7000_1000, 0, readonly=False)
    mem.map_foreign(Gfn(100), 0x7000_2000, 0, readonly=True)
    assert mem.slots_in_use == 8
    with pytest.raises(SlotsExhausted):
        mem.map_foreign(Gfn(101), 0x7000_3000, 0, readonly=True)
    assert kvm.regions() == regions_of(mem)
    mem.close()


def test_no_limit_without_kvm() -> None:
    mem = GuestMemory(ram_capacity=64, heap_pages=1)
    mem.map(Gfn(0), 64, 0, RAM)
    for gfn in range(1, 64, 2):
        mem.unmap(Gfn(gfn))
    assert mem.slots_in_use == 32
    mem.close()


# -- the canonical form, against a page-level model ------------------------------------


def canonical(pages: dict[int, tuple[int, PageKind, int, bool]]) -> list[Extent]:
    """The extents a page-level map must give: maximal runs, foreign frames alone."""
    out: list[Extent] = []
    for gfn in sorted(pages):
        pool, kind, host, ro = pages[gfn]
        e = Extent(gfn, 1, pool, kind, host, ro)
        prev = out[-1] if out else None
        if (prev is not None and prev.end == gfn and prev.kind is kind is not FOREIGN
                and prev.pool_page + prev.pages == pool):
            out[-1] = Extent(prev.gfn, prev.pages + 1, prev.pool_page, prev.kind)
        else:
            out.append(e)
    return out


@pytest.mark.parametrize("chunk", [1, 2, 64])
@pytest.mark.parametrize("seed", range(4))
def test_random_edits_keep_the_canonical_form(seed: int, chunk: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(p2m, "CHUNK", chunk)  # small chunks: many chunk boundaries
    rng = random.Random(seed)
    kvm = SlotModel(limit=40)
    mem = GuestMemory(ram_capacity=48, heap_pages=4, slots=kvm, slot_limit=40, slot_reserve=4)
    pages: dict[int, tuple[int, PageKind, int, bool]] = {}
    free = list(range(48))
    rng.shuffle(free)
    for _ in range(1500):
        gfn = rng.randrange(0, 96)
        op = rng.random()
        try:
            if op < 0.45:
                found = mem.unmap(Gfn(gfn))
                want = pages.pop(gfn, None)
                assert found == (None if want is None else (want[0], want[1]))
                if want is not None and want[1] is RAM:
                    free.append(want[0])
            elif op < 0.85 and gfn not in pages and free:
                count = 1
                while count < 4 and gfn + count not in pages and rng.random() < 0.5:
                    count += 1
                # Often the pool pages that continue a neighbour, to exercise merging.
                left = pages.get(gfn - 1)
                want_pool = left[0] + 1 if left and left[1] is RAM else None
                if want_pool is not None and all(want_pool + i in free for i in range(count)):
                    pool = want_pool
                    for i in range(count):
                        free.remove(pool + i)
                else:
                    count, pool = 1, free.pop()
                mem.map(Gfn(gfn), count, pool, RAM)
                for i in range(count):
                    pages[gfn + i] = (pool + i, RAM, 0, False)
            elif op < 0.93 and gfn not in pages:
                heap = rng.randrange(4)
                mem.map(Gfn(gfn), 1, mem.heap_pool_page(heap), HEAP)
                pages[gfn] = (mem.heap_pool_page(heap), HEAP, 0, False)
            elif gfn not in pages:
                ro = rng.random() < 0.5
                mem.map_foreign(Gfn(gfn), 0x7000_0000 + gfn * PAGE_SIZE, 5, ro)
                pages[gfn] = (5, FOREIGN, 0x7000_0000 + gfn * PAGE_SIZE, ro)
        except SlotsExhausted:
            pass  # nothing changed: the model stays as it was
        assert list(mem.extents()) == canonical(pages)
        check_chunks(mem.snapshot())
        for gfn in range(0, 97, 7):
            want = pages.get(gfn)
            assert mem.lookup(Gfn(gfn)) == (None if want is None else want[:2])
        assert kvm.regions() == regions_of(mem)
        assert len(kvm.active) == mem.slots_in_use <= 40
    mem.close()
    assert kvm.active == {}


def test_edit_of_an_empty_snapshot() -> None:
    ed = Edit(EMPTY)
    assert ed.unmap(5) is None
    ed.map(5, 2, 0, RAM)
    assert ed.find(6) == Extent(5, 2, 0, RAM)
    snap = ed.result()
    assert snap.extents() == [Extent(5, 2, 0, RAM)] and snap.size == 1
    assert EMPTY.extents() == [] and EMPTY.find(0) is None and EMPTY.next_start(0) is None


def check_chunks(snap: Snapshot) -> None:
    """The two-level layout's invariants (memory/p2m.py)."""
    assert len(snap.firsts) == len(snap.chunks)
    for first, chunk in zip(snap.firsts, snap.chunks, strict=True):
        assert 0 < len(chunk.extents) <= 2 * p2m.CHUNK
        assert chunk.starts == tuple(e.gfn for e in chunk.extents)
        assert first == chunk.starts[0]
    assert snap.size == sum(len(c.extents) for c in snap.chunks)


# -- slot overrides (set_overrides: the mechanism of altp2m views) --------------------

P = PAGE_SIZE


def _memory(pages: int = 16, **kw: object) -> tuple[GuestMemory, SlotModel]:
    model = SlotModel(**kw)  # type: ignore[arg-type]
    mem = GuestMemory(pages, 2, slots=model)
    first = mem.alloc_ram_pages(pages)
    assert first == 0
    mem.map(Gfn(0), pages, 0, PageKind.RAM)
    return mem, model


def _host(mem: GuestMemory, gfn: int) -> int:
    return mem.host_address(gfn * P)


def test_no_override_is_one_slot() -> None:
    mem, model = _memory()
    assert model.regions() == {(0, 16 * P, mem.host_base, False)}


def test_overrides_split_the_extent_around_each_frame() -> None:
    mem, model = _memory()
    mem.set_overrides({3: Override(mode=SlotMode.ABSENT), 5: Override(mode=SlotMode.READONLY),
                       9: Override(frame=12)})
    assert model.regions() == {
        (0, 3 * P, _host(mem, 0), False),
        (4 * P, P, _host(mem, 4), False),
        (5 * P, P, _host(mem, 5), True),
        (6 * P, 3 * P, _host(mem, 6), False),
        (9 * P, P, _host(mem, 12), False),  # frame 12's page behind gfn 9
        (10 * P, 6 * P, _host(mem, 10), False),
    }
    # The hypervisor's own view is the p2m's.
    mem.write(9 * P, b"nine")
    assert mem.read(9 * P, 4) == b"nine"
    mem.set_overrides({})
    assert model.regions() == {(0, 16 * P, mem.host_base, False)}
    assert mem.overrides() == {}


def test_overrides_at_the_ends_and_adjacent() -> None:
    mem, model = _memory(4)
    mem.set_overrides({0: Override(mode=SlotMode.READONLY), 1: Override(mode=SlotMode.ABSENT),
                       3: Override(frame=2, mode=SlotMode.READONLY)})
    assert model.regions() == {(0, P, _host(mem, 0), True), (2 * P, P, _host(mem, 2), False),
                               (3 * P, P, _host(mem, 2), True)}


def test_override_survives_p2m_changes_and_follows_its_frame() -> None:
    mem, model = _memory()
    mem.set_overrides({2: Override(frame=8)})
    # Balloon out a frame elsewhere: the extent splits, the override stays.
    assert mem.unmap(Gfn(5)) is not None
    assert (2 * P, P, _host(mem, 8), False) in model.regions()
    # The remap target goes away: gfn 2 falls back to its own page.
    own2 = _host(mem, 2)
    page8 = mem.unmap(Gfn(8))
    assert page8 is not None
    assert (2 * P, P, own2, False) in model.regions()
    # ... and follows it when it comes back (with another pool page).
    mem.map(Gfn(8), 1, page8[0], PageKind.RAM)
    assert (2 * P, P, _host(mem, 8), False) in model.regions()
    mem.set_overrides({})
    assert (2 * P, P, own2, False) not in model.regions()
    assert mem.lookup(Gfn(2)) is not None


def test_non_ram_frames_are_not_overridden() -> None:
    mem, model = _memory(4)
    heap = mem.heap_pool_page(0)
    mem.map(Gfn(10), 1, heap, PageKind.HEAP)
    mem.set_overrides({10: Override(mode=SlotMode.ABSENT)})
    assert (10 * P, P, mem.host_base + heap * P, False) in model.regions()


def test_a_kvm_failure_restores_the_old_mapping() -> None:
    mem, model = _memory()
    mem.set_overrides({4: Override(mode=SlotMode.READONLY)})
    before = model.regions()
    model.fail_after = 1
    with pytest.raises(OSError):
        mem.set_overrides({4: Override(mode=SlotMode.ABSENT), 7: Override(frame=1)})
    assert model.regions() == before
    assert mem.overrides() == {4: Override(mode=SlotMode.READONLY)}


def test_overrides_count_against_the_slot_budget() -> None:
    model = SlotModel(limit=8)
    mem = GuestMemory(16, 2, slots=model, slot_limit=8, slot_reserve=2)
    mem.map(Gfn(0), 16, mem.alloc_ram_pages(16) or 0, PageKind.RAM)
    with pytest.raises(SlotsExhausted):
        mem.set_overrides({g: Override(mode=SlotMode.READONLY) for g in (1, 3, 5)})
    assert mem.overrides() == {}
    mem.set_overrides({1: Override(mode=SlotMode.READONLY)})
    assert len(model.active) == 3
