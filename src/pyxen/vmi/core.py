"""``Vmi``: LibVMI-shaped introspection of a domain running in this process.

Threads.  The caller's thread (a tool) pauses, reads and writes memory,
reads and writes registers and registers events.  Event callbacks run on
the vCPU thread that hit the event, between its exit and its next entry:
keep them short (the vCPU waits), and they may read memory and the
registers of *that* vCPU without pausing (``get_vcpuregs``/``set_vcpureg``
accept the current vCPU's own thread).  They may register and clear
events; they must not ``pause`` (a domain cannot pause itself from one of
its vCPUs: VmiError).

Registers.  Between exits pyxen keeps a vCPU's registers in the kvm_run
sync-regs page (kvm/vcpu.py).  ``get_vcpuregs`` needs the domain paused
(or the vCPU's own thread) and reads that synced view: values are **as of
the vCPU's last exit**.  A vCPU that never exited has a zeroed sync page
(its synced CR0 is 0, which a vCPU that ran never has: KVM and the PVH
entry both set CR0.ET/PE): it is read with KVM_GET_REGS/SREGS (the builder
set it that way, and the vCPU cannot be in KVM_RUN while the domain is
paused).  ``set_vcpureg`` writes the synced view and marks it dirty (KVM
loads it at the next entry), or KVM_SET_REGS for a never-run vCPU.

Guest debug.  One vCPU's KVM_SET_GUEST_DEBUG state is derived from the
registrations (``events.guest_debug``): single-step while a SINGLESTEP
event is registered for it, or while it steps over a breakpoint, or while
a callback asked for one more step; DR0-3 + DR7 for the breakpoints
(the same on every vCPU) except while it steps over one.  A change is
published in ``runner.guest_debug_wanted`` and, from another thread,
``Req.DEBUG`` makes the vCPU apply it before its next KVM_RUN (a vCPU
ioctl from another thread would wait for the KVM_RUN in progress); on the
vCPU's own thread it is applied at once.

Breakpoints are fault-like here (RIP = the address, B<i> in DR6), and RF
is ignored by this host's KVM (feasibility Q3): after the callback the
vCPU single-steps the instruction with the DRs off, then re-arms them.

HLT while stepping (feasibility Q1): KVM does not halt, it gives a step
exit at hlt+1 and runs on.  A step exit at P+1 whose previous step (or
breakpoint) exit was at P, where the byte at P is 0xF4, is therefore
handled as the HLT exit pyxen would have had (block, or take the vCPU down
with IF=0).  Only an instruction that starts with 0xF4 is a HLT, and RIP
can be at P+1 one instruction after P only by executing it, so the test is
exact while the vCPU is being stepped (``last_pc`` is forgotten when its
stepping stops).

Memory events and views (hv/altp2m.py has the model).  While a memory
event is registered this Vmi is the domain's altp2m ``listener``: frames
whose access in the current view is restricted get read-only slots or no
slot.  A write to a read-only slot, or a read or write of an absent frame,
is an MMIO exit (``mmio``): an access the rights allow is carried out on
the frame the view shows (``Altp2m.emulate_mmio``), a violation goes to
the frame's event or the catch-all one.  An instruction fetch from an
absent frame is an emulation failure without instruction bytes
(``emulation_failure``): the frame is *pinned* (mapped normally, on the
view's page) and the vCPU single-steps until RIP leaves it, then it is
unpinned.  So instructions on such a frame run from the view's page at
about one step each, and an instruction there that reads its own frame
sees the view's page (Xen's execute-only shadow pages need EPT, which this
KVM lacks).  ``int3`` is an emulation failure with the byte 0xCC here (a
debug exit with exception 3 where KVM gives one): the INT3 event sees it
first; unclaimed, the instruction fallback delivers #BP.  CR3 events
compare the synced CR3 at each exit of a vCPU (``_exit_with_cr3`` replaces
its ``on_exit`` while one is registered).

Robustness: a callback that raises, or answers something that is not an
``EventResponse``, is logged once (per event) and treated as CONTINUE;
nothing from VMI escapes into the vCPU loop (``debug_exit`` logs and drops
its own failures).  Everything raises ``VmiError`` once the domain is
being destroyed or the Vmi is closed.  ``close()`` clears every event
(guest debug off on every vCPU), undoes the pauses this Vmi holds and
detaches from the domain.
"""

from __future__ import annotations

