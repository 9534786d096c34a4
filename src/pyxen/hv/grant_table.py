"""Grant tables: one per domain, the state behind grant_table_op (§7).

Design
------
A domain's *shared* grant frames are hypervisor heap pages of its pool:
frame ``i`` is heap page ``GRANT_FRAME_HEAP_BASE + i`` (``max_grant_frames``
of them, 64 by default).  Version 2 *status* frames follow them, heap page
``domain.grant_status_heap_base + i`` (``ceil(max_grant_frames / 8)``).  The
guest maps them with ``XENMEM_add_to_physmap`` (``XENMAPSPACE_grant_table``,
``idx | XENMAPIDX_grant_table_status`` for a status frame); the guest writes
entries, the hypervisor reads them from the pool and changes only the
``GTF_reading``/``GTF_writing`` bits, with locked instructions
(``hv.atomic``), as Xen does:

- v1: the bits live in the entry's ``flags``.  They are set with a 32-bit
  compare-and-exchange over ``flags`` + ``domid`` (retried at most 5 times,
  then ``GNTST_general_error``), so an entry the guest revokes or re-targets
  meanwhile is never pinned; they are cleared with a locked AND.  A v1 guest
  revokes with its own compare-and-exchange, which fails while either bit
  is set: a pinned grant cannot be revoked.
- v2: the bits live in the status frames (one u16 per entry): set them,
  then re-read the header and back off if it changed (Xen's protocol).

``GrantTable`` keeps, per domain: ``version`` (1; 2 may be chosen), the
number of frames in use ``nr_frames`` (1 at creation, grows with
setup_table, add_to_physmap of a frame, or a v2 status frame; never
shrinks), ``max_frames``, ``nr_status_frames`` (v2: ``ceil(nr_frames / 8)``),
and the *active entries*: for each ref in use, how many users read
(``pin_r``) and write (``pin_w``) it, the grantee that pinned it and the
pool page (or sub-page range, or transitive target) it resolved to when
first pinned.  Users are copies (for the length of one copy element),
grant mappings into another domain's p2m (``GNTTABOP_map_grant_ref``), and
service-process mappings (``map_grant`` below).

The same object holds the domain's *maptrack*: the grant mappings it made
into its own p2m as a mapper (handle -> record).

Invariants
----------
- A ref has an active entry iff ``pin_r + pin_w > 0``; while it has one,
  its ``GTF_reading`` bit is set, and ``GTF_writing`` iff ``pin_w > 0``
  (both in the current version's place).
- An active entry's pool page is counted in ``page_pins`` of the table of
  the domain owning the page.  A RAM page the owner frees while pinned is
  not reused: it waits in ``deferred`` until its last pin goes (Xen keeps
  a page referenced by a grant until the grant is released), and is then
  returned to the pool by the owner at its next memory operation.
- The hypervisor's own long-lived uses of a guest page (the FIFO event
  channel control blocks and event-array pages, ``hv.event_fifo``) count in
  ``page_pins`` too, through ``hold_page``/``release_page``: Xen's
  get_page/put_page on a page it maps for itself.  The guest may balloon
  such a page out or map something over its frame; the page stays the
  domain's (unmapped, still counted) until released.
- A domain's grant-mapped frames (``PageKind.FOREIGN`` extents) point at
  pages pinned in their granters' tables: for each page, the mapper has as
  many such frames as maptrack records (each record holds one pin).  As in
  Xen, unmap_grant_ref checks that the frame at ``host_addr`` maps the same
  page as the handle, not that it is the handle's own frame.
- Version switches happen with no active entry beyond the first 8
  (``GNTTAB_NR_RESERVED_ENTRIES``, which the toolstack's backends may keep
  mapped); the first 8 entries are carried over, the rest is cleared.

Mapping for service processes
-----------------------------
``map_grant(granter, ref, grantee_domid, readonly) -> GrantMapping`` checks
the entry (type permit_access, ``domid == grantee_domid``, not
``GTF_readonly`` for a writable mapping, no sub-page, no transitive, no
``GTF_PAT``/``GTF_PCD``/``GTF_PWT``), sets ``GTF_reading`` (and
``GTF_writing`` for a writable mapping) and pins it; it raises
``GrantError`` (with a ``GNTST_*`` status) otherwise.  The result names
the granter's pool page (``mapping.pool_page``); ``mapping.view()`` is the
page in this process; ``mapping.handle`` is unique within the granter's
table (``granter.grants.service_maps[handle]`` finds the mapping again).
``unmap_grant(mapping)`` drops the pin; the bits clear when the last user
of the ref goes.  It is idempotent.  Both functions may be called from any
thread that holds no domain or grant-table lock; each takes the granter's
table lock only, for microseconds.  When the granter is destroyed its
service mappings are dropped (``mapping.released`` becomes True).

Another process never gets the granter's memory file: the control socket
gives it the page alone, moved into a file of its own by the table's
``exports`` (``hv.page_export``: exported while mapped, sealed read-only
for a read-only mapping, moved back -- revoking the process's access --
after ``unmap_grant``'s caller releases the export).

Locking
-------
``GrantTable.lock`` (a plain Lock) guards the table's state and the entry
bits the hypervisor owns.  Order: a domain lock (``Domain.lock``, the p2m
lock) may be held while taking a grant-table lock, never the reverse; at
most one grant-table lock is held at a time (a copy acquires its source
and its destination one after the other; a transitive grant is resolved
after the first table's lock is dropped, as Xen does).  The data of a copy
moves with no lock held: the pins keep the entries, and ``_transient``
(acquisitions held across an operation) keeps a granter's pool alive:
``teardown`` waits for it to drop to zero.

Destruction (``teardown``, from ``Domain.destroy`` after its vCPUs have
stopped): the table is marked dead (new acquisitions fail with
``GNTST_bad_domain``), in-flight copies finish, then the domain's pages are
unmapped from every other domain's p2m (so no KVM slot points into a pool
about to be unmapped), its service mappings are dropped, and the grants it
had mapped from others are released.  Xen instead keeps a dying domain's
pages alive until every mapper unmaps them; pyxen revokes them (the
mapper's frame becomes a hole).
"""

