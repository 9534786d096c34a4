"""Hypercall dispatch: calling convention, privilege check, the table.

One ``HypercallTable`` per hypervisor maps numbers to workers.  A worker
gets a ``Call`` (who is calling, in which mode, and access to the caller's
linear address space) and the six argument registers, and returns the
value for RAX.  Workers raise ``HypercallError`` for Xen errors; a guest
fault while copying becomes -EFAULT.  Nothing a guest passes can make an
exception leave the per-vCPU ``HypercallTable.server`` (one Python frame: the
hot path): anything unexpected is logged as a pyxen bug and crashes the
calling domain only.

Preemption (Xen's hypercall_preempt_check / hypercall_create_continuation):
a worker looping over guest-sized input calls ``Call.preempted()`` between
items (never before the first, so every invocation makes progress) and, when
it is true, raises ``Continuation`` with the arguments that restart the
hypercall where it stopped (the progress encoded as Xen encodes it: memory_op
in cmd's start-extent bits, grant_table_op as an advanced uop and a smaller
count).  The server has the vCPU rewrite the guest's registers
and rewind RIP (``vcpu_exits.restart_hypercall``), and returns the hypercall
number, which is what RAX holds on the way back into the guest (as in Xen).
``preempted()`` is true when the vCPU has a request that must not wait for
the end of the hypercall: a pause, a stop, a scheduler preemption, an NMI,
an event or APIC interrupt to deliver (vcpu_control.PREEMPTING).  A
continued hypercall therefore never holds up ``Domain.pause``, a destroy or
the scheduler for longer than one item.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyxen.abi.errno import XenErrno
from pyxen.abi.xen import Hypercall
from pyxen.hv.errors import HypercallError
from pyxen.hv.vcpu_control import PREEMPTING
from pyxen.memory import GuestAccess, GuestFault, PagingState

if TYPE_CHECKING:
    from pyxen.hv.domain import Domain
    from pyxen.hv.vcpu import VcpuRunner

# Xen's NR_hypercalls: numbers at or above it are -ENOSYS.
NR_HYPERCALLS = 64


class Continuation(Exception):
    """Raised by a worker at a preemption point: restart the hypercall with ``args``
    (the hypercall's arguments, first to last; those not given keep their value)."""

    def __init__(self, *args: int) -> None:
        super().__init__(*args)


class CannotContinue(Exception):
    """The guest's code at the hypercall's exit is not an OUT to the hypercall port
    (another vCPU rewrote or unmapped it): the hypercall cannot be restarted."""


class Call:
    """One hypercall in flight: the caller and its view of memory."""

    __slots__ = ("_guest", "compat", "domain", "vcpu")

    def __init__(self, vcpu: VcpuRunner, compat: bool) -> None:
        self.vcpu = vcpu
        self.domain: Domain = vcpu.domain
        self.compat = compat
        self._guest: GuestAccess | None = None

    @property
    def guest(self) -> GuestAccess:
        """Copy to and from the caller's linear addresses (made on first use)."""
        if self._guest is None:
            sregs = self.vcpu.kvm.sregs
            paging = PagingState(sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer)
            self._guest = GuestAccess(self.domain.memory, paging)
        return self._guest

    def preempted(self) -> bool:
        """Xen's hypercall_preempt_check: the calling vCPU has a request to act on."""
        return bool(self.vcpu.control.requests & PREEMPTING)

    @property
    def ulong_mask(self) -> int:
        """Mask for an ``unsigned long`` of the caller's ABI."""
        return 0xFFFF_FFFF if self.compat else 0xFFFF_FFFF_FFFF_FFFF


Worker = Callable[[Call, int, int, int, int, int, int], int]
# A vCPU's hypercall entry (both run loops call it): number, compat, the six arguments.
Server = Callable[[int, bool, int, int, int, int, int, int], int]


class HypercallTable:
    def __init__(self) -> None:
        self._workers: list[Worker | None] = [None] * NR_HYPERCALLS

    def register(self, nr: Hypercall, worker: Worker) -> None:
        self._workers[nr] = worker

    def registered(self) -> list[int]:
        return [nr for nr, w in enumerate(self._workers) if w is not None]

    def server(self, vcpu: VcpuRunner) -> Server:
        """What runs ``vcpu``'s hypercalls, in one Python frame (the hot path):
        the worker for ``nr`` with the caller's ``Call``, its exceptions made RAX.

        The vCPU's hypercalls run one at a time on its thread and no worker
        keeps its ``Call``, so one ``Call`` per convention is reused, its view of
        memory dropped at each hypercall (paging may have changed since)."""
        workers = self._workers
        calls = (Call(vcpu, False), Call(vcpu, True))

        def serve(nr: int, compat: bool, a1: int, a2: int, a3: int, a4: int, a5: int,
                  a6: int) -> int:
            call = calls[compat]
            call._guest = None
            worker = workers[nr] if 0 <= nr < NR_HYPERCALLS else None
            if worker is None:
                _report_missing(call.domain, nr)
                return -XenErrno.ENOSYS
            try:
                return worker(call, a1, a2, a3, a4, a5, a6)
            except Exception as e:
                return _failed(call, nr, e)

        return serve


def _failed(call: Call, nr: int, e: Exception) -> int:
    """RAX for a worker that raised ``e``."""
    if isinstance(e, HypercallError):
        return -e.errno
    if isinstance(e, GuestFault):
        return -XenErrno.EFAULT
    if isinstance(e, Continuation):
        return _restart(call, nr, e.args)
    # A pyxen bug: contain it to the calling domain.
    call.domain.log(f"pyxen bug in hypercall {_name(nr)}:\n{traceback.format_exc()}")
    call.domain.crash(f"internal error in hypercall {_name(nr)}")
    return -XenErrno.EFAULT


def _restart(call: Call, nr: int, args: tuple[int, ...]) -> int:
    """Have the guest issue hypercall ``nr`` again with ``args``; its RAX is ``nr``."""
    try:
        call.vcpu.restart_hypercall(nr, args, call.compat)
    except (*GuestFault, CannotContinue) as e:
        # The guest's code at the hypercall's OUT is gone (another vCPU
        # unmapped or rewrote it): there is no way back into the hypercall.
        call.domain.log(f"hypercall {_name(nr)} cannot be continued: {e}")
        call.domain.crash(f"hypercall {_name(nr)} cannot be continued")
        return -XenErrno.EFAULT
    return nr


def signed32(value: int) -> int:
    """A register truncated to a C ``int`` (the type of many hypercall cmd arguments)."""
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value & 0x8000_0000 else value


def _name(nr: int) -> str:
    try:
        return Hypercall(nr).name
    except ValueError:
        return str(nr)


def _report_missing(domain: Domain, nr: int) -> None:
    domain.log_once(
        f"hypercall-{nr}",
        f"hypercall {nr} ({_name(nr)}) is not implemented in pyxen: returning -ENOSYS",
    )


def report_missing_subop(call: Call, hypercall: str, subop: int, name: str = "") -> int:
    """Log once that a sub-op is not implemented and return -ENOSYS."""
    label = f"{subop} ({name})" if name else str(subop)
    call.domain.log_once(
        f"{hypercall}-{subop}",
        f"{hypercall} sub-op {label} is not implemented in pyxen: returning -ENOSYS",
    )
    return -XenErrno.ENOSYS