import contextlib
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from pyxen.abi.hvm import HvmParam as P
from pyxen.abi.hvm import XEN_ALTP2M_disabled
from pyxen.hv.altp2m import EXEC, INVALID_GFN, READ, WRITE, Access, Altp2m, permits
from pyxen.hv.errors import HypercallError
from pyxen.hv.vcpu_control import Req
from pyxen.hv.vcpu_exits import handle_exit
from pyxen.kvm import structs as ks
from pyxen.kvm.exits import DebugExit, HltExit, InternalErrorExit, MmioExit
from pyxen.memory import PAGE_SIZE, Gfn, PageKind, PagingState
from pyxen.memory.addr import Gla, Gpa
from pyxen.memory.errors import MemoryFault, PageFault, SlotsExhausted
from pyxen.memory.paging import translate
from pyxen.memory.physmap import SlotMode
from pyxen.vmi.events import (
    DR6_BS,
    DR6_HITS,
    MAX_BREAKPOINTS,
    Action,
    Event,
    EventInfo,
    EventKind,
    EventResponse,
    guest_debug,
)
from pyxen.vmi.regs import regs_to_dict, set_in_regs

if TYPE_CHECKING:
    from pyxen.hv.domain import Domain
    from pyxen.hv.vcpu import VcpuRunner

_M64 = (1 << 64) - 1
T = TypeVar("T")
_HLT_OPCODE = 0xF4
_INT3_OPCODE = 0xCC
_DB_VECTOR = 1
_BP_VECTOR = 3
_ACCESS_LETTER = {READ: "r", WRITE: "w", EXEC: "x"}
_HLT = HltExit()


class VmiError(Exception):
    """A VMI request that cannot be done (bad address, not paused, domain gone ...)."""


@dataclass
class _VcpuDebug:
    """Per-vCPU stepping state, touched only by that vCPU's thread (and under the lock
    by ``_refresh``)."""

    resuming: bool = False  # stepping over a breakpoint with the DRs off
    followups: list[Event] = field(default_factory=list)  # answered SINGLESTEP
    last_pc: int | None = None  # RIP of the last step/breakpoint exit (HLT detection)
    pin_gfn: int | None = None  # a frame pinned while this vCPU steps through it
    last_cr3: int | None = None  # CR3 at the last exit (CR3 events)