from __future__ import annotations

import heapq
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyxen.abi.errno import XenErrno
from pyxen.abi.grant_table import (
    GNTTAB_NR_RESERVED_ENTRIES,
    GTF_PAT,
    GTF_PCD,
    GTF_PWT,
    GNTMAP_host_map,
    GNTMAP_readonly,
    GnttabStatus,
    GTF_permit_access,
    GTF_reading,
    GTF_readonly,
    GTF_sub_page,
    GTF_transitive,
    GTF_type_mask,
    GTF_writing,
)
from pyxen.hv import atomic
from pyxen.hv.page_export import PageExports
from pyxen.kvm import KvmError
from pyxen.memory import PAGE_SIZE, Gfn, PageKind, SlotsExhausted

if TYPE_CHECKING:
    from pyxen.hv.domain import Domain
    from pyxen.memory import GuestMemory

INITIAL_NR_FRAMES = 1  # Xen's INITIAL_NR_GRANT_FRAMES
V1_PER_FRAME = PAGE_SIZE // 8
V2_PER_FRAME = PAGE_SIZE // 16
STATUS_PER_FRAME = PAGE_SIZE // 2
V1_ENTRY = 8
V2_ENTRY = 16
# Xen keeps four 8-bit pin counters per entry and refuses a new pin once
# one of them has reached 0x80 ("risk of counter overflow").
MAX_PINS = 0x80
# Xen retries the compare-and-exchange on a v1 entry 5 times, then fails.
CMPXCHG_TRIES = 5
# Grant mappings a domain may hold in its p2m: Xen's default maptrack is
# 1024 frames of 256 handles; each mapping here is a KVM memory slot (plus
# one for the split of a RAM extent), so the host's slot count bounds it.
MAX_MAPTRACK = 1024 * 256
SLOT_RESERVE = 256
CACHE_FLAGS = GTF_PAT | GTF_PCD | GTF_PWT

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HDR = struct.Struct("<HH")
_V1 = struct.Struct("<HHI")

S = GnttabStatus


def status_frames_for(grant_frames: int) -> int:
    """v2 status frames needed for ``grant_frames`` shared frames (Xen: grant_to_status_frames)."""
    return (grant_frames * V2_PER_FRAME + STATUS_PER_FRAME - 1) // STATUS_PER_FRAME


def grant_frames_for_status(status_frames: int) -> int:
    """Shared frames whose entries ``status_frames`` status frames cover."""
    return status_frames * STATUS_PER_FRAME // V2_PER_FRAME


class GrantError(Exception):
    """A grant operation failed with a ``GNTST_*`` status."""

    def __init__(self, status: int, why: str = "") -> None:
        super().__init__(f"{S(status).name}{': ' + why if why else ''}")
        self.status = status


@dataclass(eq=False)
class ActiveEntry:
    domid: int  # the grantee that pinned it
    pool_page: int = -1  # -1: transitive (the page is in another table)
    start: int = 0
    length: int = PAGE_SIZE
    is_sub_page: bool = False
    trans: tuple[GrantTable, int] | None = None
    pin_r: int = 0
    pin_w: int = 0

    @property
    def pinned(self) -> bool:
        return bool(self.pin_r or self.pin_w)


