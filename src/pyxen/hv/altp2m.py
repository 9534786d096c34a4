"""Alternate p2m views and memory access rights of one domain (Xen's altp2m, mem_access).

Model.  The host p2m (memory/physmap.py) stays the one truth for the
hypervisor.  On top of it:

- ``host_access``: per-gfn access rights in the host p2m (Xen's
  p2m_set_mem_access on view 0, LibVMI's memory events); absent = rwx.
- ``views``: when altp2m is active, up to ``MAX_ALTP2M`` views; view 0
  always exists.  A view holds per-gfn entries: ``remap`` (the gfn whose
  frame the guest sees instead, HVMOP_altp2m_change_gfn) and ``access``.
  A gfn with no entry in a view shows the host mapping and host access, as
  Xen's lazily copied views do.  Xen 4.12's switch_p2m moves every vCPU,
  and KVM's memslots are per VM anyway: one view is ``current`` for the
  whole domain.

Realisation (``relayout``): the current view becomes ``GuestMemory``
slot overrides.  A remapped gfn gets a 4 KiB slot on the other frame.
Access rights become slot modes only while someone listens for memory
events (``listener``, set by pyxen.vmi): rwx normal, r-x (and rx2rw)
read-only, anything else no slot at all, since KVM has no write-only or
execute-only memory and no #VE (docs/design/vmi-feasibility.md).  Then
every access to such a page exits, and the listener answers the allowed
ones by emulating them (``emulate_mmio``) and the others by an event.
Without a listener Xen lifts a violated restriction to rwx and lets the
access through (p2m access_required off); pyxen leaves restricted pages
mapped, so the access goes through too but nothing sees it: the one
difference a guest can observe is that get_mem_access still returns what
was set where Xen returns rwx after the first violation.  ``pinned``
overrides, on top, are the listener's way to let one instruction run from
a page that is otherwise absent.

Errors are Xen 4.12's (hvm.c do_altp2m_op, p2m.c, mem_access.c): a view
index that is out of range or not created is -EINVAL (destroying one:
-EBUSY, also for view 0 and the current view); a gfn that is not RAM is
-ESRCH for the host's access ops and get_mem_access, skipped by
set_mem_access in a view, -EINVAL for change_gfn (but a revert of a gfn
with no entry succeeds); gfn ~0 in the access ops is the default access;
no free view -EINVAL; slots exhausted -ENOMEM.

Locking: ``lock`` serialises the ops and ``relayout``; it is taken before
GuestMemory's writer lock, never inside it.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyxen.abi.errno import XenErrno
from pyxen.hv.errors import HypercallError
from pyxen.memory import Gfn, PageKind
from pyxen.memory.addr import Gpa
from pyxen.memory.errors import SlotsExhausted
from pyxen.memory.physmap import Override, SlotMode

if TYPE_CHECKING:
    from pyxen.hv.vcpu import VcpuRunner
    from pyxen.kvm.exits import MmioExit
    from pyxen.memory.physmap import GuestMemory

MAX_ALTP2M = 10
INVALID_GFN = (1 << 64) - 1
READ, WRITE, EXEC = 1, 2, 4


class Access(enum.IntEnum):
    """``xenmem_access_t`` (public/memory.h).  0-7 are r/w/x bit sets."""

    n = 0
    r = 1
    w = 2
    rw = 3
    x = 4
    rx = 5
    wx = 6
    rwx = 7
    rx2rw = 8  # r-x, becomes rw- (here rwx) at the first write, with an event
    n2rwx = 9  # ---, becomes rwx at the first access, with an event
    default = 10  # the p2m's default access (rwx unless set through gfn ~0)


def permits(access: Access, kind: int) -> bool:
    """Whether ``access`` allows an access of ``kind`` (READ, WRITE or EXEC)."""
    if access <= Access.rwx:
        return bool(access & kind)
    return access is Access.rx2rw and kind != WRITE


def slot_mode(access: Access) -> SlotMode:
    if access is Access.rwx:
        return SlotMode.NORMAL
    if access in (Access.rx, Access.rx2rw):
        return SlotMode.READONLY
    return SlotMode.ABSENT


@dataclass
class View:
    remap: dict[int, int] = field(default_factory=dict)  # gfn -> gfn of the frame shown
    access: dict[int, Access] = field(default_factory=dict)
    suppress_ve: dict[int, bool] = field(default_factory=dict)


class Altp2m:
    """The views and access rights of ``memory`` (one domain)."""

    def __init__(self, memory: GuestMemory) -> None:
        self.memory = memory
        self.lock = threading.RLock()
        self.host_access: dict[int, Access] = {}
        # gfn ~0 in the access ops: recorded and reported; as in Xen it would apply
        # only to frames populated later, and pyxen populates RAM at build.
        self.default_access = Access.rwx
        self.views: list[View | None] = [None] * MAX_ALTP2M
        self.active = False
        self.current = 0
        self.listener: object | None = None  # the Vmi listening for memory events
        self.pinned: dict[int, Override] = {}
        self.engaged = False  # some frame is mapped differently from the p2m

    # -- what the guest sees ------------------------------------------------------------

    def is_ram(self, gfn: int) -> bool:
        found = self.memory.lookup(Gfn(gfn)) if 0 <= gfn < 1 << 52 else None
        return found is not None and found[1] is PageKind.RAM

    def access_in(self, view: int | None, gfn: int) -> Access:
        """The access of ``gfn`` in ``view`` (None: the current one)."""
        v = self._view_or_none(self.current if view is None else view)
        if v is not None and gfn in v.access:
            return v.access[gfn]
        return self.host_access.get(gfn, Access.rwx)

    def frame_in(self, view: int | None, gfn: int) -> int:
        """The gfn whose frame ``gfn`` shows in ``view`` (None: the current one)."""
        v = self._view_or_none(self.current if view is None else view)
        frame = v.remap.get(gfn, gfn) if v is not None else gfn
        return frame if self.is_ram(frame) else gfn

    def _view_or_none(self, index: int) -> View | None:
        return self.views[index] if self.active and 0 <= index < MAX_ALTP2M else None

    def relayout(self) -> None:
        """Program the current view (and the pins) into the memory slots."""
        with self.lock:
            view = self._view_or_none(self.current)
            listening = self.listener is not None
            # Without a listener only remaps show: a guest's long list of rights costs
            # nothing here.  With one, each right may be a slot override: a list longer
            # than the slots can ever hold is refused before it is walked.
            gfns: set[int] = set(view.remap) if view is not None else set()
            if listening:
                limit = self.memory.slot_limit
                if limit is not None and len(self.host_access) + (
                        len(view.access) if view is not None else 0) > limit:
                    raise HypercallError(XenErrno.ENOMEM)
                gfns |= self.host_access.keys()
                if view is not None:
                    gfns |= view.access.keys()
            overrides: dict[int, Override] = {}
            for g in gfns:
                frame = view.remap.get(g) if view is not None else None
                mode = slot_mode(self.access_in(None, g)) if listening else SlotMode.NORMAL
                if frame is not None or mode is not SlotMode.NORMAL:
                    overrides[g] = Override(frame, mode)
            overrides.update(self.pinned)
            try:
                self.memory.set_overrides(overrides)
            except SlotsExhausted:
                raise HypercallError(XenErrno.ENOMEM) from None
            self.engaged = bool(overrides)

    def _change(self, undo: dict[int, object], target: dict[int, object], gfn: int,
                value: object | None) -> None:
        """Set target[gfn] = value (None removes), remembering the old value in undo."""
        if gfn not in undo:
            undo[gfn] = target.get(gfn)
        if value is None:
            target.pop(gfn, None)
        else:
            target[gfn] = value

    # -- domain state ---------------------------------------------------------------------

    def set_state(self, on: bool) -> None:
        with self.lock:
            if on == self.active:
                return
            self.active = on
            self.views = [View()] + [None] * (MAX_ALTP2M - 1) if on else [None] * MAX_ALTP2M
            self.current = 0
            self.relayout()

    def _view(self, index: int) -> View:
        if not self.active or not 0 <= index < MAX_ALTP2M or self.views[index] is None:
            raise HypercallError(XenErrno.EINVAL)
        view = self.views[index]
        assert view is not None
        return view

    def create_view(self) -> int:
        with self.lock:
            if self.active:
                for i in range(1, MAX_ALTP2M):
                    if self.views[i] is None:
                        self.views[i] = View()
                        return i
            raise HypercallError(XenErrno.EINVAL)

    def destroy_view(self, index: int) -> None:
        with self.lock:
            if (not self.active or not 0 < index < MAX_ALTP2M or self.views[index] is None
                    or index == self.current):
                raise HypercallError(XenErrno.EBUSY)
            self.views[index] = None

    def switch_view(self, index: int) -> None:
        with self.lock:
            self._view(index)
            if index != self.current:
                old, self.current = self.current, index
                try:
                    self.relayout()
                except HypercallError:
                    self.current = old
                    self.relayout()
                    raise

    # -- per-gfn entries ------------------------------------------------------------------

    def set_mem_access(self, index: int | None, gfn: int, access: int) -> None:
        """``index`` None or 0: the host p2m (Xen: view 0 is the host's access)."""
        self.set_mem_access_multi(index, [(gfn, access)])

    def set_mem_access_multi(self, index: int | None, entries: list[tuple[int, int]]) -> None:
        """In order, as Xen's p2m_set_mem_access_multi: a bad access ends the call
        with -EINVAL and the entries before it stay.  Only running out of slots
        (-ENOMEM, pyxen's own limit) takes back the whole call."""
        with self.lock:
            table = self.host_access if not index else self._view(index).access
            undo: dict[int, object] = {}
            error: HypercallError | None = None
            for gfn, value in entries:
                if not 0 <= value <= Access.default:
                    error = HypercallError(XenErrno.EINVAL)
                    break
                access = self.default_access if value == Access.default else Access(value)
                if gfn == INVALID_GFN:
                    self.default_access = access
                elif not self.is_ram(gfn):
                    if table is self.host_access:
                        error = HypercallError(XenErrno.ESRCH)
                        break
                    # in a view, a gfn with no frame is skipped
                else:
                    keep = access is Access.rwx and table is self.host_access
                    self._change(undo, table, gfn, None if keep else access)  # type: ignore[arg-type]
            try:
                self.relayout()
            except HypercallError:
                for gfn, old in undo.items():
                    self._change({}, table, gfn, old)  # type: ignore[arg-type]
                self.relayout()
                raise
            if error is not None:
                raise error

    def get_mem_access(self, index: int | None, gfn: int) -> Access:
        with self.lock:
            if index:
                self._view(index)
            if gfn == INVALID_GFN:
                return self.default_access
            if not self.is_ram(gfn):
                raise HypercallError(XenErrno.ESRCH)
            return self.access_in(index or 0, gfn) if self.active else \
                self.host_access.get(gfn, Access.rwx)

    def change_gfn(self, index: int, old_gfn: int, new_gfn: int) -> None:
        """Show ``new_gfn``'s frame at ``old_gfn`` in view ``index``; INVALID_GFN
        removes the view's entry for ``old_gfn`` (it shows the host mapping again)."""
        with self.lock:
            view = self._view(index)
            saved = (view.remap.get(old_gfn), view.access.get(old_gfn))
            if new_gfn == INVALID_GFN:  # a revert: nothing to do for a gfn with no entry
                view.remap.pop(old_gfn, None)
                view.access.pop(old_gfn, None)
            else:
                if not (self.is_ram(old_gfn) and self.is_ram(new_gfn)):
                    raise HypercallError(XenErrno.EINVAL)
                # Xen's new entry takes the access new_gfn has in this view.
                view.access[old_gfn] = self.access_in(index, new_gfn)
                view.remap[old_gfn] = view.remap.get(new_gfn, new_gfn)
            try:
                self.relayout()
            except HypercallError:
                self._change({}, view.remap, old_gfn, saved[0])  # type: ignore[arg-type]
                self._change({}, view.access, old_gfn, saved[1])  # type: ignore[arg-type]
                self.relayout()
                raise

    def set_suppress_ve(self, index: int, gfn: int, suppress: bool) -> None:
        with self.lock:
            view = self._view(index)
            if not self.is_ram(gfn):
                raise HypercallError(XenErrno.ESRCH)
            view.suppress_ve[gfn] = suppress

    def get_suppress_ve(self, index: int, gfn: int) -> bool:
        with self.lock:
            view = self._view(index)
            if not self.is_ram(gfn):
                raise HypercallError(XenErrno.ESRCH)
            return view.suppress_ve.get(gfn, True)

    # -- the listener's tools -------------------------------------------------------------

    def pin(self, gfn: int, frame: int | None) -> None:
        """Map ``gfn`` normally (on ``frame``'s page) until ``unpin``, whatever the view
        says: one instruction runs from a page that is absent in the view."""
        with self.lock:
            self.pinned[gfn] = Override(None if frame in (None, gfn) else frame)
            self.relayout()

    def unpin(self, gfn: int) -> None:
        with self.lock:
            if self.pinned.pop(gfn, None) is not None:
                self.relayout()

    def lift(self, index: int | None, gfn: int, access: Access) -> None:
        """Set an access after an event (rx2rw, n2rwx), in the view it was seen in."""
        with self.lock:
            view = self._view_or_none(index or 0) if index else None
            table = view.access if view is not None else self.host_access
            if gfn in table or table is self.host_access:
                table[gfn] = access
            self.relayout()

    def emulate_mmio(self, runner: VcpuRunner, mmio: MmioExit, view: int | None = None) -> bool:
        """Carry out an MMIO exit's access on the RAM frame ``view`` shows at its
        address (None: the current view); False if it is not RAM (a device's)."""
        gpa = mmio.phys_addr
        gfn = gpa >> 12
        if not self.is_ram(gfn):
            return False
        frame = self.frame_in(view, gfn)
        size = mmio.length
        target = Gpa((frame << 12) | (gpa & 0xFFF))
        memory = self.memory
        try:
            if mmio.is_write:
                memory.write(target, bytes(mmio.data[:size]))
            else:
                data = runner.kvm.kvm_run.exit.mmio.data
                value = memory.read(target, size)
                for i in range(size):
                    data[i] = value[i]
        except Exception:  # the frame went away meanwhile: like a hole
            return False
        return True