class Vmi:
    """Introspection of ``domain`` (a pyxen.hv.domain.Domain in this process)."""

    def __init__(self, domain: Domain) -> None:
        if domain.destroyed or domain.dying or domain.memory_closed:
            raise VmiError(f"d{domain.domid} is being destroyed")
        if domain.vmi is not None:
            raise VmiError(f"d{domain.domid} already has a Vmi attached")
        self.domain = domain
        self._lock = threading.RLock()
        self._pauses = 0
        self._steps: dict[int, Event] = {}
        self._breakpoints: list[Event | None] = [None] * MAX_BREAKPOINTS
        self._vcpu_debug = {v.vcpu_id: _VcpuDebug() for v in domain.vcpus}
        self._memory: dict[int | None, Event] = {}  # gfn (None: catch-all) -> event
        self._int3: Event | None = None
        self._cr3: Event | None = None
        self.closed = False
        domain.vmi = self

    # -- lifecycle --------------------------------------------------------------------

    def _alive(self) -> None:
        if self.closed:
            raise VmiError("this Vmi is closed")
        d = self.domain
        if d.destroyed or d.dying or d.memory_closed:
            raise VmiError(f"d{d.domid} is being destroyed")

    def close(self) -> None:
        """Clear every event (guest debug off on every vCPU), undo this Vmi's pauses,
        detach from the domain.  Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._steps.clear()
            self._breakpoints = [None] * MAX_BREAKPOINTS
            self._int3 = None
            for st in self._vcpu_debug.values():
                st.followups.clear()
                st.resuming = False
                st.pin_gfn = None
            pauses, self._pauses = self._pauses, 0
            gone = self.domain.destroyed or self.domain.memory_closed
            if not gone:
                self._refresh(list(self.domain.vcpus))
                self._set_cr3_event(None)
                views = self.domain.altp2m
                with views.lock:
                    for gfn in self._memory:
                        if gfn is not None:
                            views.host_access.pop(gfn, None)
                    self._memory.clear()
                    views.pinned.clear()
                    views.listener = None
                    # Fewer overrides than before: cannot run out of slots.
                    with contextlib.suppress(HypercallError):
                        views.relayout()
        if not gone:
            for _ in range(pauses):
                self.domain.unpause()
        self.domain.vmi = None

    def __enter__(self) -> Vmi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pause ------------------------------------------------------------------------

    def pause(self) -> None:
        """Pause the domain (counted, like xc_domain_pause): returns once no vCPU is
        in the guest or handling an exit."""
        self._alive()
        try:
            self.domain.pause()
        except RuntimeError as e:  # from one of the domain's own vCPUs
            raise VmiError(str(e)) from None
        with self._lock:
            self._pauses += 1

    def resume(self) -> None:
        """Undo one ``pause`` of this Vmi; VmiError if it holds none."""
        self._alive()
        with self._lock:
            if self._pauses == 0:
                raise VmiError("resume without pause")
            self._pauses -= 1
        self.domain.unpause()

    @property
    def paused(self) -> bool:
        return self.domain.pause_count > 0

    # -- physical memory --------------------------------------------------------------

    def _require_ram(self, gpa: int, size: int) -> None:
        if gpa < 0 or size < 0 or gpa + size > self.domain.max_gfn << 12:
            raise VmiError(f"physical range {gpa:#x}+{size:#x} is out of range")
        memory = self.domain.memory
        gfn = gpa >> 12
        end = (gpa + size + PAGE_SIZE - 1) >> 12
        while gfn < end:
            found = memory.lookup(Gfn(gfn))
            if found is None or found[1] is not PageKind.RAM:
                raise VmiError(f"guest frame {gfn:#x} is not RAM")
            gfn += 1

    def read_pa(self, gpa: int, size: int) -> bytes:
        """``size`` bytes of guest RAM at ``gpa`` (racy unless paused, as in LibVMI)."""
        self._alive()
        self._require_ram(gpa, size)
        try:
            return self.domain.memory.read(Gpa(gpa), size)
        except MemoryFault as e:  # the p2m changed under us
            raise VmiError(str(e)) from None

    def write_pa(self, gpa: int, data: bytes | bytearray) -> None:
        """Write ``data`` into guest RAM at ``gpa`` (all or nothing)."""
        self._alive()
        self._require_ram(gpa, len(data))
        try:
            self.domain.memory.write(Gpa(gpa), bytes(data))
        except MemoryFault as e:
            raise VmiError(str(e)) from None

    # -- translation ------------------------------------------------------------------

    def _paging(self, vcpu: int) -> PagingState:
        sregs = self._sregs(self._runner(vcpu))
        return PagingState(int(sregs.cr0), int(sregs.cr3), int(sregs.cr4), int(sregs.efer))

    def _translate(self, paging: PagingState, va: int) -> int:
        try:
            return int(translate(self.domain.memory, paging, Gla(va & _M64), False))
        except (PageFault, MemoryFault) as e:
            raise VmiError(f"cannot translate {va:#x}: {e}") from None

    def translate_kv2p(self, va: int, vcpu: int = 0) -> int:
        """The guest-physical address of linear ``va`` through vCPU ``vcpu``'s paging
        state (CR0/CR3/CR4/EFER as of its last exit)."""
        self._alive()
        return self._translate(self._paging(vcpu), va)

    def translate_uv2p(self, va: int, cr3: int) -> int:
        """``va`` through the address space rooted at ``cr3`` (vCPU 0's paging mode)."""
        self._alive()
        p = self._paging(0)
        return self._translate(PagingState(p.cr0, cr3, p.cr4, p.efer), va)

    def _va_spans(self, va: int, size: int, vcpu: int, cr3: int | None) -> list[tuple[int, int]]:
        paging = self._paging(vcpu)
        if cr3 is not None:
            paging = PagingState(paging.cr0, cr3, paging.cr4, paging.efer)
        spans: list[tuple[int, int]] = []
        va &= _M64
        while size > 0:
            chunk = min(size, PAGE_SIZE - (va & (PAGE_SIZE - 1)))
            spans.append((self._translate(paging, va), chunk))
            va = (va + chunk) & _M64
            size -= chunk
        return spans

    def read_va(self, va: int, size: int, vcpu: int = 0, cr3: int | None = None) -> bytes:
        """``size`` bytes at linear ``va`` (vCPU ``vcpu``'s address space, or ``cr3``'s),
        across pages."""
        self._alive()
        return b"".join(self.read_pa(gpa, n) for gpa, n in self._va_spans(va, size, vcpu, cr3))

    def write_va(self, va: int, data: bytes | bytearray, vcpu: int = 0,
                 cr3: int | None = None) -> None:
        """Write ``data`` at linear ``va``; every page is translated and checked first,
        so a failure writes nothing."""
        self._alive()
        spans = self._va_spans(va, len(data), vcpu, cr3)
        for gpa, n in spans:
            self._require_ram(gpa, n)
        pos = 0
        for gpa, n in spans:
            self.write_pa(gpa, data[pos:pos + n])
            pos += n

    # -- registers --------------------------------------------------------------------

    def _runner(self, vcpu: int) -> VcpuRunner:
        vcpus = self.domain.vcpus
        if not 0 <= vcpu < len(vcpus):
            raise VmiError(f"no vCPU {vcpu} (the domain has {len(vcpus)})")
        return vcpus[vcpu]

    @staticmethod
    def _synced(runner: VcpuRunner) -> bool:
        """Whether the sync-regs page holds the vCPU's state (it exited at least once)."""
        return int(runner.kvm.sregs.cr0) != 0

    def _sregs(self, runner: VcpuRunner) -> ks.kvm_sregs:
        if self._synced(runner):
            return runner.kvm.sregs
        return runner.kvm.get_sregs()

    def _stopped(self, vcpu: int) -> VcpuRunner:
        """The vCPU, if its registers may be touched now: the domain paused (and the
        vCPU quiescent), or called on the vCPU's own thread (a callback)."""
        self._alive()
        runner = self._runner(vcpu)
        if runner.control.is_current():
            return runner
        if self.domain.pause_count == 0 or not runner.quiescent:
            raise VmiError(f"vCPU {vcpu}: registers need the domain paused")
        return runner

    def get_vcpuregs(self, vcpu: int) -> dict[str, int]:
        """Every register of ``vcpu`` by name (vmi/regs.py), as of its last exit."""
        runner = self._stopped(vcpu)
        kvm = runner.kvm
        if self._synced(runner):
            return regs_to_dict(kvm.regs, kvm.sregs)
        return regs_to_dict(kvm.get_regs(), kvm.get_sregs())

    def set_vcpureg(self, vcpu: int, name: str, value: int) -> None:
        """Set one general register, rip or rflags of ``vcpu``: applied at its next
        entry."""
        runner = self._stopped(vcpu)
        kvm = runner.kvm
        try:
            if self._synced(runner):
                set_in_regs(kvm.regs, name, value)
                kvm.mark_regs_dirty()
            else:
                regs = kvm.get_regs()
                set_in_regs(regs, name, value)
                kvm.set_regs(regs)
        except ValueError as e:
            raise VmiError(str(e)) from None

    # -- events -----------------------------------------------------------------------

    def register_event(self, event: Event) -> Event:
        """Arm ``event``; VmiError if it is malformed or its resource is taken (one
        single-step event per vCPU, at most 4 breakpoints)."""
        self._alive()
        with self._lock:
            if event in self._steps.values() or event in self._breakpoints:
                raise VmiError("event already registered")
            if event.kind is EventKind.SINGLESTEP:
                assert event.vcpu is not None
                runner = self._runner(event.vcpu)
                if event.vcpu in self._steps:
                    raise VmiError(f"vCPU {event.vcpu} already has a single-step event")
                self._steps[event.vcpu] = event
                self._refresh([runner])
            elif event.kind is EventKind.BREAKPOINT:
                assert event.address is not None
                if any(e is not None and e.address == event.address
                       for e in self._breakpoints):
                    raise VmiError(f"a breakpoint at {event.address:#x} already exists")
                try:
                    slot = self._breakpoints.index(None)
                except ValueError:
                    raise VmiError(f"at most {MAX_BREAKPOINTS} hardware breakpoints "
                                   "(DR0-3)") from None
                self._breakpoints[slot] = event
                self._refresh(list(self.domain.vcpus))
            elif event.kind is EventKind.MEMORY:
                self._register_memory(event)
            elif event.kind is EventKind.INT3:
                if self._int3 is not None:
                    raise VmiError("an int3 event is already registered")
                self._int3 = event
                self._refresh(list(self.domain.vcpus))
            elif event.kind is EventKind.CR3:
                if self._cr3 is not None:
                    raise VmiError("a CR3 event is already registered")
                self._set_cr3_event(event)
            else:  # pragma: no cover - EventKind is closed
                raise VmiError(f"unsupported event kind {event.kind}")
        return event

    def _register_memory(self, event: Event) -> None:
        gfn = event.gfn
        if gfn in self._memory:
            raise VmiError("a memory event for " + (
                f"frame {gfn:#x}" if gfn is not None else "every frame") + " already exists")
        views = self.domain.altp2m
        with views.lock:
            if gfn is not None:
                self._require_ram(gfn << 12, PAGE_SIZE)
                views.host_access[gfn] = Access(7 & ~event.trap)
            self._memory[gfn] = event
            views.listener = self
            try:
                views.relayout()
            except HypercallError:
                del self._memory[gfn]
                if gfn is not None:
                    views.host_access.pop(gfn, None)
                views.listener = self if self._memory else None
                views.relayout()
                raise VmiError("no memory slots left for this event") from None

    def _set_cr3_event(self, event: Event | None) -> None:
        """Hook (or unhook) every vCPU's exit handling for CR3 events (the lock held)."""
        self._cr3 = event
        for runner in self.domain.vcpus:
            self._vcpu_debug[runner.vcpu_id].last_cr3 = None
            runner.on_exit = self._exit_with_cr3 if event is not None else handle_exit

    def clear_event(self, event: Event) -> None:
        """Disarm ``event``; VmiError if it is not registered."""
        self._alive()
        with self._lock:
            if event.kind is EventKind.SINGLESTEP and self._steps.get(event.vcpu or 0) is event:
                del self._steps[event.vcpu or 0]
                self._refresh([self._runner(event.vcpu or 0)])
            elif event in self._breakpoints:
                self._breakpoints[self._breakpoints.index(event)] = None
                self._refresh(list(self.domain.vcpus))
            elif event.kind is EventKind.MEMORY and self._memory.get(event.gfn) is event:
                views = self.domain.altp2m
                with views.lock:
                    del self._memory[event.gfn]
                    if event.gfn is not None:
                        views.host_access.pop(event.gfn, None)
                    if not self._memory:
                        views.listener = None
                    views.relayout()
            elif event is self._int3:
                self._int3 = None
                self._refresh(list(self.domain.vcpus))
            elif event is self._cr3:
                self._set_cr3_event(None)
            else:
                raise VmiError("event not registered")
            for st in self._vcpu_debug.values():
                if event in st.followups:
                    st.followups.remove(event)

    def events(self) -> list[Event]:
        with self._lock:
            return [*self._steps.values(), *(e for e in self._breakpoints if e is not None),
                    *self._memory.values(),
                    *(e for e in (self._int3, self._cr3) if e is not None)]

    def _refresh(self, runners: list[VcpuRunner]) -> None:
        """Publish each vCPU's wanted guest-debug state (the lock held); apply it now on
        the vCPU's own thread, else ask the vCPU to (Req.DEBUG)."""
        addresses = [e.address if e is not None else None for e in self._breakpoints]
        for runner in runners:
            st = self._vcpu_debug[runner.vcpu_id]
            step = (runner.vcpu_id in self._steps or st.resuming or bool(st.followups)
                    or st.pin_gfn is not None)
            if not step:
                st.last_pc = None
            runner.guest_debug_wanted = guest_debug(
                step, [None] * MAX_BREAKPOINTS if st.resuming else addresses,
                sw_bp=self._int3 is not None)
            if runner.control.is_current():
                runner.apply_guest_debug()
            else:
                runner.request(Req.DEBUG)

    # -- the vCPU side ----------------------------------------------------------------

    def debug_exit(self, runner: VcpuRunner, exit_: DebugExit) -> None:
        """A KVM_EXIT_DEBUG of ``runner`` (on its thread, from vcpu_exits.handle_exit)."""
        try:
            halted = self._debug_exit(runner, exit_)
        except Exception:
            self.domain.log_once(
                "vmi-debug-exit",
                f"vcpu {runner.vcpu_id}: VMI failed on a debug exit (ignored):\n"
                f"{traceback.format_exc()}")
            return
        if halted:
            handle_exit(runner, _HLT)

    def _debug_exit(self, runner: VcpuRunner, exit_: DebugExit) -> bool:
        """Deliver the events of one debug exit; True if the step went over a HLT."""
        st = self._vcpu_debug[runner.vcpu_id]
        pc, dr6 = exit_.pc, exit_.dr6
        hits = dr6 & DR6_HITS
        halted = False
        if exit_.exception == _BP_VECTOR:  # a KVM that reports int3 as a debug exit
            if not self._int3_hit(runner, st, pc):
                runner.kvm.mark_regs_dirty()
                self._deliver_bp(runner)
        elif dr6 & DR6_BS or (exit_.exception == _DB_VECTOR and not hits):
            halted = self._stepped_over_hlt(runner, st, pc)
            st.last_pc = pc
            st.resuming = False
            if st.pin_gfn is not None:
                self._step_pinned(runner, st)
            followups, st.followups = st.followups, []
            with self._lock:
                event = None if self.closed else self._steps.get(runner.vcpu_id)
            if event is not None:
                self._call(runner, st,
                           EventInfo(event, EventKind.SINGLESTEP, runner.vcpu_id, pc, dr6))
            for event in followups:
                self._call(runner, st,
                           EventInfo(event, EventKind.SINGLESTEP, runner.vcpu_id, pc, dr6))
        elif hits:
            st.last_pc = pc
            with self._lock:
                hit = None if self.closed else next(
                    (self._breakpoints[i] for i in range(MAX_BREAKPOINTS)
                     if hits & (1 << i) and self._breakpoints[i] is not None), None)
            if hit is not None:
                self._call(runner, st,
                           EventInfo(hit, EventKind.BREAKPOINT, runner.vcpu_id, pc, dr6))
            st.resuming = True  # step over the instruction with the DRs off, re-arm
        with self._lock:
            if self.closed:
                st.resuming = False
                st.followups.clear()
            self._refresh([runner])
        return halted

    def genuine_hlt(self, runner: VcpuRunner) -> bool:
        """Whether a KVM_EXIT_HLT of ``runner`` comes from a HLT just executed (RIP
        right after an 0xF4 byte).  This host's KVM reports a HLT that was single-
        stepped (and handled here as a block) later again, at an arbitrary RIP and
        possibly with IF=0 -- which would take the vCPU down: such exits are
        dropped.  Without stepping, a HLT exit always follows its 0xF4."""
        try:
            linear = (int(runner.kvm.regs.rip) + int(runner.kvm.sregs.cs.base) - 1) & _M64
            return runner.guest_access().read(linear, 1)[0] == _HLT_OPCODE
        except (PageFault, MemoryFault):
            return True

    def _stepped_over_hlt(self, runner: VcpuRunner, st: _VcpuDebug, pc: int) -> bool:
        prev = st.last_pc
        if prev is None or pc != (prev + 1) & _M64:
            return False
        try:
            linear = (prev + int(runner.kvm.sregs.cs.base)) & _M64
            return runner.guest_access().read(linear, 1)[0] == _HLT_OPCODE
        except (PageFault, MemoryFault):
            return False

    def _call(self, runner: VcpuRunner, st: _VcpuDebug, info: EventInfo) -> EventResponse:
        """Run one callback; carry out the answers every event kind shares (SINGLESTEP,
        SET_REGS, SWITCH_VIEW) and return the answer for the kind's own ones."""
        event = info.event
        event.hits += 1
        try:
            response = event.callback(self, info)
        except Exception:
            self.domain.log_once(
                f"vmi-callback-{id(event)}",
                f"vcpu {runner.vcpu_id}: VMI {info.kind.value} callback raised (treated as "
                f"CONTINUE, reported once):\n{traceback.format_exc()}")
            return EventResponse.CONTINUE
        if response is None:
            return EventResponse.CONTINUE
        if not isinstance(response, EventResponse):
            self.domain.log_once(
                f"vmi-answer-{id(event)}",
                f"vcpu {runner.vcpu_id}: VMI callback answered {response!r}, not an "
                "EventResponse (treated as CONTINUE, reported once)")
            return EventResponse.CONTINUE
        if response.action is Action.SINGLESTEP:
            st.followups.append(event)
            with self._lock:
                self._refresh([runner])
        elif response.action is Action.SET_REGS:
            regs = runner.kvm.regs
            try:
                for name, value in response.regs:
                    set_in_regs(regs, name, value)
            except ValueError as e:
                self.domain.log_once(f"vmi-answer-{id(event)}",
                                     f"vcpu {runner.vcpu_id}: VMI SET_REGS: {e}")
            runner.kvm.mark_regs_dirty()
        elif response.action is Action.SWITCH_VIEW:
            try:
                self.domain.altp2m.switch_view(response.view)
            except HypercallError as e:
                self.domain.log_once(f"vmi-answer-{id(event)}",
                                     f"vcpu {runner.vcpu_id}: VMI cannot switch to view "
                                     f"{response.view}: {e} (treated as CONTINUE)")
                return EventResponse.CONTINUE
        return response

    # -- memory events ----------------------------------------------------------------

    def _violation(self, runner: VcpuRunner, st: _VcpuDebug, gfn: int, gpa: int,
                   kind: int, size: int = 0, value: int = 0) -> EventResponse:
        """An access of ``kind`` that the current view's rights forbid: the event's
        answer (CONTINUE when no event claims it, as Xen lets the access through
        without a listener).  rx2rw and n2rwx are lifted first, as in Xen."""
        views = self.domain.altp2m
        view = views.current if views.active else 0
        access = views.access_in(None, gfn)
        if access is Access.n2rwx or (access is Access.rx2rw and kind == WRITE):
            views.lift(view, gfn, Access.rwx)
        with self._lock:
            event = self._memory.get(gfn)
            if event is None or not event.trap & kind:
                event = self._memory.get(None)
        if event is None:
            return EventResponse.CONTINUE
        rip = int(runner.kvm.regs.rip)
        return self._call(runner, st, EventInfo(event, EventKind.MEMORY, runner.vcpu_id, rip,
                                                gpa=gpa, access=_ACCESS_LETTER[kind],
                                                view=view, size=size, value=value))

    def mmio(self, runner: VcpuRunner, mmio: MmioExit) -> bool:
        """An MMIO exit of ``runner`` (its thread): False unless the address is RAM,
        i.e. a read-only or absent frame of a view (or a slot being re-made)."""
        try:
            return self._mmio(runner, mmio)
        except Exception:
            self.domain.log_once("vmi-mmio", f"vcpu {runner.vcpu_id}: VMI failed on a "
                                 f"memory access (ignored):\n{traceback.format_exc()}")
            return True

    def _mmio(self, runner: VcpuRunner, mmio: MmioExit) -> bool:
        views = self.domain.altp2m
        gfn = mmio.phys_addr >> 12
        kind = WRITE if mmio.is_write else READ
        if not views.is_ram(gfn):
            return False
        if permits(views.access_in(None, gfn), kind):
            return views.emulate_mmio(runner, mmio)
        st = self._vcpu_debug[runner.vcpu_id]
        size = mmio.length
        value = int.from_bytes(mmio.data[:size], "little") if mmio.is_write else 0
        response = self._violation(runner, st, gfn, mmio.phys_addr, kind, size, value)
        if response.action is Action.SKIP:
            if not mmio.is_write:
                data = runner.kvm.kvm_run.exit.mmio.data
                for i in range(mmio.length):
                    data[i] = 0
            return True
        view = response.view if response.action is Action.EMULATE else None
        return views.emulate_mmio(runner, mmio, view) or True

    # -- instruction fetches and int3 ---------------------------------------------------

    def emulation_failure(self, runner: VcpuRunner, exit_: InternalErrorExit) -> bool:
        """A KVM emulation failure of ``runner``: True if VMI handled it (a fetch from a
        frame a view made absent, or an int3 the INT3 event claimed)."""
        try:
            return self._emulation_failure(runner, exit_)
        except Exception:
            self.domain.log_once("vmi-fetch", f"vcpu {runner.vcpu_id}: VMI failed on an "
                                 f"emulation failure (ignored):\n{traceback.format_exc()}")
            return False

    def _emulation_failure(self, runner: VcpuRunner, exit_: InternalErrorExit) -> bool:
        from pyxen.hv.emulate.decode import reported_bytes

        st = self._vcpu_debug[runner.vcpu_id]
        reported = reported_bytes(exit_.data)
        rip = int(runner.kvm.regs.rip)
        if reported is not None:
            return reported[0] == _INT3_OPCODE and self._int3_hit(runner, st, rip)
        gfn = self._rip_gfn(runner)
        views = self.domain.altp2m
        if gfn is None or not views.is_ram(gfn):
            return False
        override = self.domain.memory.override_of(gfn)
        if override is None or override.mode is not SlotMode.ABSENT:
            return False  # not VMI's doing: the instruction fallback decides
        frame: int | None = views.frame_in(None, gfn)
        if not permits(views.access_in(None, gfn), EXEC):
            response = self._violation(runner, st, gfn, gfn << 12, EXEC)
            if response.action is Action.SWITCH_VIEW:
                return True  # fetch again, in the new view
            if response.action is Action.EMULATE:
                frame = views.frame_in(response.view, gfn)
            else:
                frame = views.frame_in(None, gfn)
        return self._run_from(runner, st, gfn, frame)

    def _int3_hit(self, runner: VcpuRunner, st: _VcpuDebug, rip: int) -> bool:
        """The INT3 event for an int3 at ``rip``; False: deliver #BP to the guest."""
        with self._lock:
            event = self._int3
        if event is None:
            return False
        response = self._call(runner, st, EventInfo(event, EventKind.INT3, runner.vcpu_id, rip))
        if response.action is Action.SKIP:
            runner.kvm.regs.rip = (rip + 1) & _M64
            runner.kvm.mark_regs_dirty()
        elif response.action is Action.EMULATE:
            gfn = self._rip_gfn(runner)
            if gfn is None or not self.domain.altp2m.is_ram(gfn):
                return False
            return self._run_from(runner, st, gfn,
                                  self.domain.altp2m.frame_in(response.view, gfn))
        elif response.action is Action.CONTINUE:
            return False
        return True

    def _deliver_bp(self, runner: VcpuRunner) -> None:
        """#BP for an int3 that a debug exit reported and no event claimed: the
        instruction fallback executes the int3 (it reads it from guest memory)."""
        from pyxen.hv.emulate import handle_emulation_failure

        handle_emulation_failure(runner, InternalErrorExit(1, ()))

    def _rip_gfn(self, runner: VcpuRunner) -> int | None:
        linear = (int(runner.kvm.regs.rip) + int(runner.kvm.sregs.cs.base)) & _M64
        sregs = runner.kvm.sregs
        paging = PagingState(int(sregs.cr0), int(sregs.cr3), int(sregs.cr4), int(sregs.efer))
        try:
            return int(translate(self.domain.memory, paging, Gla(linear), False)) >> 12
        except (PageFault, MemoryFault):
            return None

    def _run_from(self, runner: VcpuRunner, st: _VcpuDebug, gfn: int, frame: int | None) -> bool:
        """Let ``runner`` execute from ``gfn`` mapped on ``frame``'s page, stepping
        until RIP leaves the frame (``_step_pinned``)."""
        views = self.domain.altp2m
        if st.pin_gfn is not None and st.pin_gfn != gfn:
            views.unpin(st.pin_gfn)
        try:
            views.pin(gfn, frame)
        except HypercallError:  # no slot: the instruction fallback runs it (host page)
            st.pin_gfn = None
            self.domain.log_once("vmi-pin", f"vcpu {runner.vcpu_id}: no memory slot to run "
                                 f"frame {gfn:#x} from its view (host page used)")
            return False
        st.pin_gfn = gfn
        with self._lock:
            self._refresh([runner])
        return True

    def _step_pinned(self, runner: VcpuRunner, st: _VcpuDebug) -> None:
        """A step exit while a frame is pinned: stay on it (the current view's page)
        while RIP is in it, else unpin and stop stepping."""
        views = self.domain.altp2m
        gfn, pinned = self._rip_gfn(runner), st.pin_gfn
        assert pinned is not None
        if gfn == pinned and views.is_ram(gfn):
            override = views.memory.override_of(gfn)
            frame = views.frame_in(None, gfn)
            if override is None or (gfn if override.frame is None else override.frame) != frame:
                views.pin(gfn, frame)
            return
        st.pin_gfn = None
        views.unpin(pinned)

    # -- CR3 --------------------------------------------------------------------------

    def _exit_with_cr3(self, runner: VcpuRunner, exit_: object) -> None:
        """``runner.on_exit`` while a CR3 event is registered."""
        st = self._vcpu_debug[runner.vcpu_id]
        cr3 = int(runner.kvm.sregs.cr3)
        old, st.last_cr3 = st.last_cr3, cr3
        event = self._cr3
        if event is not None and old is not None and old != cr3:
            self._call(runner, st, EventInfo(event, EventKind.CR3, runner.vcpu_id,
                                             int(runner.kvm.regs.rip), value=cr3,
                                             old_value=old))
        handle_exit(runner, exit_)  # type: ignore[arg-type]

    # -- altp2m for tools (xc_altp2m_*) ---------------------------------------------------

    def _altp2m(self) -> Altp2m:
        self._alive()
        if self.domain.params[P.ALTP2M] == XEN_ALTP2M_disabled:
            raise VmiError(f"d{self.domain.domid}: altp2m is disabled: set altp2m = "
                           '"external" (or "mixed") in its config')
        return self.domain.altp2m

    def _op(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except HypercallError as e:
            raise VmiError(f"{what}: {e}") from None

    def altp2m_set_state(self, on: bool) -> None:
        views = self._altp2m()
        self._op("altp2m state", lambda: views.set_state(on))

    def altp2m_create_view(self) -> int:
        views = self._active_views()
        return self._op("create view", views.create_view)

    def altp2m_destroy_view(self, view: int) -> None:
        views = self._active_views()
        self._op(f"destroy view {view}", lambda: views.destroy_view(view))

    def altp2m_switch_view(self, view: int) -> None:
        views = self._active_views()
        self._op(f"switch to view {view}", lambda: views.switch_view(view))

    def altp2m_set_mem_access(self, view: int, gfn: int, access: str) -> None:
        """``access``: a xenmem_access_t name ("rwx", "r", "x", "n", "rx2rw", ...)."""
        views = self._active_views()
        try:
            value = Access[access]
        except KeyError:
            raise VmiError(f"unknown access {access!r}") from None
        self._op(f"set access of {gfn:#x} in view {view}",
                 lambda: views.set_mem_access(view, gfn, value))

    def altp2m_get_mem_access(self, view: int, gfn: int) -> str:
        views = self._active_views()
        return self._op(f"access of {gfn:#x} in view {view}",
                        lambda: views.get_mem_access(view, gfn)).name

    def altp2m_change_gfn(self, view: int, old_gfn: int, new_gfn: int | None) -> None:
        """Show ``new_gfn``'s frame at ``old_gfn`` in ``view`` (None: undo)."""
        views = self._active_views()
        self._op(f"change gfn {old_gfn:#x} in view {view}",
                 lambda: views.change_gfn(view, old_gfn,
                                          INVALID_GFN if new_gfn is None else new_gfn))

    def _active_views(self) -> Altp2m:
        views = self._altp2m()
        if not views.active:
            raise VmiError("altp2m is not active: altp2m_set_state(True) first")
        return views

    def populate(self, gfn: int) -> None:
        """Give the domain a fresh zeroed RAM frame at hole ``gfn`` (a shadow page for
        change_gfn), counted in its pages as populate_physmap is; VmiError when
        the domain is at its maximum or ``gfn`` is not a hole."""
        self._alive()
        d = self.domain
        if not 0 <= gfn < d.max_gfn or d.memory.lookup(Gfn(gfn)) is not None:
            raise VmiError(f"frame {gfn:#x} is not a hole")
        with d.lock:
            try:
                ok = d.populate_page(gfn)
            except SlotsExhausted:
                ok = False
        if not ok:
            raise VmiError(f"d{d.domid} has no page left for frame {gfn:#x} (max_pages)")