@dataclass(eq=False)
class Acquired:
    """One use of a grant (or of a frame by number): release it exactly once."""

    table: GrantTable
    ref: int  # -1: a frame named by number (gmfn), no entry
    readonly: bool
    memory: GuestMemory  # the pool holding the page (a transitive grant's final one)
    pool_page: int
    start: int
    length: int
    cache_flags: int = 0
    transient: bool = True
    inner: Acquired | None = None
    released: bool = False

    @property
    def host_addr(self) -> int:
        return self.memory.host_base + self.pool_page * PAGE_SIZE


@dataclass(eq=False)
class GrantMapping:
    """A granted page mapped for a service process (see the module docstring)."""

    handle: int
    granter: Domain
    ref: int
    grantee: int
    readonly: bool
    pool_page: int
    _acq: Acquired = field(repr=False)
    released: bool = False

    def view(self) -> memoryview:
        """The granted page in this process (valid until ``unmap_grant``).

        Release the view before unmapping: a view still held when the
        granter is destroyed keeps its pool from being closed."""
        if self.released:
            raise ValueError("the grant mapping was released")
        return self.granter.memory.pool_view(self.pool_page)


@dataclass(eq=False)
class GuestMap:
    """A grant mapped into a mapper domain's p2m (a maptrack record)."""

    acq: Acquired
    gfn: int
    host_addr: int
    readonly: bool


