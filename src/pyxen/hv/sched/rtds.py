"""RTDS: Xen's real-time deferrable-server scheduler (global EDF).

Design (after Xen 4.12's sched_rt.c; our own code)
--------------------------------------------------
Each vCPU is a deferrable server with a ``period`` and a ``budget`` (µs in
the parameters, ns inside).  Its periods are a fixed grid from time 0: at
the start of each one its budget is refilled and its deadline becomes the
period's end.  While it runs it burns budget; budget it does not use is
kept until the deadline (deferrable) and lost then.  A vCPU that has used
its budget is *depleted* until its next period -- unless it has the
``extratime`` flag, in which case it is refilled at once one priority level
lower (level 0 runs before level 1, ...), so it only gets time nobody with
a reservation wants.

Scheduling is preemptive global EDF: one runqueue of waiting vCPUs ordered
by (level, deadline); a pCPU runs the first one it may run (hard affinity)
unless its current vCPU is earlier.  A slice lasts until the budget is used
up.  When a vCPU becomes runnable (wake, replenishment of a depleted one,
preemption), a pCPU is tickled: its last pCPU if idle, else any idle pCPU,
else the pCPU running the latest-deadline vCPU if that is later than its
own.  If the vCPUs' total utilisation (budget/period) is at most the number
of pCPUs and each vCPU's at most one, every vCPU receives its budget in
every period under global EDF except in rare high-load corner cases; the
tests check feasible sets well below the bound.

Time and tickles
----------------
Replenishments are Xen's replenishment timer: ``next_timer()`` is the
earliest deadline of a runnable vCPU and ``on_timer`` runs every
replenishment due (so does any call whose ``now`` has passed one:
``_catch_up``).  A pCPU that must pick again because of a decision made
elsewhere (a replenished vCPU, a vCPU preempted by another) is queued in
``_pending`` and returned by the call that decided it -- in
``Decision.tickle`` for ``pick_next``.  ``_tickled`` holds the pCPUs asked
to pick that have not yet done so (Xen's ``prv->tickled``): they are not
tickled twice, and only they re-run the EDF comparison for a current vCPU
that still has budget; the others keep it until its budget is used up.

Invariants: a runnable vCPU is in exactly one of the runqueue, the depleted
set, or current on a pCPU; runnable vCPUs (and a current one until its pCPU
decides again) are in the replenishment queue, blocked ones are not; the
caller serialises all calls.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyxen.hv.sched.base import SchedulerBase, TickleQueue
from pyxen.hv.sched.interface import (
    Decision,
    SchedParamError,
    SchedVcpu,
    Topology,
    Tracer,
)

NS_PER_US = 1_000
DEFAULT_PERIOD_US = 10_000
DEFAULT_BUDGET_US = 4_000
MIN_PERIOD_US = 10  # Xen's RTDS_MIN_PERIOD: shorter periods cost more than they give
MIN_BUDGET_US = 10  # Xen's RTDS_MIN_BUDGET
MAX_PERIOD_US = (1 << 32) - 1  # the domctl carries µs in 32 bits
DEFAULT_EXTRATIME = True  # Xen 4.10+ creates vCPUs with RTDS_extratime set

FOREVER_NS = 1 << 60


@dataclass
class _Params:
    period_us: int = DEFAULT_PERIOD_US
    budget_us: int = DEFAULT_BUDGET_US
    extratime: bool = DEFAULT_EXTRATIME

    def as_dict(self) -> dict[str, Any]:
        return {"period": self.period_us, "budget": self.budget_us,
                "extratime": int(self.extratime)}


@dataclass(eq=False)
class _Rvcpu:
    v: SchedVcpu
    period: int  # ns
    budget: int  # ns
    extratime: bool
    cur_budget: int = 0
    deadline: int = 0  # end of the current period; 0: never replenished
    level: int = 0  # extratime priority level, 0 = within the reservation
    last_start: int = 0  # budget burnt up to here while current
    depleted: bool = False
    queued: bool = False  # in the runqueue
    in_replq: bool = False
    yielded: bool = False
    removed: bool = False
    misses: int = 0  # periods that ended with budget left while runnable

    def key(self) -> tuple[int, int]:
        return (self.level, self.deadline)


_deadline: Callable[[_Rvcpu], int] = operator.attrgetter("deadline")


class Rtds(SchedulerBase, TickleQueue):
    """Xen's RTDS scheduler; see the module docstring."""

    name = "rtds"

    def __init__(self, pcpus: Sequence[int], topology: Topology | None = None,
                 tracer: Tracer | None = None, params: dict[str, Any] | None = None) -> None:
        SchedulerBase.__init__(self, pcpus, topology, tracer)
        TickleQueue.__init__(self)
        self._domains: dict[int, _Params] = {}
        self._vcpus: dict[int, list[_Rvcpu]] = {}  # domid -> its vCPUs
        self._runq: list[_Rvcpu] = []  # waiting, by (level, deadline)
        self._depleted: list[_Rvcpu] = []
        self._replq: list[_Rvcpu] = []  # runnable, by deadline
        self._curr: dict[int, _Rvcpu | None] = {p: None for p in self.pcpus}
        if params:
            self.set_global_params(params)

    # -- vCPU lifecycle --------------------------------------------------------------------

    def insert_vcpu(self, v: SchedVcpu) -> None:
        p = self._domains.setdefault(v.domid, _Params())
        r = _Rvcpu(v, p.period_us * NS_PER_US, p.budget_us * NS_PER_US, p.extratime)
        v.priv, v.runnable, v.pcpu = r, False, None
        self._vcpus.setdefault(v.domid, []).append(r)

    def remove_vcpu(self, v: SchedVcpu, now: int) -> list[int]:
        self._catch_up(now)
        r = self._r(v)
        r.removed = True
        self._unqueue(r)
        self._replq_remove(r)
        mine = self._vcpus[v.domid]
        mine.remove(r)
        if not mine:
            del self._vcpus[v.domid]
            del self._domains[v.domid]
        if v.pcpu is not None:
            self._ask(v.pcpu)
        return self._drain()

    def wake(self, v: SchedVcpu, now: int) -> list[int]:
        self._catch_up(now)
        r = self._r(v)
        if v.runnable or r.removed:
            return self._drain()
        v.runnable = True
        if v.pcpu is not None:  # blocked and woken before its pCPU decided again
            self.trace.record("wake", now, v.pcpu, v, deadline=r.deadline,
                              budget=r.cur_budget)
            return self._drain()
        if now >= r.deadline:
            self._replenish(r, now)  # a new period started while it slept
        self._replq_insert(r)
        self.trace.record("wake", now, v.last_pcpu, v, deadline=r.deadline,
                          budget=r.cur_budget)
        if r.depleted:
            self._depleted.append(r)
        else:
            self._runq_insert(r)
            self._tickle(r)
        return self._drain()

    def sleep(self, v: SchedVcpu, now: int) -> list[int]:
        self._catch_up(now)
        r = self._r(v)
        if v.runnable:
            v.runnable = False
            self.trace.record("block", now, v.pcpu, v, budget=r.cur_budget)
            if v.pcpu is not None:
                self._ask(v.pcpu)  # it leaves the replenishment queue when it stops
            else:
                self._unqueue(r)
                self._replq_remove(r)
        return self._drain()

    def yield_(self, v: SchedVcpu, now: int) -> None:
        # Xen's RTDS has no yield: the pCPU decides again and EDF picks (maybe v again).
        self._catch_up(now)
        self._r(v).yielded = True
        self.trace.record("yield", now, v.pcpu, v)

    def set_affinity(self, v: SchedVcpu, hard: frozenset[int], soft: frozenset[int],
                     now: int) -> list[int]:
        if not hard & set(self.pcpus):
            raise ValueError(f"{v.name}: hard affinity {sorted(hard)} has none of our pCPUs")
        self._catch_up(now)
        r = self._r(v)
        v.hard_affinity, v.soft_affinity = hard, soft
        if v.pcpu is not None and v.pcpu not in hard:
            self._ask(v.pcpu)  # it is requeued (and others tickled) when that pCPU decides
        elif r.queued:
            self._tickle(r)
        return self._drain()

    # -- SchedulerTimer: the replenishment timer ----------------------------------------------

    def next_timer(self) -> int | None:
        return self._replq[0].deadline if self._replq else None

    def on_timer(self, now: int) -> list[int]:
        self._catch_up(now)
        return self._drain()

    # -- the decision ----------------------------------------------------------------------

    def pick_next(self, pcpu: int, now: int) -> Decision:
        self._catch_up(now)
        tickled = pcpu in self._tickled
        self._tickled.discard(pcpu)
        prev = self._curr[pcpu]
        keep = False
        if prev is not None:
            level = prev.level
            self._burn(prev, now)
            ok = (prev.v.runnable and not prev.removed and not prev.depleted
                  and pcpu in prev.v.hard_affinity)
            if ok and not tickled and not prev.yielded and prev.level == level:
                keep = True  # nobody asked this pCPU to change: budget left, keep going
            elif ok:
                best = self._first_for(pcpu)
                keep = best is None or prev.key() <= best.key()
            prev.yielded = False
            if not keep:
                self._leave(prev, now, pcpu, preempted=ok)
        if keep:
            assert prev is not None
            return self._run(pcpu, prev, now)
        nxt = self._first_for(pcpu)
        if nxt is None:
            self.trace.record("idle", now, pcpu, None, slice_ns=FOREVER_NS)
            return Decision(None, FOREVER_NS, tickle=tuple(self._drain(pcpu)))
        self._unqueue(nxt)
        self._curr[pcpu] = nxt
        nxt.last_start = now
        return self._run(pcpu, nxt, now)

    def _leave(self, r: _Rvcpu, now: int, pcpu: int, preempted: bool) -> None:
        """``r`` stops being current on ``pcpu``; queue it as its state says."""
        self._curr[pcpu] = None
        r.v.pcpu = None
        if r.removed:
            return
        if not r.v.runnable:
            self._replq_remove(r)
            return
        if r.depleted:
            self._depleted.append(r)
            return
        if preempted:
            self.trace.record("preempt", now, pcpu, r.v, budget=r.cur_budget)
        self._runq_insert(r)
        self._tickle(r, exclude=pcpu)  # rt_context_saved: it may preempt someone else

    def _run(self, pcpu: int, r: _Rvcpu, now: int) -> Decision:
        v = r.v
        migrated = v.last_pcpu is not None and v.last_pcpu != pcpu
        if migrated:
            self.trace.record("migrate", now, pcpu, v, from_pcpu=v.last_pcpu)
        v.pcpu = v.last_pcpu = pcpu
        slice_ns = max(1, r.cur_budget)  # until the budget is used up
        self.trace.record("run", now, pcpu, v, slice_ns=slice_ns, budget=r.cur_budget)
        return Decision(v, slice_ns, migrated, tuple(self._drain(pcpu)))

    def _first_for(self, pcpu: int) -> _Rvcpu | None:
        for r in self._runq:
            if pcpu in r.v.hard_affinity:
                return r
        return None

    def _tickle(self, r: _Rvcpu, exclude: int | None = None) -> None:
        """Xen's runq_tickle: ask the pCPU that should pick ``r`` up now, if any."""
        cands = [p for p in self.pcpus if p in r.v.hard_affinity and p not in self._tickled
                 and p != exclude]
        if not cands:
            return
        idle = [p for p in cands if self._curr[p] is None]
        if idle:
            p = r.v.last_pcpu if r.v.last_pcpu in idle else idle[0]
        else:
            def rank(q: int) -> tuple[int, int]:
                c = self._curr[q]
                assert c is not None
                return c.key()
            p = max(cands, key=rank)
            if rank(p) <= r.key():
                return
        self._ask(p)

    # -- budget ----------------------------------------------------------------------------

    def _burn(self, r: _Rvcpu, now: int) -> None:
        delta = now - r.last_start
        r.last_start = now
        if delta <= 0:
            return
        r.cur_budget -= delta
        if r.cur_budget <= 0:
            if r.extratime:
                r.level += 1
                r.cur_budget = r.budget
            else:
                r.cur_budget = 0
                r.depleted = True

    def _replenish(self, r: _Rvcpu, now: int) -> None:
        """Start the period containing ``now`` (Xen's rt_update_deadline; now >= deadline)."""
        r.deadline += ((now - r.deadline) // r.period + 1) * r.period
        r.cur_budget = r.budget
        r.level = 0
        r.last_start = now
        r.depleted = False
        self.trace.record("credit_reset", now, r.v.pcpu, r.v, deadline=r.deadline,
                          budget=r.budget)

    def _catch_up(self, now: int) -> None:
        """Replenish every runnable vCPU whose period ended by ``now`` (repl_timer_handler)."""
        done: list[_Rvcpu] = []
        refilled: list[_Rvcpu] = []  # were depleted: now waiting, someone may run them
        while self._replq and self._replq[0].deadline <= now:
            r = self._replq.pop(0)
            r.in_replq = False
            if r.v.pcpu is not None:
                self._burn(r, now)  # what it ran of the old period, up to now
            wanted = r.queued or (r.v.pcpu is not None and r.v.runnable)
            if r.cur_budget > 0 and r.level == 0 and wanted:
                r.misses += 1
            if r in self._depleted:
                self._depleted.remove(r)
                refilled.append(r)
            self._replenish(r, now)
            if r.queued or r in refilled:
                self._unqueue(r)
                self._runq_insert(r)
            done.append(r)
        for r in done:
            self._replq_insert(r)
            if r.v.pcpu is not None and self._runq:
                head = self._runq[0]
                if head.key() < r.key():
                    self._tickle(head)
            elif r in refilled:
                self._tickle(r)

    # -- queues ----------------------------------------------------------------------------

    # Both queues stay sorted (a key changes only while its vCPU is out of the
    # queue), so a binary search finds the place a walk from the head would: after
    # every entry with the same key.  Each replenishment re-queues its vCPU, which
    # made the walks quadratic with hundreds of vCPUs.

    def _runq_insert(self, r: _Rvcpu) -> None:
        self._runq.insert(bisect.bisect_right(self._runq, r.key(), key=_Rvcpu.key), r)
        r.queued = True

    def _unqueue(self, r: _Rvcpu) -> None:
        if r.queued:
            self._runq.remove(r)
            r.queued = False
        if r in self._depleted:
            self._depleted.remove(r)

    def _replq_insert(self, r: _Rvcpu) -> None:
        if r.in_replq:
            return
        self._replq.insert(bisect.bisect_right(self._replq, r.deadline, key=_deadline), r)
        r.in_replq = True

    def _replq_remove(self, r: _Rvcpu) -> None:
        if r.in_replq:
            self._replq.remove(r)
            r.in_replq = False

    # -- parameters ----------------------------------------------------------------------------

    def domain_params(self, domid: int) -> dict[str, Any]:
        """The domain's parameters (as last set for the whole domain), and each vCPU's."""
        out = self._domains.get(domid, _Params()).as_dict()
        out["vcpus"] = {r.v.vcpu_id: _vcpu_dict(r) for r in self._vcpus.get(domid, [])}
        return out

    def set_domain_params(self, domid: int, params: dict[str, Any], now: int) -> list[int]:
        """``period``/``budget`` (µs)/``extratime`` for every vCPU of the domain, and/or
        ``vcpus``: {vcpu_id: {period, budget, extratime}} for single vCPUs.

        New values take effect at each vCPU's next replenishment, as in Xen.
        """
        _check_keys(params, ("period", "budget", "extratime", "vcpus"), "")
        current = self._domains.get(domid, _Params())
        whole = _validated(params, current.period_us, current.budget_us, current.extratime,
                           "")
        per_vcpu: dict[int, _Params] = {}
        vcpus = params.get("vcpus", {})
        if not isinstance(vcpus, dict):
            raise SchedParamError("vcpus must map vCPU ids to parameter dicts")
        mine = {r.v.vcpu_id: r for r in self._vcpus.get(domid, [])}
        for key, vp in vcpus.items():
            vid = int(key) if isinstance(key, str) and key.isdigit() else key  # JSON keys
            if vid not in mine:
                raise SchedParamError(f"d{domid} has no vCPU {vid!r}")
            if not isinstance(vp, dict):
                raise SchedParamError(f"vcpus[{vid}] must be a dict of period/budget/extratime")
            _check_keys(vp, ("period", "budget", "extratime"), f"vcpus[{vid}].")
            base = whole if any(k in params for k in ("period", "budget", "extratime")) \
                else _Params(mine[vid].period // NS_PER_US, mine[vid].budget // NS_PER_US,
                             mine[vid].extratime)
            per_vcpu[vid] = _validated(vp, base.period_us, base.budget_us, base.extratime,
                                       f"vcpus[{vid}].")
        self._catch_up(now)
        if any(k in params for k in ("period", "budget", "extratime")):
            self._domains[domid] = whole
            for r in mine.values():
                _apply(r, whole)
        for vid, p in per_vcpu.items():
            _apply(mine[vid], p)
        return self._drain()

    def global_params(self) -> dict[str, Any]:
        return {}

    def set_global_params(self, params: dict[str, Any]) -> None:
        _check_keys(params, (), "")

    # -- debugging -------------------------------------------------------------------------

    def dump(self) -> str:
        lines = ["rtds: global EDF"]
        for p in self.pcpus:
            r = self._curr[p]
            tick = " (tickled)" if p in self._tickled else ""
            lines.append(f"  pCPU {p}{tick}: running {_describe(r) if r else 'idle'}")
        lines.append("  runq: " + ", ".join(_describe(r) for r in self._runq))
        lines.append("  depleted: " + ", ".join(_describe(r) for r in self._depleted))
        for domid in sorted(self._vcpus):
            d = self._domains[domid].as_dict()
            lines.append(f"  d{domid} period {d['period']} us budget {d['budget']} us "
                         f"extratime {d['extratime']}")
        return "\n".join(lines)

    def misses(self, v: SchedVcpu) -> int:
        """Periods in which runnable ``v`` did not get its whole budget."""
        return self._r(v).misses

    def _r(self, v: SchedVcpu) -> _Rvcpu:
        r = v.priv
        if not isinstance(r, _Rvcpu):
            raise ValueError(f"{v.name} is not in the rtds scheduler")
        return r


def _apply(r: _Rvcpu, p: _Params) -> None:
    r.period, r.budget, r.extratime = p.period_us * NS_PER_US, p.budget_us * NS_PER_US, \
        p.extratime


def _vcpu_dict(r: _Rvcpu) -> dict[str, Any]:
    return {"period": r.period // NS_PER_US, "budget": r.budget // NS_PER_US,
            "extratime": int(r.extratime)}


def _validated(params: dict[str, Any], period: int, budget: int, extratime: bool,
               where: str) -> _Params:
    period = params.get("period", period)
    budget = params.get("budget", budget)
    extra = params.get("extratime", int(extratime))
    for name, value in (("period", period), ("budget", budget), ("extratime", extra)):
        if not isinstance(value, int) or (isinstance(value, bool) and name != "extratime"):
            raise SchedParamError(f"{where}{name} must be an integer, not {value!r}")
    if not MIN_PERIOD_US <= period <= MAX_PERIOD_US:
        raise SchedParamError(f"{where}period {period} us is out of range: "
                              f"{MIN_PERIOD_US} to {MAX_PERIOD_US}")
    if not MIN_BUDGET_US <= budget <= period:
        raise SchedParamError(f"{where}budget {budget} us is out of range: "
                              f"{MIN_BUDGET_US} to the period ({period})")
    if extra not in (0, 1):
        raise SchedParamError(f"{where}extratime must be 0 or 1, not {extra!r}")
    return _Params(period, budget, bool(extra))


def _check_keys(params: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    if not isinstance(params, dict):
        raise SchedParamError(f"{where}parameters must be a dict")
    unknown = sorted(str(k) for k in set(params) - set(known))
    if unknown:
        raise SchedParamError(f"unknown parameter {where}{unknown[0]!r}"
                              f" (known: {', '.join(known) or 'none'})")


def _describe(r: _Rvcpu) -> str:
    state = " depleted" if r.depleted else ""
    level = f" L{r.level}" if r.level else ""
    return (f"{r.v.name}(dl {r.deadline} budget {r.cur_budget}/{r.budget}{level}"
            f" misses {r.misses}{state})")
