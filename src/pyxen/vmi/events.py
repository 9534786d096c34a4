"""VMI events, the callbacks' answers, and the guest-debug state they need (pure).

An ``Event`` is registered with ``Vmi.register_event``; its callback runs
on the vCPU thread that hit it as ``callback(vmi, info) -> EventResponse``
(None counts as CONTINUE).  Kinds in this slice:

- ``Event.singlestep(vcpu, cb)``: one callback per instruction vCPU
  ``vcpu`` executes (``info.rip`` = the RIP after it).
- ``Event.breakpoint(address, cb)``: a hardware execute breakpoint (DR0-3)
  at a guest *linear* address, the same on every vCPU, at most 4 per
  domain (``info.rip`` = the address: the instruction has not run yet).
- ``Event.memory(gfn, trap, cb)``: accesses of kinds ``trap`` (a subset of
  "rwx") to frame ``gfn`` (sets the host p2m's access to the rest);
  ``Event.memory(None, "", cb)`` receives every violation of access rights
  set otherwise (altp2m views) that no per-frame event claims.
- ``Event.int3(cb)``: every ``int3`` the guest executes (``info.rip`` at
  it), the path for software breakpoints the tool patches in.
- ``Event.cr3(cb)``: a vCPU's CR3 changed, seen at its next exit (this KVM
  has no CR3 exits: ``info.value`` new, ``info.old_value`` old).

``guest_debug`` turns "what this vCPU needs now" into the
``kvm_guest_debug`` given to KVM_SET_GUEST_DEBUG: DR7 enables L0-L3 for
the armed slots with RW=00 (execute) and LEN=00, bit 10 (reserved, reads
as 1) set: 0x401 for DR0 (the feasibility study used 0x403, L0 and G0;
KVM treats the local and global enables alike for its own debugging).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pyxen.hv.altp2m import EXEC, READ, WRITE
from pyxen.kvm import ioctls as k
from pyxen.kvm import structs as s

if TYPE_CHECKING:
    from pyxen.vmi.core import Vmi

MAX_BREAKPOINTS = 4
DR6_BS = 1 << 14
DR6_HITS = 0xF
_DR7_RESERVED_1 = 1 << 10


class EventKind(enum.Enum):
    SINGLESTEP = "singlestep"
    BREAKPOINT = "breakpoint"
    MEMORY = "memory"
    INT3 = "int3"
    CR3 = "cr3"


class Action(enum.Enum):
    CONTINUE = "continue"
    SINGLESTEP = "singlestep"
    SET_REGS = "set_regs"
    SKIP = "skip"
    EMULATE = "emulate"
    SWITCH_VIEW = "switch_view"


@dataclass(frozen=True, slots=True)
class EventResponse:
    """What the vCPU does after a callback.

    ``EventResponse.CONTINUE``: go on (a memory access is carried out in the
    current view; an int3 is delivered to the guest as #BP).
    ``EventResponse.SINGLESTEP``: execute one more instruction single-stepped
    and call the same callback again with a SINGLESTEP ``EventInfo`` (answer
    SINGLESTEP again to go on stepping).  ``EventResponse.set_regs({"rip":
    ...})``: write these registers (general ones, rip, rflags) and go on.
    Memory and int3 events also take: ``EventResponse.SKIP`` (the access is
    not done, a read gives zeros; the int3 is stepped over, not delivered),
    ``EventResponse.emulate(view)`` (do the access, or run the instruction,
    as altp2m view ``view`` maps the frame, without switching to it) and
    ``EventResponse.switch_view(view)`` (switch the domain to ``view``, then
    carry the access out there, or re-execute the instruction).
    """

    action: Action
    regs: tuple[tuple[str, int], ...] = ()
    view: int = 0

    CONTINUE: ClassVar[EventResponse]
    SINGLESTEP: ClassVar[EventResponse]
    SKIP: ClassVar[EventResponse]

    @staticmethod
    def set_regs(regs: dict[str, int]) -> EventResponse:
        return EventResponse(Action.SET_REGS, tuple(regs.items()))

    @staticmethod
    def emulate(view: int = 0) -> EventResponse:
        return EventResponse(Action.EMULATE, view=view)

    @staticmethod
    def switch_view(view: int) -> EventResponse:
        return EventResponse(Action.SWITCH_VIEW, view=view)


EventResponse.CONTINUE = EventResponse(Action.CONTINUE)
EventResponse.SINGLESTEP = EventResponse(Action.SINGLESTEP)
EventResponse.SKIP = EventResponse(Action.SKIP)


Callback = Callable[["Vmi", "EventInfo"], "EventResponse | None"]


@dataclass(eq=False)
class Event:
    """A registered event (identity is the registration: ``clear_event(event)``)."""

    kind: EventKind
    callback: Callback
    vcpu: int | None = None  # SINGLESTEP
    address: int | None = None  # BREAKPOINT: guest linear address
    gfn: int | None = None  # MEMORY: the frame (None: every violation)
    trap: int = 0  # MEMORY: READ|WRITE|EXEC bits (hv/altp2m.py) to report
    hits: int = 0  # callbacks made

    @classmethod
    def singlestep(cls, vcpu: int, callback: Callback) -> Event:
        return cls(EventKind.SINGLESTEP, callback, vcpu=vcpu)

    @classmethod
    def breakpoint(cls, address: int, callback: Callback) -> Event:
        return cls(EventKind.BREAKPOINT, callback, address=address & ((1 << 64) - 1))

    @classmethod
    def memory(cls, gfn: int | None, trap: str, callback: Callback) -> Event:
        """``trap``: the accesses to report, letters of "rwx" (ignored for gfn None)."""
        if set(trap) - set("rwx") or (gfn is not None and not trap):
            raise ValueError(f"trap must be letters of 'rwx', got {trap!r}")
        bits = (READ if "r" in trap else 0) | (WRITE if "w" in trap else 0) | (
            EXEC if "x" in trap else 0)
        return cls(EventKind.MEMORY, callback, gfn=gfn, trap=bits)

    @classmethod
    def int3(cls, callback: Callback) -> Event:
        return cls(EventKind.INT3, callback)

    @classmethod
    def cr3(cls, callback: Callback) -> Event:
        return cls(EventKind.CR3, callback)


@dataclass(frozen=True, slots=True)
class EventInfo:
    """What a callback is told: the event, its kind at this hit, the vCPU, RIP, DR6;
    for memory events the address, the access ("r", "w" or "x"), its size, the
    data of a write (``value``) and the view it was seen in; for CR3 events the
    new and old value."""

    event: Event
    kind: EventKind
    vcpu: int
    rip: int
    dr6: int = 0
    gpa: int = 0
    access: str = ""
    view: int = 0
    size: int = 0
    value: int = 0
    old_value: int = 0


def guest_debug(step: bool, breakpoints: list[int | None],
                sw_bp: bool = False) -> s.kvm_guest_debug | None:
    """The KVM_SET_GUEST_DEBUG state for single-stepping (``step``), the DR0-3
    execute breakpoints ``breakpoints`` (slot i: an address or None) and
    int3 interception (``sw_bp``: a debug exit with exception 3 on KVMs that
    give one; this one reports int3 as an emulation failure anyway); None
    when nothing is wanted (guest debug off)."""
    armed = [(i, a) for i, a in enumerate(breakpoints[:MAX_BREAKPOINTS]) if a is not None]
    if not step and not armed and not sw_bp:
        return None
    dbg = s.kvm_guest_debug()
    dbg.control = k.KVM_GUESTDBG_ENABLE
    if step:
        dbg.control |= k.KVM_GUESTDBG_SINGLESTEP
    if sw_bp:
        dbg.control |= k.KVM_GUESTDBG_USE_SW_BP
    if armed:
        dbg.control |= k.KVM_GUESTDBG_USE_HW_BP
        dr7 = _DR7_RESERVED_1
        for i, address in armed:
            dbg.arch.debugreg[i] = address
            dr7 |= 1 << (2 * i)  # L<i>; RW<i> = LEN<i> = 00: execute
        dbg.arch.debugreg[7] = dr7
    return dbg