class GrantTable:
    def __init__(self, domain: Domain, max_frames: int, status_heap_base: int,
                 frame_heap_base: int, maptrack_limit: int = MAX_MAPTRACK,
                 readonly_slots: bool = True) -> None:
        self.domain = domain
        self.lock = threading.Lock()
        self._idle = threading.Condition(self.lock)
        self.version = 1
        self.nr_frames = INITIAL_NR_FRAMES
        self.max_frames = max_frames
        self.nr_status_frames = 0
        self.max_status_frames = status_frames_for(max_frames)
        self.frame_heap_base = frame_heap_base
        self.status_heap_base = status_heap_base
        self.active: dict[int, ActiveEntry] = {}
        self.page_pins: dict[int, int] = {}
        self.deferred: set[int] = set()  # RAM pages freed by the guest while pinned
        self.to_free: list[int] = []  # ... whose last pin has gone
        self._transient = 0
        self.dead = False
        self.service_maps: dict[int, GrantMapping] = {}
        self._next_service_handle = 1
        self.exports = PageExports(domain)  # pages given to service processes as files
        # Every domain that has mapped one of this domain's grants into its p2m (a
        # superset of those still holding one: ids are never removed).  Added while
        # the acquisition is transient, so teardown, which waits for those, sees
        # them all; it unmaps this domain's memory from them only, not from every
        # domain (with 1000 domains that walk made each destroy ~10 ms).
        self.guest_mappers: set[int] = set()
        # As a mapper (guarded by the domain's lock, the p2m lock).
        self.maptrack: dict[int, GuestMap] = {}
        self.maptrack_limit = maptrack_limit
        self._free_handles: list[int] = []
        self._next_handle = 0
        self.readonly_slots = readonly_slots

    # -- layout ------------------------------------------------------------------

    @property
    def nr_entries(self) -> int:
        per = V1_PER_FRAME if self.version == 1 else V2_PER_FRAME
        return self.nr_frames * per

    @property
    def _mem(self) -> GuestMemory:
        return self.domain.memory

    def _frame_offset(self, frame: int) -> int:
        return self._mem.heap_pool_page(self.frame_heap_base + frame) * PAGE_SIZE

    def _status_frame_offset(self, frame: int) -> int:
        return self._mem.heap_pool_page(self.status_heap_base + frame) * PAGE_SIZE

    def header_offset(self, ref: int) -> int:
        """Pool offset of entry ``ref``'s {flags, domid} in the current version."""
        if self.version == 1:
            return self._frame_offset(ref // V1_PER_FRAME) + (ref % V1_PER_FRAME) * V1_ENTRY
        return self._frame_offset(ref // V2_PER_FRAME) + (ref % V2_PER_FRAME) * V2_ENTRY

    def _flags_offset(self, ref: int) -> int:
        """Pool offset of the u16 holding GTF_reading/GTF_writing for ``ref``."""
        if self.version == 1:
            return self.header_offset(ref)
        return (self._status_frame_offset(ref // STATUS_PER_FRAME)
                + (ref % STATUS_PER_FRAME) * 2)

    def read_header(self, ref: int) -> tuple[int, int]:
        """(flags, domid) of ``ref`` as the guest last wrote them."""
        flags, domid = _HDR.unpack_from(self._mem.pool, self.header_offset(ref))
        return int(flags), int(domid)

    def status_bits(self, ref: int) -> int:
        """The hypervisor-owned bits (GTF_reading | GTF_writing) of ``ref``."""
        value: int = _U16.unpack_from(self._mem.pool, self._flags_offset(ref))[0]
        return value & (GTF_reading | GTF_writing)

    def _host(self, offset: int) -> int:
        return self._mem.host_base + offset

    def _clear_bits(self, ref: int, bits: int) -> None:
        if bits:
            atomic.fetch_and16(self._host(self._flags_offset(ref)), 0xFFFF & ~bits)

    # -- size and version ------------------------------------------------------------

    def grow(self, frames: int) -> bool:
        """Make ``frames`` shared frames (and their v2 status frames) exist; lock held."""
        if frames > self.max_frames:
            return False
        if frames > self.nr_frames:
            self.nr_frames = frames
        if self.version == 2:
            self._populate_status(status_frames_for(self.nr_frames))
        return True

    def _populate_status(self, count: int) -> None:
        for i in range(self.nr_status_frames, count):
            off = self._status_frame_offset(i)
            self._mem.pool[off : off + PAGE_SIZE] = bytes(PAGE_SIZE)
        self.nr_status_frames = max(self.nr_status_frames, count)

    def ensure_frame(self, idx: int) -> bool:
        """XENMAPSPACE_grant_table: frame ``idx`` exists (the table grows to it)."""
        with self.lock:
            return 0 <= idx < self.max_frames and self.grow(idx + 1)

    def ensure_status_frame(self, idx: int) -> bool:
        """XENMAPSPACE_grant_table | status: v2 only; the table grows to cover it."""
        with self.lock:
            if self.version != 2 or not 0 <= idx < self.max_status_frames:
                return False
            if idx >= self.nr_status_frames:
                # Xen grows to the shared frames whose entries the status frame covers.
                self.grow(grant_frames_for_status(idx + 1))
            return idx < self.nr_status_frames

    def setup(self, nr_frames: int) -> bool:
        """GNTTABOP_setup_table's growth; False: beyond max_grant_frames."""
        with self.lock:
            return self.grow(nr_frames)

    def set_version(self, version: int) -> tuple[int, int]:
        """GNTTABOP_set_version: (0 or -errno, the version in effect)."""
        if version not in (1, 2):
            return -XenErrno.EINVAL, self.version
        if version == self.version:
            return 0, self.version
        d = self.domain
        with d.lock, self.lock:
            for ref, act in self.active.items():
                if ref >= GNTTAB_NR_RESERVED_ENTRIES and act.pinned:
                    d.log_once("gnttab-version-busy",
                               f"grant table version change refused: ref {ref} in use")
                    return -XenErrno.EBUSY, self.version
            saved = self._reserved_as_v1()
            if saved is None:
                return -XenErrno.ERANGE, self.version
            if version == 2:
                self._populate_status(status_frames_for(self.nr_frames))
            else:
                try:
                    d.unmap_heap_pages([self.status_heap_base + i
                                        for i in range(self.nr_status_frames)])
                except SlotsExhausted:
                    # Xen: removing a status frame from the p2m failed (it
                    # also crashes the domain); here nothing has changed.
                    d.log_once("gnttab-status-slots", "grant table version change "
                               "refused: no KVM memory slot to unmap the status frames")
                    return -XenErrno.ENOMEM, self.version
                self.nr_status_frames = 0
            for i in range(self.nr_frames):
                off = self._frame_offset(i)
                self._mem.pool[off : off + PAGE_SIZE] = bytes(PAGE_SIZE)
            self.version = version
            self._restore_reserved(saved)
            return 0, self.version

    def _reserved_as_v1(self) -> list[tuple[int, int, int]] | None:
        """The first 8 entries as (flags incl. status bits, domid, frame); None: not v1-able."""
        out = []
        pool = self._mem.pool
        for ref in range(GNTTAB_NR_RESERVED_ENTRIES):
            off = self.header_offset(ref)
            if self.version == 1:
                flags, domid, frame = _V1.unpack_from(pool, off)
                out.append((int(flags), int(domid), int(frame)))
                continue
            flags, domid = _HDR.unpack_from(pool, off)
            frame = int(_U64.unpack_from(pool, off + 8)[0])
            kind = flags & GTF_type_mask
            if kind == GTF_transitive or (kind == GTF_permit_access and frame >> 32):
                return None  # Xen: -ERANGE, "non-representable entries"
            if kind == GTF_permit_access:
                out.append((int(flags) | self.status_bits(ref), int(domid), frame))
            else:  # invalid, or a type v1 cannot carry: dropped, as Xen does
                out.append((0, 0, 0))
        return out

    def _restore_reserved(self, saved: list[tuple[int, int, int]]) -> None:
        pool = self._mem.pool
        for ref, (flags, domid, frame) in enumerate(saved):
            off = self.header_offset(ref)
            if self.version == 1:
                _V1.pack_into(pool, off, flags, domid, frame)
            else:
                _HDR.pack_into(pool, off, flags & ~(GTF_reading | GTF_writing), domid)
                _U64.pack_into(pool, off + 8, frame)
                _U16.pack_into(pool, self._flags_offset(ref), flags & (GTF_reading | GTF_writing))

    def seed(self, ref: int, domid: int, gfn: int) -> None:
        """Write a permit_access entry (the builder's reserved console/xenstore grants)."""
        with self.lock:
            off = self.header_offset(ref)
            if self.version == 1:
                _V1.pack_into(self._mem.pool, off, GTF_permit_access, domid, gfn)
            else:
                _HDR.pack_into(self._mem.pool, off, GTF_permit_access, domid)
                _U64.pack_into(self._mem.pool, off + 8, gfn)

    def swap(self, ref_a: int, ref_b: int) -> int:
        """GNTTABOP_swap_grant_ref: swap two entries not in use; a GNTST_* status."""
        with self.lock:
            n = self.nr_entries
            if not 0 <= ref_a < n or not 0 <= ref_b < n:
                return S.bad_gntref
            if ref_a == ref_b:
                return S.okay
            for ref in (ref_a, ref_b):
                act = self.active.get(ref)
                if act is not None and act.pinned:
                    return S.eagain
            pool = self._mem.pool
            size = V1_ENTRY if self.version == 1 else V2_ENTRY
            oa, ob = self.header_offset(ref_a), self.header_offset(ref_b)
            a, b = bytes(pool[oa : oa + size]), bytes(pool[ob : ob + size])
            pool[oa : oa + size], pool[ob : ob + size] = b, a
            if self.version == 2:
                sa, sb = self._flags_offset(ref_a), self._flags_offset(ref_b)
                a, b = bytes(pool[sa : sa + 2]), bytes(pool[sb : sb + 2])
                pool[sa : sa + 2], pool[sb : sb + 2] = b, a
            return S.okay

    # -- acquiring grants ------------------------------------------------------------

    def acquire(self, ref: int, grantee: int, readonly: bool, *, for_map: bool,
                allow_transitive: bool = True) -> Acquired:
        """Pin ``ref`` for one use by ``grantee``; raises GrantError with Xen's status."""
        with self.lock:
            if self.dead:
                raise GrantError(S.bad_domain, "domain is being destroyed")
            if not 0 <= ref < self.nr_entries:
                raise GrantError(S.bad_gntref, f"bad ref {ref:#x}")
            act = self.active.get(ref)
            pinned = act is not None and act.pinned
            if act is not None and pinned and (
                act.domid != grantee or act.pin_r >= MAX_PINS or act.pin_w >= MAX_PINS
                or (for_map and act.is_sub_page)
            ):
                raise GrantError(S.general_error, "pinned by another domain, or too many pins")
            if not pinned or (not readonly and act is not None and act.pin_w == 0):
                self._set_status(ref, grantee, readonly, for_map, pinned)
                if act is None or not pinned:
                    try:
                        act = self._resolve(ref, grantee, for_map, allow_transitive)
                    except GrantError:
                        self._undo_status(ref, readonly, None)
                        raise
                    self.active[ref] = act
                    if act.pool_page >= 0:
                        self._pin_page(act.pool_page)
            assert act is not None
            if readonly:
                act.pin_r += 1
            else:
                act.pin_w += 1
            self._transient += 1
            flags = _U16.unpack_from(self._mem.pool, self.header_offset(ref))[0]
            acq = Acquired(self, ref, readonly, self._mem, act.pool_page, act.start,
                           act.length, cache_flags=int(flags) & CACHE_FLAGS)
            trans = act.trans
        if trans is None:
            return acq
        # A transitive grant: the final one must grant access to this domain.
        td, tref = trans
        try:
            inner = td.acquire(tref, self.domain.domid, readonly, for_map=False,
                               allow_transitive=False)
        except GrantError:
            self.release(acq)
            raise
        acq.inner = inner
        acq.memory, acq.pool_page = inner.memory, inner.pool_page
        with self.lock:
            act = self.active.get(ref)
            if act is not None and act.pool_page < 0 and act.length == -1:
                act.start, act.length = inner.start, inner.length
            acq.start, acq.length = inner.start, inner.length
        return acq

    def _set_status(self, ref: int, grantee: int, readonly: bool, for_map: bool,
                    pinned: bool) -> None:
        mask = GTF_type_mask | (GTF_sub_page if for_map else 0)
        want = GTF_reading if readonly else GTF_reading | GTF_writing
        hdr = self.header_offset(ref)
        pool = self._mem.pool
        if self.version == 1:
            word = int(_U32.unpack_from(pool, hdr)[0])
            for _ in range(CMPXCHG_TRIES):
                flags, domid = word & 0xFFFF, word >> 16
                if not pinned and ((flags & mask) != GTF_permit_access or domid != grantee):
                    raise GrantError(S.general_error,
                                     f"bad flags {flags:#x} or domid {domid} for d{grantee}")
                if not readonly and flags & GTF_readonly:
                    raise GrantError(S.general_error, "write access to a read-only grant")
                new = (word & 0xFFFF0000) | flags | want
                found = int(atomic.cmpxchg32(self._host(hdr), word, new))
                if found == word:
                    return
                word = found
            raise GrantError(S.general_error, "grant entry unstable")
        flags, domid = _HDR.unpack_from(pool, hdr)
        kinds = (GTF_permit_access, GTF_transitive)
        if not pinned and ((flags & mask) not in kinds or domid != grantee):
            raise GrantError(S.general_error,
                             f"bad flags {flags:#x} or domid {domid} for d{grantee}")
        if not readonly and flags & GTF_readonly:
            raise GrantError(S.general_error, "write access to a read-only grant")
        atomic.fetch_or16(self._host(self._flags_offset(ref)), want)
        flags, domid = _HDR.unpack_from(pool, hdr)
        if ((not pinned and (flags & mask) not in kinds) or domid != grantee
                or (not readonly and flags & GTF_readonly)):
            self._undo_status(ref, readonly, self.active.get(ref))
            raise GrantError(S.general_error, "grant entry changed while being pinned")

    def _undo_status(self, ref: int, readonly: bool, act: ActiveEntry | None) -> None:
        """Clear what a failed pin set, keeping the bits other users hold."""
        bits = 0
        if not readonly and (act is None or act.pin_w == 0):
            bits |= GTF_writing
        if act is None or not act.pinned:
            bits |= GTF_reading
        self._clear_bits(ref, bits)

    def _resolve(self, ref: int, grantee: int, for_map: bool,
                 allow_transitive: bool) -> ActiveEntry:
        """What a newly pinned entry grants: its page (or sub-page, or transitive target)."""
        pool = self._mem.pool
        hdr = self.header_offset(ref)
        if self.version == 1:
            gfn = int(_U32.unpack_from(pool, hdr + 4)[0])
            return ActiveEntry(grantee, self._frame_page(gfn))
        flags = int(_U16.unpack_from(pool, hdr)[0])
        if flags & GTF_type_mask == GTF_transitive:
            if for_map:
                # Xen 4.12 would map the u64 at offset 8 of a transitive entry;
                # pyxen refuses to map a transitive grant instead.
                raise GrantError(S.general_error, "a transitive grant cannot be mapped")
            if not allow_transitive:
                raise GrantError(S.general_error, "transitive grant of a transitive grant")
            trans_domid = int(_U16.unpack_from(pool, hdr + 4)[0])
            trans_ref = int(_U32.unpack_from(pool, hdr + 8)[0])
            if trans_domid == self.domain.domid:
                raise GrantError(S.general_error, "transitive grant to itself")
            td = self.domain.hv.domains.get(trans_domid)
            if td is None:
                raise GrantError(S.general_error, f"transitive grant to absent d{trans_domid}")
            return ActiveEntry(grantee, -1, 0, -1, True, (td.grants, trans_ref))
        gfn = int(_U64.unpack_from(pool, hdr + 8)[0])
        if flags & GTF_sub_page:
            off, length = _HDR.unpack_from(pool, hdr + 4)
            return ActiveEntry(grantee, self._frame_page(gfn), int(off), int(length), True)
        return ActiveEntry(grantee, self._frame_page(gfn))

    def _frame_page(self, gfn: int) -> int:
        """Pool page of the domain's own frame ``gfn`` (Xen: get_paged_frame)."""
        found = self._mem.lookup(Gfn(gfn))
        if found is None or found[1] is PageKind.FOREIGN:
            raise GrantError(S.bad_page, f"frame {gfn:#x} is not the domain's memory")
        return found[0]

    def acquire_frame(self, gfn: int, readonly: bool) -> Acquired:
        """A copy endpoint named by frame number (DOMID_SELF only)."""
        with self.lock:
            if self.dead:
                raise GrantError(S.bad_domain, "domain is being destroyed")
            page = self._frame_page(gfn)
            self._pin_page(page)
            self._transient += 1
            return Acquired(self, -1, readonly, self._mem, page, 0, PAGE_SIZE)

    def grantees_of(self, page: int) -> set[int]:
        """Domains holding pool page ``page`` through an active entry (lock held):
        every domain with a grant mapping of the page is one of them."""
        return {act.domid for act in self.active.values() if act.pool_page == page}

    def _pin_page(self, page: int) -> None:
        self.page_pins[page] = self.page_pins.get(page, 0) + 1

    def _unpin_page(self, page: int) -> None:
        left = self.page_pins[page] - 1
        if left:
            self.page_pins[page] = left
            return
        del self.page_pins[page]
        if page in self.deferred:
            self.deferred.discard(page)
            self.to_free.append(page)

    def release(self, acq: Acquired) -> None:
        """Give back one use (idempotent); clears GTF bits when the last user goes."""
        with self.lock:
            if acq.released:
                return
            acq.released = True
            if acq.transient:
                self._transient -= 1
                if self._transient == 0:
                    self._idle.notify_all()
            if not self.dead:
                if acq.ref < 0:
                    self._unpin_page(acq.pool_page)
                else:
                    self._unpin_ref(acq.ref, acq.readonly)
            inner = acq.inner
        if inner is not None:
            inner.table.release(inner)

    def _unpin_ref(self, ref: int, readonly: bool) -> None:
        act = self.active.get(ref)
        if act is None:
            return
        bits = 0
        if readonly:
            act.pin_r -= 1
        else:
            act.pin_w -= 1
            if act.pin_w == 0:
                bits |= GTF_writing
        if not act.pinned:
            bits |= GTF_reading
            del self.active[ref]
            if act.pool_page >= 0:
                self._unpin_page(act.pool_page)
        self._clear_bits(ref, bits)

    def make_lasting(self, acq: Acquired) -> None:
        """An acquisition becomes a mapping: teardown no longer waits for it."""
        tables = [acq]
        if acq.inner is not None:
            tables.append(acq.inner)
        for a in tables:
            with a.table.lock:
                if a.transient:
                    a.transient = False
                    a.table._transient -= 1
                    if a.table._transient == 0:
                        a.table._idle.notify_all()

    # -- the owner's memory ----------------------------------------------------------

    def hold_page(self, page: int) -> None:
        """The hypervisor keeps using pool page ``page`` of this domain (Xen's get_page).

        Until ``release_page``, freeing the page (decrease_reservation, a
        mapping over its frame) only unmaps it.  Callers hold the owner's
        domain lock, so the page cannot be freed between their p2m lookup
        and this pin."""
        with self.lock:
            self._pin_page(page)

    def release_page(self, page: int) -> None:
        """Drop one ``hold_page``; a page freed meanwhile goes at the next memory op."""
        with self.lock:
            self._unpin_page(page)

    def free_ram(self, page: int) -> bool:
        """The owner unmapped RAM page ``page``: True to free it now, False if pinned.

        Called with the owner's domain lock held."""
        with self.lock:
            if page in self.page_pins:
                self.deferred.add(page)
                return False
            return True

    def take_freed(self) -> list[int]:
        """Pages whose deferred free may happen now (owner's domain lock held)."""
        if not self.to_free:
            return []
        with self.lock:
            pages, self.to_free = self.to_free, []
            return pages

    # -- teardown --------------------------------------------------------------------

    def teardown(self) -> None:
        """The domain is being destroyed (its vCPUs have stopped): see the module docstring."""
        d = self.domain
        self.exports.close()  # (not under self.lock: a page move takes it)
        with self.lock:
            self.dead = True
            while self._transient:
                self._idle.wait()
            for mapping in self.service_maps.values():
                mapping.released = True
            self.service_maps.clear()
            self.active.clear()
        lo = d.memory.host_base
        hi = lo + d.memory.pool_pages * PAGE_SIZE
        for domid in list(self.guest_mappers):
            other = d.hv.domains.get(domid)
            if other is not None and other is not d:
                other.grants.drop_foreign(lo, hi)
        with d.lock:
            records = list(self.maptrack.values())
            self.maptrack.clear()
        for rec in records:
            rec.acq.table.release(rec.acq)

    def drop_foreign(self, lo: int, hi: int) -> None:
        """Unmap every frame of this (mapper) domain backed by host memory [lo, hi)."""
        d = self.domain
        with d.lock:
            if d.memory_closed:
                return
            for handle, rec in list(self.maptrack.items()):
                if lo <= rec.host_addr < hi:
                    del self.maptrack[handle]
                    self._free_handle(handle)
            with d.memory.edit(reserve=True) as p2m:  # removals only: never over budget
                for ext in d.memory.extents():
                    if ext.kind is PageKind.FOREIGN and lo <= ext.foreign_host < hi:
                        p2m.unmap(Gfn(ext.gfn))

    # -- maptrack (this domain as a mapper; domain lock held) --------------------------

    def alloc_handle(self) -> int | None:
        if self._free_handles:
            return heapq.heappop(self._free_handles)
        if self._next_handle >= self.maptrack_limit:
            return None
        self._next_handle += 1
        return self._next_handle - 1

    def _free_handle(self, handle: int) -> None:
        heapq.heappush(self._free_handles, handle)


# -- grant mappings into a guest's p2m (GNTTABOP_map_grant_ref / unmap_grant_ref) -----


def guest_map(mapper: Domain, granter: Domain, ref: int, host_addr: int,
              flags: int) -> tuple[int, int]:
    """Map ``granter``'s grant ``ref`` at guest-physical ``host_addr`` of ``mapper``.

    ``flags`` has passed the HVM checks (host_map, no device_map,
    application_map or contains_pte).  Returns (GNTST_* status, handle).
    """
    readonly = bool(flags & GNTMAP_readonly)
    mt = mapper.grants
    crash = ""
    with mapper.lock:
        handle = mt.alloc_handle()
        if handle is None:
            return S.no_device_space, 0
        try:
            acq = granter.grants.acquire(ref, mapper.domid, readonly, for_map=True)
        except GrantError as e:
            mt._free_handle(handle)
            return e.status, 0
        try:
            if acq.cache_flags or flags & ~GNTMAP_readonly != GNTMAP_host_map:
                raise GrantError(S.general_error, "flags or cache attributes not allowed")
            if readonly and not mt.readonly_slots:
                mapper.log_once("gnttab-ro", "host KVM lacks read-only memory slots: "
                                "read-only grant mappings fail with GNTST_general_error")
                raise GrantError(S.general_error, "no read-only slots")
            gfn = host_addr >> 12
            if gfn >= mapper.max_gfn:
                raise GrantError(S.general_error, "address beyond the physical address width")
            if not mapper.insert_foreign(gfn, acq.host_addr, acq.pool_page, readonly):
                # Xen crashes a domain that maps a grant over a grant mapping
                # ("shouldn't be unmapping grant/foreign maps this way").
                crash = f"GNTTABOP_map_grant_ref over the grant mapping at gfn {gfn:#x}"
                raise GrantError(S.general_error, "frame holds a grant mapping")
        except GrantError as e:
            acq.table.release(acq)
            mt._free_handle(handle)
            status = e.status
        except (KvmError, SlotsExhausted) as e:
            mapper.log_once("gnttab-slot", f"grant mapping failed: {e}")
            acq.table.release(acq)
            mt._free_handle(handle)
            status = S.general_error
        except Exception:
            acq.table.release(acq)
            mt._free_handle(handle)
            raise
        else:
            acq.table.guest_mappers.add(mapper.domid)  # (transitive grants are copy-only)
            mt.maptrack[handle] = GuestMap(acq, gfn, acq.host_addr, readonly)
            acq.table.make_lasting(acq)
            return S.okay, handle
    if crash:
        mapper.crash(crash)
    return status, 0


def guest_unmap(mapper: Domain, handle: int, host_addr: int, dev_bus_addr: int) -> int:
    """GNTTABOP_unmap_grant_ref of one handle: a GNTST_* status."""
    mt = mapper.grants
    with mapper.lock:
        rec = mt.maptrack.get(handle)
        if rec is None:
            return S.bad_handle
        if dev_bus_addr:
            return S.general_error  # pyxen reports dev_bus_addr 0: nothing else matches
        if not host_addr:
            return S.okay  # Xen: nothing to undo, and the handle stays
        gfn = host_addr >> 12
        ext = mapper.memory.extent_at(Gfn(gfn)) if gfn < mapper.max_gfn else None
        if ext is None or ext.kind is not PageKind.FOREIGN or ext.foreign_host != rec.host_addr:
            return S.general_error
        mapper.memory.unmap(Gfn(gfn))
        del mt.maptrack[handle]
        mt._free_handle(handle)
    rec.acq.table.release(rec.acq)
    return S.okay


# -- the service-process API ------------------------------------------------------------


def map_grant(granter: Domain, ref: int, grantee_domid: int, readonly: bool) -> GrantMapping:
    """Map ``granter``'s grant ``ref`` for a service acting as ``grantee_domid``.

    Raises GrantError (``.status`` is a GNTST_* value).  See the module docstring.
    """
    table = granter.grants
    acq = table.acquire(ref, grantee_domid, readonly, for_map=True)
    if acq.cache_flags:
        table.release(acq)
        raise GrantError(S.general_error, "grant has cache attributes (PAT/PCD/PWT)")
    with table.lock:
        if table.dead:
            mapping = None
        else:
            handle = table._next_service_handle
            table._next_service_handle += 1
            mapping = GrantMapping(handle, granter, ref, grantee_domid, readonly,
                                   acq.pool_page, acq)
            table.service_maps[handle] = mapping
    if mapping is None:
        table.release(acq)
        raise GrantError(S.bad_domain, "domain is being destroyed")
    table.make_lasting(acq)
    return mapping


def unmap_grant(mapping: GrantMapping) -> None:
    """Drop a ``map_grant`` mapping (idempotent; a no-op once the granter is gone)."""
    table = mapping.granter.grants
    with table.lock:
        if mapping.released:
            return
        mapping.released = True
        table.service_maps.pop(mapping.handle, None)
    table.release(mapping._acq)
