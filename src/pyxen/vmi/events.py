"""VMI events, the callbacks' answers, and the guest-debug state they need (pure).

An ``Event`` is registered with ``Vmi.register_event``; its callback runs
on the vCPU thread that hit it as ``callback(vmi, info) -> EventResponse``
(None counts as CONTINUE).  Kinds in this slice:

- ``Event.singlestep(vcpu, cb)``: one callback per instruction vCPU
  ``vcpu`` executes (``info.rip`` = the RIP after it).
- ``Event.breakpoint(address, cb)``: a hardware execute breakpoint (DR0-3)
  at a guest *linear* address, the same on every vCPU, at most 4 per
  domain (``info.rip`` = the address: the instruction has not run yet).

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


class Action(enum.Enum):
    CONTINUE = "continue"
    SINGLESTEP = "singlestep"
    SET_REGS = "set_regs"


@dataclass(frozen=True, slots=True)
class EventResponse:
    """What the vCPU does after a callback.

    ``EventResponse.CONTINUE``: go on.  ``EventResponse.SINGLESTEP``: execute
    one more instruction single-stepped and call the same callback again
    with a SINGLESTEP ``EventInfo`` (answer SINGLESTEP again to go on
    stepping).  ``EventResponse.set_regs({"rip": ...})``: write these
    registers (general ones, rip, rflags) and go on.
    """

    action: Action
    regs: tuple[tuple[str, int], ...] = ()

    CONTINUE: ClassVar[EventResponse]
    SINGLESTEP: ClassVar[EventResponse]

    @staticmethod
    def set_regs(regs: dict[str, int]) -> EventResponse:
        return EventResponse(Action.SET_REGS, tuple(regs.items()))


EventResponse.CONTINUE = EventResponse(Action.CONTINUE)
EventResponse.SINGLESTEP = EventResponse(Action.SINGLESTEP)


Callback = Callable[["Vmi", "EventInfo"], "EventResponse | None"]


@dataclass(eq=False)
class Event:
    """A registered event (identity is the registration: ``clear_event(event)``)."""

    kind: EventKind
    callback: Callback
    vcpu: int | None = None  # SINGLESTEP
    address: int | None = None  # BREAKPOINT: guest linear address
    hits: int = 0  # callbacks made

    @classmethod
    def singlestep(cls, vcpu: int, callback: Callback) -> Event:
        return cls(EventKind.SINGLESTEP, callback, vcpu=vcpu)

    @classmethod
    def breakpoint(cls, address: int, callback: Callback) -> Event:
        return cls(EventKind.BREAKPOINT, callback, address=address & ((1 << 64) - 1))


@dataclass(frozen=True, slots=True)
class EventInfo:
    """What a callback is told: the event, its kind at this hit, the vCPU, RIP, DR6."""

    event: Event
    kind: EventKind
    vcpu: int
    rip: int
    dr6: int


def guest_debug(step: bool, breakpoints: list[int | None]) -> s.kvm_guest_debug | None:
    """The KVM_SET_GUEST_DEBUG state for single-stepping (``step``) and the DR0-3
    execute breakpoints ``breakpoints`` (slot i: an address or None); None when
    nothing is wanted (guest debug off)."""
    armed = [(i, a) for i, a in enumerate(breakpoints[:MAX_BREAKPOINTS]) if a is not None]
    if not step and not armed:
        return None
    dbg = s.kvm_guest_debug()
    dbg.control = k.KVM_GUESTDBG_ENABLE
    if step:
        dbg.control |= k.KVM_GUESTDBG_SINGLESTEP
    if armed:
        dbg.control |= k.KVM_GUESTDBG_USE_HW_BP
        dr7 = _DR7_RESERVED_1
        for i, address in armed:
            dbg.arch.debugreg[i] = address
            dr7 |= 1 << (2 * i)  # L<i>; RW<i> = LEN<i> = 00: execute
        dbg.arch.debugreg[7] = dr7
    return dbg
