"""pyxen.hv.grant_table without KVM: entries, pins, status bits, versions, the service API.

A ``FakeDomain`` carries what the grant table uses of a domain: a pool
(``GuestMemory`` without KVM slots), a domid, a lock and a hypervisor with a
domain table.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pyxen.abi.errno import XenErrno
from pyxen.abi.grant_table import (
    GTF_PAT,
    GNTMAP_host_map,
    GnttabStatus,
    GTF_permit_access,
    GTF_reading,
    GTF_readonly,
    GTF_sub_page,
    GTF_transitive,
    GTF_writing,
)
from pyxen.hv import atomic
from pyxen.hv import grant_table as gt
from pyxen.hv.domain import Domain
from pyxen.hv.grant_table import GrantError, GrantTable, map_grant, unmap_grant
from pyxen.memory import PAGE_SIZE, Gfn, GuestMemory, PageKind, SlotsExhausted

S = GnttabStatus
MAX_FRAMES = 16
FRAME_BASE = 1
STATUS_BASE = FRAME_BASE + MAX_FRAMES


class FakeHv:
    def __init__(self) -> None:
        self.domains: dict[int, Any] = {}


class FakeDomain:
    def __init__(self, hv: FakeHv, domid: int, ram: int = 32) -> None:
        self.hv = hv
        self.domid = domid
        heap = STATUS_BASE + gt.status_frames_for(MAX_FRAMES)
        self.memory = GuestMemory(ram, heap)
        self.memory.map(Gfn(0), ram, 0, PageKind.RAM)
        self.lock = threading.RLock()
        self.memory_closed = False
        self.grant_status_gfns: dict[int, int] = {}
        self.unmapped_heap: list[int] = []
        self.slots_full = False
        self.logs: list[str] = []
        self.grants = GrantTable(self, MAX_FRAMES, STATUS_BASE, FRAME_BASE)  # type: ignore[arg-type]
        hv.domains[domid] = self

    max_gfn = 1 << 20
    insert_foreign = Domain.insert_foreign  # what guest_map calls on the mapper

    def log_once(self, key: str, message: str) -> None:
        self.logs.append(message)

    def crash(self, why: str) -> None:
        self.logs.append(f"crash: {why}")

    def unmap_heap_pages(self, heap_indices: list[int]) -> None:
        if self.slots_full:
            raise SlotsExhausted(32765, 32764)
        self.unmapped_heap += heap_indices

    # Guest-side views of the table (what the guest would write).
    def grant_v1(self, ref: int, domid: int, gfn: int, flags: int = GTF_permit_access) -> None:
        off = self.grants.header_offset(ref)
        struct.pack_into("<HHI", self.memory.pool, off, flags, domid, gfn)

    def grant_v2(self, ref: int, domid: int, flags: int, word4: int = 0, word8: int = 0) -> None:
        off = self.grants.header_offset(ref)
        struct.pack_into("<HHIQ", self.memory.pool, off, flags, domid, word4, word8)

    def flags(self, ref: int) -> int:
        return self.grants.read_header(ref)[0]

    def close(self) -> None:
        self.memory.close()


@pytest.fixture
def hv() -> Iterator[FakeHv]:
    h = FakeHv()
    yield h
    for d in list(h.domains.values()):
        d.close()


def test_fresh_table(hv: FakeHv) -> None:
    d = FakeDomain(hv, 1)
    t = d.grants
    assert (t.version, t.nr_frames, t.nr_entries, t.max_frames) == (1, 1, 512, MAX_FRAMES)
    assert t.header_offset(0) == d.memory.heap_pool_page(FRAME_BASE) * PAGE_SIZE
    assert t.header_offset(513) == t.header_offset(0) + PAGE_SIZE + 8
    assert gt.status_frames_for(1) == 1 and gt.status_frames_for(8) == 1
    assert gt.status_frames_for(9) == 2 and gt.grant_frames_for_status(2) == 16


def test_seed_writes_reserved_entries(hv: FakeHv) -> None:
    d = FakeDomain(hv, 1)
    d.grants.seed(0, 0, 0xFEFFF)
    d.grants.seed(1, 0, 0xFEFFC)
    pool, off = d.memory.pool, d.grants.header_offset(0)
    assert struct.unpack_from("<HHIHHI", pool, off) == (1, 0, 0xFEFFF, 1, 0, 0xFEFFC)


def test_copy_pin_sets_and_clears_bits(hv: FakeHv) -> None:
    a, b = FakeDomain(hv, 1), FakeDomain(hv, 2)
    a.grant_v1(8, 2, 5)
    acq = a.grants.acquire(8, 2, readonly=True, for_map=False)
    assert a.flags(8) == GTF_permit_access | GTF_reading
    assert (acq.pool_page, acq.start, acq.length) == (5, 0, PAGE_SIZE)
    w = a.grants.acquire(8, 2, readonly=False, for_map=False)
    assert a.flags(8) == GTF_permit_access | GTF_reading | GTF_writing
    a.grants.release(w)
    assert a.flags(8) == GTF_permit_access | GTF_reading
    a.grants.release(acq)
    a.grants.release(acq)  # idempotent
    assert a.flags(8) == GTF_permit_access
    assert a.grants.active == {} and a.grants.page_pins == {}
    assert b.grants.active == {}


@pytest.mark.parametrize(("flags", "domid", "readonly", "status"), [
    (0, 2, True, S.general_error),  # invalid entry
    (GTF_permit_access, 3, True, S.general_error),  # granted to someone else
    (GTF_permit_access | GTF_readonly, 2, False, S.general_error),  # write a r/o grant
    (2, 2, True, S.general_error),  # accept_transfer
    (GTF_permit_access | GTF_sub_page, 2, True, S.general_error),  # no sub-page in v1 maps
])
def test_map_refusals_leave_flags_alone(hv: FakeHv, flags: int, domid: int, readonly: bool,
                                        status: int) -> None:
    a = FakeDomain(hv, 1)
    a.grant_v1(8, domid, 5, flags)
    with pytest.raises(GrantError) as e:
        a.grants.acquire(8, 2, readonly, for_map=True)
    assert e.value.status == status
    assert a.flags(8) == flags
    assert a.grants.active == {}


def test_bad_refs_and_pages(hv: FakeHv) -> None:
    a = FakeDomain(hv, 1)
    for ref in (512, 0xFFFFFFFF, -1):
        with pytest.raises(GrantError) as e:
            a.grants.acquire(ref, 2, True, for_map=False)
        assert e.value.status == S.bad_gntref
    a.grant_v1(9, 2, 0x1000)  # a frame the domain does not have
    with pytest.raises(GrantError) as e:
        a.grants.acquire(9, 2, True, for_map=False)
    assert e.value.status == S.bad_page
    assert a.flags(9) == GTF_permit_access  # the pin was undone
    with pytest.raises(GrantError) as e:
        a.grants.acquire_frame(0x1000, True)
    assert e.value.status == S.bad_page


def test_pinned_entry_is_kept_for_its_grantee_only(hv: FakeHv) -> None:
    a = FakeDomain(hv, 1)
    a.grant_v1(8, 2, 5)
    acq = a.grants.acquire(8, 2, True, for_map=False)
    with pytest.raises(GrantError):
        a.grants.acquire(8, 3, True, for_map=False)
    # While pinned, the guest's later edits do not change what is granted.
    a.grant_v1(8, 2, 6, GTF_permit_access | GTF_reading)
    again = a.grants.acquire(8, 2, True, for_map=False)
    assert again.pool_page == 5
    a.grants.release(again)
    a.grants.release(acq)


def test_pin_counter_limit(hv: FakeHv) -> None:
    a = FakeDomain(hv, 1)
    a.grant_v1(8, 2, 5)
    held = [a.grants.acquire(8, 2, True, for_map=False) for _ in range(gt.MAX_PINS)]
    with pytest.raises(GrantError) as e:
        a.grants.acquire(8, 2, True, for_map=False)
    assert e.value.status == S.general_error
    for acq in held:
        a.grants.release(acq)
    assert a.flags(8) == GTF_permit_access


def test_unstable_entry_gives_up_after_five_tries(hv: FakeHv,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    a = FakeDomain(hv, 1)
    a.grant_v1(8, 2, 5)
    tries = []

    def racing(addr: int, expected: int, new: int) -> int:
        tries.append(expected)
        return expected ^ (1 << 12)  # the guest flipped a bit meanwhile

    monkeypatch.setattr(atomic, "cmpxchg32", racing)
    with pytest.raises(GrantError, match="unstable"):
        a.grants.acquire(8, 2, True, for_map=False)
    assert len(tries) == gt.CMPXCHG_TRIES


def test_guest_revocation_races_with_pins(hv: FakeHv) -> None:
    """A guest revoking with cmpxchg (as Linux does) never succeeds while a pin is held."""
    a = FakeDomain(hv, 1)
    t = a.grants
    a.grant_v1(8, 2, 5)
    host = a.memory.host_base + t.header_offset(8)
    stop = threading.Event()
    violations: list[str] = []
    revoked = [0]

    def guest() -> None:
        while not stop.is_set():
            word = struct.unpack_from("<I", a.memory.pool, t.header_offset(8))[0]
            if word & (GTF_reading | GTF_writing):
                continue
            if atomic.cmpxchg32(host, word, word & 0xFFFF0000) == word:
                revoked[0] += 1
                if t.active:
                    violations.append("revoked while pinned")
                a.grant_v1(8, 2, 5)

    th = threading.Thread(target=guest)
    th.start()
    try:
        for _ in range(2000):
            try:
                acq = t.acquire(8, 2, readonly=False, for_map=True)
            except GrantError:
                continue
            flags = a.flags(8)
            if flags & 3 != GTF_permit_access or not flags & GTF_writing:
                violations.append(f"pinned entry has flags {flags:#x}")
            t.release(acq)
    finally:
        stop.set()
        th.join()
    assert violations == []
    assert revoked[0] > 0


def test_freed_page_waits_for_its_last_pin(hv: FakeHv) -> None:
    a = FakeDomain(hv, 1)
    a.grant_v1(8, 2, 5)
    acq = a.grants.acquire(8, 2, True, for_map=True)
    assert a.grants.free_ram(5) is False  # the guest freed it: deferred
    assert a.grants.free_ram(6) is True
    assert a.grants.take_freed() == []
    a.grants.release(acq)
    assert a.grants.take_freed() == [5]
    assert a.grants.take_freed() == []


def test_swap(hv: FakeHv) -> None:
    a = FakeDomain(hv, 1)
    a.grant_v1(8, 2, 5)
    a.grant_v1(9, 3, 6, GTF_permit_access | GTF_readonly)
    assert a.grants.swap(8, 9) == S.okay
    assert a.grants.read_header(8) == (GTF_permit_access | GTF_readonly, 3)
    assert a.grants.swap(8, 8) == S.okay
    assert a.grants.swap(8, 512) == S.bad_gntref
    acq = a.grants.acquire(9, 2, True, for_map=False)
    assert a.grants.swap(8, 9) == S.eagain
    a.grants.release(acq)


def test_version_switch(hv: FakeHv) -> None:
    a = FakeDomain(hv, 1)
    t = a.grants
    t.seed(0, 0, 3)
    a.grant_v1(8, 2, 5)
    pin = t.acquire(8, 2, True, for_map=False)
    assert t.set_version(2) == (-XenErrno.EBUSY, 1)
    t.release(pin)
    cons = t.acquire(0, 0, False, for_map=True)  # a backend keeps entry 0 mapped
    assert t.set_version(3) == (-XenErrno.EINVAL, 1)
    assert t.set_version(1) == (0, 1)
    assert t.set_version(2) == (0, 2)
    assert (t.nr_entries, t.nr_status_frames) == (256, 1)
    assert t.read_header(0) == (GTF_permit_access, 0)  # carried over, bits moved to status
    assert t.status_bits(0) == GTF_reading | GTF_writing
    assert t.read_header(8) == (0, 0)  # the rest is cleared
    t.release(cons)
    assert t.status_bits(0) == 0
    assert t.ensure_status_frame(0) and not t.ensure_status_frame(2)
    assert t.ensure_status_frame(1) and t.nr_frames == 16 and t.nr_status_frames == 2
    assert t.set_version(1) == (0, 1)
    assert a.unmapped_heap == [STATUS_BASE, STATUS_BASE + 1]
    assert t.nr_status_frames == 0 and t.ensure_status_frame(0) is False
    pool, off = a.memory.pool, t.header_offset(0)
    assert struct.unpack_from("<HHI", pool, off) == (GTF_permit_access, 0, 3)


def test_version_switch_without_a_slot_to_unmap_status_frames(hv: FakeHv) -> None:
    """Back to v1 needs the status frames out of the p2m; when every KVM slot is in
    use that edit is refused (-ENOMEM, Xen's p2m error) and nothing changes."""
    a = FakeDomain(hv, 1)
    t = a.grants
    assert t.set_version(2) == (0, 2)
    a.slots_full = True
    assert t.set_version(1) == (-XenErrno.ENOMEM, 2)
    assert t.nr_status_frames == 1 and a.unmapped_heap == []
    assert any("no KVM memory slot" in m for m in a.logs)
    a.slots_full = False
    assert t.set_version(1) == (0, 1)
    assert a.unmapped_heap == [STATUS_BASE]


def test_v2_entry_that_v1_cannot_hold(hv: FakeHv) -> None:
    a = FakeDomain(hv, 1)
    t = a.grants
    assert t.set_version(2) == (0, 2)
    a.grant_v2(3, 2, GTF_permit_access, word8=1 << 33)
    assert t.set_version(1) == (-XenErrno.ERANGE, 2)
    a.grant_v2(3, 2, GTF_transitive)
    assert t.set_version(1) == (-XenErrno.ERANGE, 2)


def test_v2_sub_page_and_transitive(hv: FakeHv) -> None:
    a, b = FakeDomain(hv, 1), FakeDomain(hv, 2)
    c = FakeDomain(hv, 3)
    for d in (a, c):
        assert d.grants.set_version(2) == (0, 2)
    a.grant_v2(8, 2, GTF_permit_access | GTF_sub_page | GTF_readonly, word4=(64 << 16) | 100,
               word8=7)
    acq = a.grants.acquire(8, 2, True, for_map=False)
    assert (acq.pool_page, acq.start, acq.length) == (7, 100, 64)
    assert a.grants.status_bits(8) == GTF_reading and a.flags(8) & GTF_reading == 0
    a.grants.release(acq)
    with pytest.raises(GrantError):
        a.grants.acquire(8, 2, True, for_map=True)  # sub-page: copy only
    assert a.grants.status_bits(8) == 0

    # c grants its page to a; a grants it on to b transitively.
    c.grant_v2(4, 1, GTF_permit_access, word8=9)
    a.grant_v2(9, 2, GTF_transitive, word4=3, word8=4)
    acq = a.grants.acquire(9, 2, True, for_map=False)
    assert acq.memory is c.memory and acq.pool_page == 9 and acq.length == PAGE_SIZE
    assert a.grants.status_bits(9) == GTF_reading and c.grants.status_bits(4) == GTF_reading
    a.grants.release(acq)
    assert a.grants.status_bits(9) == 0 and c.grants.status_bits(4) == 0
    assert a.grants.active == {} and c.grants.active == {}
    with pytest.raises(GrantError):
        a.grants.acquire(9, 2, True, for_map=True)  # never mapped
    # The final grant must be for the middle domain, and may not be transitive itself.
    c.grant_v2(4, 2, GTF_permit_access, word8=9)
    with pytest.raises(GrantError):
        a.grants.acquire(9, 2, True, for_map=False)
    assert a.grants.status_bits(9) == 0
    c.grant_v2(4, 1, GTF_transitive, word4=1, word8=8)
    with pytest.raises(GrantError):
        a.grants.acquire(9, 2, True, for_map=False)
    a.grant_v2(10, 2, GTF_transitive, word4=1, word8=8)  # to itself
    with pytest.raises(GrantError, match="itself"):
        a.grants.acquire(10, 2, True, for_map=False)
    assert not b.grants.active


def test_grow_and_setup(hv: FakeHv) -> None:
    a = FakeDomain(hv, 1)
    t = a.grants
    assert t.setup(4) and t.nr_frames == 4
    assert t.setup(2) and t.nr_frames == 4  # never shrinks
    assert not t.setup(MAX_FRAMES + 1)
    assert t.ensure_frame(MAX_FRAMES - 1) and t.nr_frames == MAX_FRAMES
    assert not t.ensure_frame(MAX_FRAMES)


def test_service_mapping_api(hv: FakeHv) -> None:
    a = FakeDomain(hv, 1)
    a.grant_v1(10, 0, 5)
    a.memory.pool_view(5)[:4] = b"ring"
    m = map_grant(a, 10, 0, readonly=False)  # type: ignore[arg-type]
    assert (m.pool_page, m.ref, m.readonly) == (5, 10, False)
    assert bytes(m.view()[:4]) == b"ring"
    assert a.flags(10) == GTF_permit_access | GTF_reading | GTF_writing
    ro = map_grant(a, 10, 0, readonly=True)  # type: ignore[arg-type]
    assert ro.handle != m.handle
    unmap_grant(m)
    assert a.flags(10) == GTF_permit_access | GTF_reading
    unmap_grant(ro)
    unmap_grant(ro)  # idempotent
    assert a.flags(10) == GTF_permit_access
    with pytest.raises(ValueError):
        ro.view()
    with pytest.raises(GrantError) as e:
        map_grant(a, 10, 7, readonly=True)  # type: ignore[arg-type]
    assert e.value.status == S.general_error
    a.grant_v1(11, 0, 5, GTF_permit_access | GTF_PAT)
    with pytest.raises(GrantError) as e:
        map_grant(a, 11, 0, readonly=True)  # type: ignore[arg-type]
    assert e.value.status == S.general_error
    assert a.flags(11) == GTF_permit_access | GTF_PAT  # the pin was undone


def test_teardown_drops_service_mappings_and_refuses_new_pins(hv: FakeHv) -> None:
    a = FakeDomain(hv, 1)
    a.grant_v1(10, 0, 5)
    m = map_grant(a, 10, 0, readonly=True)  # type: ignore[arg-type]
    a.grants.teardown()
    assert m.released
    unmap_grant(m)  # a no-op now
    with pytest.raises(GrantError) as e:
        a.grants.acquire(10, 0, True, for_map=False)
    assert e.value.status == S.bad_domain


def test_teardown_waits_for_copies_in_flight(hv: FakeHv) -> None:
    a = FakeDomain(hv, 1)
    a.grant_v1(8, 2, 5)
    acq = a.grants.acquire(8, 2, True, for_map=False)
    done = threading.Event()
    th = threading.Thread(target=lambda: (a.grants.teardown(), done.set()))
    th.start()
    assert not done.wait(0.1)
    a.grants.release(acq)
    assert done.wait(5)
    th.join()


def test_teardown_unmaps_foreign_frames_from_mappers(hv: FakeHv) -> None:
    a, b = FakeDomain(hv, 1), FakeDomain(hv, 2)
    c, d = FakeDomain(hv, 3), FakeDomain(hv, 4)
    c.grant_v1(1, 4, 7)
    assert gt.guest_map(d, c, 1, 0x200 << 12, GNTMAP_host_map) == (GnttabStatus.okay, 0)
    a.grant_v1(8, 2, 5)
    assert gt.guest_map(b, a, 8, 0x100 << 12, GNTMAP_host_map) == (GnttabStatus.okay, 0)
    assert b.memory.lookup(Gfn(0x100)) == (5, PageKind.FOREIGN)
    assert a.grants.guest_mappers == {2}  # teardown visits b, not every domain
    a.grants.teardown()
    assert b.memory.lookup(Gfn(0x100)) is None
    assert b.grants.maptrack == {}
    assert b.grants.alloc_handle() == 0  # the handle was freed
    assert d.memory.lookup(Gfn(0x200)) == (7, PageKind.FOREIGN)  # another granter's page
