"""null: Xen's static-partitioning scheduler -- one vCPU per pCPU, no time sharing.

Design (after Xen 4.12's sched_null.c; our own code)
----------------------------------------------------
Each pCPU is *assigned* at most one vCPU and runs only that one, for as long
as it is runnable: slices are "infinite" (``FOREVER_NS``) and a pCPU whose
vCPU blocks simply idles.  A vCPU is assigned when it is inserted, to a free
pCPU of its hard affinity (its last pCPU if free, else a soft-affine one,
else the lowest numbered).  A vCPU that finds no free pCPU waits, unassigned,
in a FIFO wait queue; it is also offered a free pCPU when it wakes.  When a
pCPU is freed (its vCPU is removed or moves away because of a new hard
affinity) the first waiting vCPU that may run there takes it -- soft-affine
waiters first, then any.

As in 4.12, a vCPU keeps its pCPU while it is blocked or down (4.13 later
frees the pCPU of a vCPU that goes down; our ``sleep`` cannot tell the two
apart).  Soft affinity only matters when a vCPU is assigned: a new soft
affinity does not move an assigned vCPU.  There are no parameters.

Invariants: ``_assigned[p]`` is the vCPU assigned to pCPU p (or None) and
its ``pcpu_of`` is p; a waiting vCPU has no pCPU; ``_curr[p]`` is only ever
the vCPU assigned to p or, for a moment after its affinity changed, the one
that was: its new pCPU idles until p decides again, and p's decision
tickles it (``Decision.tickle``).  The caller serialises all calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyxen.hv.sched.base import SchedulerBase
from pyxen.hv.sched.interface import (
    Decision,
    SchedParamError,
    SchedVcpu,
    Topology,
    Tracer,
)

FOREVER_NS = 1 << 60  # "infinite": the pCPU keeps its vCPU until it blocks


@dataclass(eq=False)
class _Nvcpu:
    v: SchedVcpu
    pcpu_of: int | None = None  # assigned pCPU; None: waiting (or not placed yet)
    removed: bool = False


class Null(SchedulerBase):
    """Xen's null scheduler; see the module docstring."""

    name = "null"

    def __init__(self, pcpus: Sequence[int], topology: Topology | None = None,
                 tracer: Tracer | None = None, params: dict[str, Any] | None = None) -> None:
        SchedulerBase.__init__(self, pcpus, topology, tracer)
        self._assigned: dict[int, _Nvcpu | None] = {p: None for p in self.pcpus}
        self._curr: dict[int, SchedVcpu | None] = {p: None for p in self.pcpus}
        self._waitq: list[_Nvcpu] = []
        if params:
            self.set_global_params(params)

    # -- vCPU lifecycle --------------------------------------------------------------------

    def insert_vcpu(self, v: SchedVcpu) -> None:
        n = _Nvcpu(v)
        v.priv, v.runnable, v.pcpu = n, False, None
        if self._assign_free(n) is None:
            self._waitq.append(n)

    def remove_vcpu(self, v: SchedVcpu, now: int) -> list[int]:
        n = self._n(v)
        tickles: list[int] = []
        if n in self._waitq:
            self._waitq.remove(n)
        if n.pcpu_of is not None:
            p = n.pcpu_of
            self._unassign(n)
            tickles += self._refill(p, now)
        if v.pcpu is not None and v.pcpu not in tickles:
            tickles.insert(0, v.pcpu)
        n.removed = True
        return tickles

    def wake(self, v: SchedVcpu, now: int) -> list[int]:
        n = self._n(v)
        if v.runnable or n.removed:
            return []
        v.runnable = True
        if n.pcpu_of is None and n in self._waitq and self._assign_free(n) is not None:
            self._waitq.remove(n)
        self.trace.record("wake", now, n.pcpu_of, v)
        p = n.pcpu_of
        if p is None or v.pcpu == p:
            return []  # waiting for a pCPU, or still current on its own
        return [p]

    def sleep(self, v: SchedVcpu, now: int) -> list[int]:
        if not v.runnable:
            return []
        v.runnable = False
        self.trace.record("block", now, v.pcpu, v)
        return [v.pcpu] if v.pcpu is not None else []

    def yield_(self, v: SchedVcpu, now: int) -> None:
        self.trace.record("yield", now, v.pcpu, v)  # nobody else may use the pCPU

    def set_affinity(self, v: SchedVcpu, hard: frozenset[int], soft: frozenset[int],
                     now: int) -> list[int]:
        if not hard & set(self.pcpus):
            raise ValueError(f"{v.name}: hard affinity {sorted(hard)} has none of our pCPUs")
        n = self._n(v)
        v.hard_affinity, v.soft_affinity = hard, soft
        tickles: list[int] = []
        if n.pcpu_of is not None and n.pcpu_of not in hard:
            old = n.pcpu_of
            self._unassign(n)
            if v.pcpu == old:
                tickles.append(old)  # its decision tickles v's new pCPU
            tickles += [p for p in self._refill(old, now) if p not in tickles]
            if self._assign_free(n) is None:
                self._waitq.append(n)
        elif n.pcpu_of is None and n in self._waitq and self._assign_free(n) is not None:
            self._waitq.remove(n)
        p = n.pcpu_of
        if p is not None and v.runnable and v.pcpu is None:
            tickles.append(p)
        return tickles

    # -- the decision ----------------------------------------------------------------------

    def pick_next(self, pcpu: int, now: int) -> Decision:
        prev = self._curr[pcpu]
        n = self._assigned[pcpu]
        if n is None:
            self._refill(pcpu, now)
            n = self._assigned[pcpu]
        v = n.v if n is not None and n.v.runnable else None
        if v is not None and v.pcpu is not None and v.pcpu != pcpu:
            v = None  # still on the pCPU it had: that one tickles us when it lets go
        tickle: tuple[int, ...] = ()
        if prev is not None and prev is not v:
            prev.pcpu = None
            moved = self._n(prev).pcpu_of
            if prev.runnable:
                self.trace.record("preempt", now, pcpu, prev)
                if moved is not None and moved != pcpu:
                    tickle = (moved,)  # it was assigned elsewhere meanwhile
        self._curr[pcpu] = v
        if v is None:
            self.trace.record("idle", now, pcpu, None, slice_ns=FOREVER_NS)
            return Decision(None, FOREVER_NS, tickle=tickle)
        migrated = v.last_pcpu is not None and v.last_pcpu != pcpu
        if migrated:
            self.trace.record("migrate", now, pcpu, v, from_pcpu=v.last_pcpu)
        v.pcpu = v.last_pcpu = pcpu
        self.trace.record("run", now, pcpu, v, slice_ns=FOREVER_NS)
        return Decision(v, FOREVER_NS, migrated, tickle)

    # -- assignment ----------------------------------------------------------------------------

    def _assign_free(self, n: _Nvcpu) -> int | None:
        """Assign ``n`` to a free pCPU of its hard affinity (soft first); None if none."""
        v = n.v
        free = [p for p in self.pcpus if p in v.hard_affinity and self._assigned[p] is None]
        if not free:
            return None
        soft = [p for p in free if p in v.soft_affinity]
        if v.last_pcpu in free and (not soft or v.last_pcpu in soft):
            p = v.last_pcpu
        else:
            p = (soft or free)[0]
        self._assigned[p] = n
        n.pcpu_of = p
        return p

    def _unassign(self, n: _Nvcpu) -> None:
        assert n.pcpu_of is not None
        self._assigned[n.pcpu_of] = None
        n.pcpu_of = None

    def _refill(self, pcpu: int, now: int) -> list[int]:
        """Give free ``pcpu`` to the first waiter that may use it; [pcpu] if it should run."""
        for soft_pass in (True, False):
            for n in self._waitq:
                v = n.v
                if pcpu not in v.hard_affinity:
                    continue
                if soft_pass and pcpu not in v.soft_affinity:
                    continue
                self._waitq.remove(n)
                self._assigned[pcpu] = n
                n.pcpu_of = pcpu
                self.trace.record("migrate", now, pcpu, v, from_pcpu=-1)
                return [pcpu] if v.runnable else []
        return []

    # -- parameters and debugging --------------------------------------------------------------

    def domain_params(self, domid: int) -> dict[str, Any]:
        return {}

    def set_domain_params(self, domid: int, params: dict[str, Any], now: int) -> list[int]:
        if params:
            raise SchedParamError(f"the null scheduler has no parameters "
                                  f"(got {sorted(params)[0]!r})")
        return []

    def global_params(self) -> dict[str, Any]:
        return {}

    def set_global_params(self, params: dict[str, Any]) -> None:
        if params:
            raise SchedParamError(f"the null scheduler has no parameters "
                                  f"(got {sorted(params)[0]!r})")

    def dump(self) -> str:
        lines = ["null: one vCPU per pCPU"]
        for p in self.pcpus:
            n = self._assigned[p]
            cur = self._curr[p]
            who = n.v.name if n is not None else "free"
            state = "running" if cur is not None else "idle"
            lines.append(f"  pCPU {p}: {who}, {state}")
        lines.append("  waiting: " + ", ".join(n.v.name for n in self._waitq))
        return "\n".join(lines)

    def _n(self, v: SchedVcpu) -> _Nvcpu:
        n = v.priv
        if not isinstance(n, _Nvcpu):
            raise ValueError(f"{v.name} is not in the null scheduler")
        return n
