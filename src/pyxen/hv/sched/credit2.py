"""Credit2: Xen 4.12's default vCPU scheduler (xen/common/sched_credit2.c).

Design
------
Credit is time.  Every vCPU holds ``credit`` in nanoseconds of CPU time; a
running vCPU burns it at ``max_weight / weight`` credits per ns, where
``max_weight`` is the largest weight among the vCPUs of its runqueue, so
the heaviest vCPU burns 1 credit/ns and a vCPU of half the weight burns 2
(the division remainder is carried in ``residual``, so nothing is lost).
Each runqueue keeps its waiting vCPUs sorted by credit, highest first, and
a pCPU runs the head of its runqueue.  When the vCPU a pCPU is about to run
has no credit left (credit <= 0) and no vCPU was skipped to get to it, its
runqueue's epoch ends: every vCPU of that runqueue (running, waiting or
blocked) gets ``CREDIT_INIT`` more, clipped to ``CREDIT_INIT +
CARRYOVER_MAX``.  Resets are per runqueue, never global.  Over an epoch a
vCPU therefore runs in proportion to its weight; a vCPU that mostly sleeps
keeps a high credit and wins the pCPU as soon as it wakes, which is what
gives Credit2 its low wake-up latency without a separate boost.

A slice lasts until the vCPU's credit would reach 0, or reach the credit
of the head waiter if that one has credit left, never longer than the
budget of a capped vCPU, clamped to [max(MIN_TIMER, rest of the
ratelimit), MAX_TIMER].  The ratelimit (default 1 ms) also keeps a vCPU
that has run for less than it on its pCPU when the pCPU picks again, and a
pCPU is only preempted by a wake-up once its vCPU ran for
``ratelimit - 50 µs`` (the tickle tolerance).

Runqueues are built from the topology (one per pCPU, core, socket, node,
or one for all; default socket).  A vCPU belongs to one runqueue: it is
placed there on insertion (the runqueue with the lowest load that has pCPUs
in its soft, else hard, affinity) and stays on wake-up.  Load is tracked
as exponentially decaying averages in fixed point (window 2^30 ns, µs
granularity, 18 fractional bits) of the number of runnable vCPUs of each
runqueue and of each vCPU's runnability.  Whenever a runqueue resets its
credits, the pCPU doing it also balances: it finds the runqueue whose
average load differs most from its own and, if the difference is worth it
(one full vCPU of load while both are under capacity, 1/8 of one when
overloaded), pushes one of its vCPUs, pulls one, or swaps a pair --
whichever leaves the two averages closest.  Waking vCPUs tickle an idle
pCPU of their runqueue (a fully idle core first, soft affinity first), else
the busy pCPU whose running vCPU they beat by the most credit (with
migration resistance and soft-affinity bonuses); a vCPU only moves to
another pCPU of its runqueue if it has MIGRATE_RESIST more credit than what
runs there, and gets MIGRATE_COMPENSATION credit when it does.

Caps: a capped domain gets ``cap% x cap_period`` of budget per period,
refilled every period.  A vCPU grabs a quota from the domain's pool when it
is picked, burns it while it runs and gives back what is left when it is
descheduled; a vCPU that finds the pool empty is parked (not runnable for
the scheduler) until the refill, or until a sibling gives budget back.
Refills are computed lazily from the period whenever the budget is touched;
the scheduler asks for a timer (``next_timer``/``on_timer``) only when it
has parked vCPUs to release.

Invariants
----------
- A vCPU is in exactly one runqueue's ``vcpus`` list (while inserted); it
  is on that runqueue's ``runq`` only if it is runnable, not parked, and
  not running; a running vCPU is ``_current`` of exactly one pCPU.
- ``in_load`` says whether the vCPU is counted in its runqueue's load
  (runnable and not parked, whether queued or running); the load changes
  only together with that flag.
- The scheduler is not thread-safe: the caller (the dispatcher) serializes
  every call, as Xen's runqueue locks do.

Deviations from Xen 4.12
------------------------
- A capped vCPU found without budget while scanning the runqueue is taken
  off the runqueue (parked) and the scan continues; Xen stops the scan.
- ``balance_load`` moves the chosen vCPUs exactly as Xen does, but Xen's
  ``avgload`` and ``b_avgload`` are one average here (they are computed
  identically in 4.12).
- No SMT power-saving policy (``sched_smt_power_savings``) and no "pinned"
  fast path in tickling (it is a shortcut, the result is the same).
- A running vCPU's pCPU is told to re-pick through ``Decision.tickle`` and
  the return values of the calls, since the scheduler cannot raise a
  softirq itself.
- An idle pCPU takes the first eligible waiter whatever its credit; Xen
  compares credits with the idle vCPU's -2^30, so a vCPU that fell below
  that (a long overrun at weight 1 beside weight 65535) would never run.
- Before a domain has vCPUs its cap may be up to 100 x the pCPUs (Xen:
  100 x the domain's vCPUs, which is checked once it has some).

The records (per vCPU, runqueue, domain) and the arithmetic that decides
nothing by itself (load averages, budget refills, the best push/pull/swap)
are in ``credit2_state``.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Sequence
from typing import Any

from pyxen.hv.sched.credit2_state import (
    LOADAVG_GRANULARITY_SHIFT,
    DomainState,
    LoadAverages,
    Runqueue,
    VcpuState,
    cycle,
    int_param,
    refill,
    same_or_cycle,
    unique,
)
from pyxen.hv.sched.interface import (
    Decision,
    NullTracer,
    SchedParamError,
    SchedVcpu,
    Topology,
    Tracer,
)

US = 1_000
MS = 1_000_000

CREDIT_INIT = 10 * MS  # credit added at each reset: an epoch's worth of CPU time
MIN_TIMER = 500 * US  # shortest slice: below this, switching costs more than it buys
MAX_TIMER = CREDIT_INIT  # longest slice: one epoch
CARRYOVER_MAX = MIN_TIMER  # credit a vCPU may keep across a reset, beyond CREDIT_INIT
CREDIT_RESET = 0  # a reset happens when the next vCPU's credit is at or below this
IDLE_CREDIT = -(1 << 30)  # the idle vCPU's credit: anybody beats it
MIGRATE_COMPENSATION = 50 * US  # credit given to a vCPU for the cache it lost moving pCPU
RATELIMIT_TICKLE_TOLERANCE = 50 * US  # a vCPU this close to its ratelimit may be preempted
LOAD_PRECISION_SHIFT_MIN = 4

DEFAULT_WEIGHT = 256
WEIGHT_MIN, WEIGHT_MAX = 1, 65535
RATELIMIT_MIN_US, RATELIMIT_MAX_US = 100, 500_000  # XEN_SYSCTL_SCHED_RATELIMIT_MIN/MAX
RUNQUEUE_ARRANGEMENTS = ("cpu", "core", "socket", "node", "all")

DEFAULT_PARAMS: dict[str, Any] = {
    "ratelimit_us": 1000,  # sched_ratelimit_us
    "runqueue": "socket",  # credit2_runqueue
    "migrate_resist_us": 500,  # sched_credit2_migrate_resist
    "cap_period_ms": 10,  # credit2_cap_period_ms
    "load_window_shift": 30,  # credit2_load_window_shift
    "load_precision_shift": 18,  # credit2_load_precision_shift
    "balance_over": -3,  # credit2_balance_over
    "balance_under": 0,  # credit2_balance_under
}


_NULL_TRACER = NullTracer()


# v.priv, typed (attrgetter is C: this is the hottest call in the scheduler).
_priv: Callable[[SchedVcpu], VcpuState] = operator.attrgetter("priv")


def _negated_credit(v: SchedVcpu) -> int:
    """The runqueue's sort key: it is sorted by credit, highest first."""
    return -_priv(v).credit


def _ratelimit_param(value: Any) -> int:
    us = int_param("ratelimit_us", value, 0, RATELIMIT_MAX_US)
    if 0 < us < RATELIMIT_MIN_US:
        raise SchedParamError(
            f"ratelimit_us {us} is out of range: 0 (off) or {RATELIMIT_MIN_US}..{RATELIMIT_MAX_US}")
    return us


class Credit2:
    """Xen 4.12's Credit2 (see the module docstring)."""

    name = "credit2"

    def __init__(self, pcpus: Sequence[int], topology: Topology,
                 tracer: Tracer = _NULL_TRACER, params: dict[str, Any] | None = None) -> None:
        if not pcpus:
            raise SchedParamError("credit2 needs at least one pCPU")
        merged = dict(DEFAULT_PARAMS)
        for key, value in (params or {}).items():
            if key not in DEFAULT_PARAMS:
                raise SchedParamError(
                    f"unknown credit2 parameter {key!r} (known: {', '.join(DEFAULT_PARAMS)})")
            merged[key] = value
        self.ratelimit_us = _ratelimit_param(merged["ratelimit_us"])
        arrangement = merged["runqueue"]
        if arrangement not in RUNQUEUE_ARRANGEMENTS:
            raise SchedParamError(f"runqueue {arrangement!r} is not one of "
                                  f"{', '.join(RUNQUEUE_ARRANGEMENTS)}")
        self.arrangement: str = arrangement
        self.migrate_resist = int_param("migrate_resist_us", merged["migrate_resist_us"],
                                         0, 1_000_000) * US
        self.cap_period = int_param("cap_period_ms", merged["cap_period_ms"], 1, 10_000) * MS
        window = int_param("load_window_shift", merged["load_window_shift"],
                           LOADAVG_GRANULARITY_SHIFT + 1, 62)
        self.precision_shift = int_param("load_precision_shift",
                                         merged["load_precision_shift"],
                                         LOAD_PRECISION_SHIFT_MIN, 40)
        self.loads = LoadAverages(window, self.precision_shift)
        p = self.precision_shift
        self.balance_over = int_param("balance_over", merged["balance_over"], -p, 30)
        self.balance_under = int_param("balance_under", merged["balance_under"], -p, 30)

        self.pcpus = sorted(set(pcpus))
        self.pcpu_set = frozenset(self.pcpus)
        self.topology = topology
        self.trace = tracer
        self.runqueues: list[Runqueue] = []
        self._rq_of: dict[int, Runqueue] = {}
        by_key: dict[object, Runqueue] = {}
        for cpu in self.pcpus:
            rq_key = self._runqueue_key(cpu)
            rq = by_key.get(rq_key)
            if rq is None:
                rq = by_key[rq_key] = Runqueue(len(self.runqueues), [])
                self.runqueues.append(rq)
            rq.pcpus.append(cpu)
            rq.idle.add(cpu)
            self._rq_of[cpu] = rq
        for rq in self.runqueues:
            rq.pcpu_set = frozenset(rq.pcpus)
            rq.pick_bias = rq.pcpus[0]
        self._siblings: dict[int, list[int]] = {}  # pCPU -> the pCPUs of its core
        cores: dict[tuple[int, int], list[int]] = {}
        for cpu in self.pcpus:
            core = (topology.socket_of.get(cpu, 0), topology.core_of.get(cpu, cpu))
            cores.setdefault(core, []).append(cpu)
            self._siblings[cpu] = cores[core]
        self._current: dict[int, SchedVcpu | None] = {cpu: None for cpu in self.pcpus}
        self._run_start: dict[int, int] = {cpu: 0 for cpu in self.pcpus}
        self._domains: dict[int, DomainState] = {}
        self._capped: dict[int, DomainState] = {}  # the domains whose cap is not 0

    def _runqueue_key(self, cpu: int) -> object:
        t = self.topology
        socket = t.socket_of.get(cpu, 0)
        return {
            "cpu": cpu,
            "core": (socket, t.core_of.get(cpu, cpu)),
            "socket": socket,
            "node": t.node_of.get(cpu, 0),
            "all": 0,
        }[self.arrangement]

    # -- joining and leaving -------------------------------------------------------------

    def insert_vcpu(self, v: SchedVcpu) -> None:
        self._check_affinity(v.name, v.hard_affinity)
        if isinstance(v.priv, VcpuState) and not v.priv.removed:
            raise ValueError(f"{v.name} is already in this scheduler")
        dom = self._domains.get(v.domid)
        if dom is None:
            dom = self._domains[v.domid] = DomainState(v.domid, DEFAULT_WEIGHT)
        cpu = self._pick_cpu(v, None)
        rq = self._rq_of[cpu]
        # A new vCPU starts at half a vCPU of load, as in Xen.
        v.priv = VcpuState(dom, rq, cpu, dom.weight, CREDIT_INIT,
                           avgload=1 << (self.precision_shift - 1))
        v.runnable = False
        v.pcpu = None
        rq.vcpus.append(v)
        self._joined(rq, v)
        dom.vcpus.append(v)
        self._set_quotas(dom)

    def remove_vcpu(self, v: SchedVcpu, now: int) -> list[int]:
        sv = self._known(v)
        dom, rq = sv.dom, sv.rq
        tickles: list[int] = []
        running_on = v.pcpu if v.pcpu is not None and self._current.get(v.pcpu) is v else None
        if sv.on_runq:
            self._runq_remove(v)
        self._load_dec(v, now)
        if sv.parked:
            dom.parked.remove(v)
            sv.parked = False
        if dom.cap and sv.budget > 0:
            tickles += self._return_budget(v, now)
        rq.vcpus.remove(v)
        self._left(rq, v)
        dom.vcpus.remove(v)
        if dom.vcpus:
            self._set_quotas(dom)
        else:
            del self._domains[dom.domid]
            self._capped.pop(dom.domid, None)
        sv.removed = True
        v.runnable = False
        if running_on is not None:
            rq.tickled.add(running_on)
            tickles.append(running_on)
        return unique(tickles)

    # -- wake, sleep, yield --------------------------------------------------------------

    def wake(self, v: SchedVcpu, now: int) -> list[int]:
        sv = self._known(v)
        if v.runnable:
            return []
        v.runnable = True
        self.trace.record("wake", now, sv.processor, v, credit=sv.credit)
        if v.pcpu is not None or sv.parked:
            return []  # still on its pCPU (it goes on running), or waiting for budget
        self._load_inc(v, now)
        self._runq_insert(v)
        return self._runq_tickle(v, now)

    def sleep(self, v: SchedVcpu, now: int) -> list[int]:
        sv = self._known(v)
        if not v.runnable:
            return []
        v.runnable = False
        self.trace.record("block", now, v.pcpu if v.pcpu is not None else sv.processor, v)
        if v.pcpu is not None:
            sv.rq.tickled.add(v.pcpu)
            return [v.pcpu]
        if sv.on_runq:
            self._runq_remove(v)
            self._load_dec(v, now)
        return []

    def yield_(self, v: SchedVcpu, now: int) -> None:
        sv = self._known(v)
        sv.yielding = True
        self.trace.record("yield", now, v.pcpu, v)

    # -- the decision --------------------------------------------------------------------

    def pick_next(self, pcpu: int, now: int) -> Decision:
        rq = self._rq_of[pcpu]
        rq.tickled.discard(pcpu)
        tickles: list[int] = []
        scurr = self._current[pcpu]
        keep = False  # may scurr go on running here?
        if scurr is not None:
            sc = _priv(scurr)
            if not sc.removed:
                self._burn(rq, scurr, now)
                if sc.dom.cap and sc.budget <= 0 and not sc.parked:
                    self._grab_budget(scurr, now)  # parks it if the pool is empty
                keep = (scurr.runnable and not sc.parked and sc.migrate_to is None
                        and pcpu in scurr.hard_affinity)

        snext, skipped = self._runq_candidate(rq, scurr, keep, pcpu, now)

        if snext is not None:
            sn = _priv(snext)
            if snext is not scurr:
                self._runq_remove(snext)
                snext.pcpu = pcpu  # scheduled here from now on (balancing must ask, not move)
            if skipped == 0 and sn.credit <= CREDIT_RESET:
                tickles += self._reset_credit(rq, pcpu, now, sn)
                tickles += self._balance_load(pcpu, now)
            if pcpu in tickles and sn.migrate_to is None:
                # Those were for scurr (out of budget, or asked to move): it is leaving.
                tickles = [p for p in tickles if p != pcpu]
                rq.tickled.discard(pcpu)
            sn.start_time = now
            sn.tickled_cpu = None
            if sn.processor != pcpu:
                sn.credit += MIGRATE_COMPENSATION
                sn.processor = pcpu
            rq.idle.discard(pcpu)
        else:
            rq.idle.add(pcpu)
            self.loads.update_runqueue(rq, 0, now)  # keep the average fresh while idle

        slice_ns = self._runtime(rq, pcpu, snext, snext is scurr, now)
        migrated = False
        if snext is not scurr:
            self._current[pcpu] = snext
            self._run_start[pcpu] = now
            if snext is not None:
                migrated = snext.last_pcpu is not None and snext.last_pcpu != pcpu
                self.trace.record("run", now, pcpu, snext, slice_ns=slice_ns,
                                  credit=_priv(snext).credit)
            if scurr is not None:
                tickles += self._deschedule(scurr, pcpu, now)
                if snext is None:
                    self.trace.record("idle", now, pcpu, None)
        return Decision(snext, slice_ns, migrated, tuple(unique(tickles)))

    def _runq_candidate(self, rq: Runqueue, scurr: SchedVcpu | None, keep: bool,
                        pcpu: int, now: int) -> tuple[SchedVcpu | None, int]:
        """Xen's runq_candidate: the vCPU to run next and how many waiters were skipped."""
        yielding = False
        snext: SchedVcpu | None = None
        if scurr is not None and not _priv(scurr).removed:
            sc = _priv(scurr)
            yielding = sc.yielding
            sc.yielding = False
            # Ratelimit: a vCPU that ran for less than it stays (unless it yields).
            if (keep and not yielding and self.ratelimit_us
                    and now - self._run_start[pcpu] < self.ratelimit_us * US):
                return scurr, 0
            soft_preempt = False
            if keep and self._has_soft(scurr):
                soft = scurr.soft_affinity & scurr.hard_affinity
                if pcpu not in soft:
                    # Leave this pCPU if an idle one of its soft affinity can take it.
                    soft_preempt = any(p in soft for p in rq.idle if p not in rq.tickled)
            if keep and not soft_preempt:
                snext = scurr
        best = _priv(snext).credit if snext is not None else IDLE_CREDIT
        skipped = 0
        for v in list(rq.runq):
            sv = _priv(v)
            if pcpu not in v.hard_affinity:
                skipped += 1
                continue
            if (sv.tickled_cpu is not None and sv.tickled_cpu != pcpu
                    and sv.tickled_cpu in rq.tickled):
                skipped += 1  # left for the pCPU that was tickled for it
                continue
            if (snext is not None and sv.processor != pcpu
                    and best + self.migrate_resist > sv.credit):
                skipped += 1  # not worth pulling from its pCPU
                continue
            # An idle pCPU takes any waiter (Xen compares with the idle credit, -2^30,
            # which a vCPU can fall below after a long overrun at a low weight).
            if snext is None or yielding or sv.credit > best:
                if sv.dom.cap and not self._grab_budget(v, now):
                    continue  # parked (and taken off the runqueue): look further
                snext = v
            break
        return snext, skipped

    def _runtime(self, rq: Runqueue, pcpu: int, snext: SchedVcpu | None, continuing: bool,
                 now: int) -> int:
        """Xen's csched2_runtime: the slice for snext (0 for idle: no deadline)."""
        if snext is None:
            return 0
        sn = _priv(snext)
        min_time = MIN_TIMER
        if self.ratelimit_us:
            ratelimit_min = self.ratelimit_us * US
            if continuing:
                ratelimit_min = self._run_start[pcpu] + ratelimit_min - now
            min_time = max(min_time, ratelimit_min)
        rt_credit = sn.credit
        if rq.runq:
            head = _priv(rq.runq[0])
            if head.credit > 0:
                rt_credit = sn.credit - head.credit
        time = rt_credit * sn.weight // rq.max_weight if rt_credit > 0 else 0
        if sn.dom.cap:
            time = min(time, sn.budget)
        if time < min_time:
            return min_time  # (may exceed MAX_TIMER with a long ratelimit, as in Xen)
        return min(time, MAX_TIMER)

    def _deschedule(self, v: SchedVcpu, pcpu: int, now: int) -> list[int]:
        """v stops running on pcpu (Xen's context_saved): requeue, move or drop it."""
        sv = _priv(v)
        v.pcpu = None
        v.last_pcpu = pcpu
        if sv.removed:
            return []
        tickles: list[int] = []
        if sv.dom.cap and sv.budget > 0:
            tickles += self._return_budget(v, now)
        eligible = v.runnable and not sv.parked
        if eligible:
            self.trace.record("preempt", now, pcpu, v, credit=sv.credit)
        else:
            self._load_dec(v, now)
        target, sv.migrate_to = sv.migrate_to, None
        rq = sv.rq
        if target is not None or not (v.hard_affinity & rq.pcpu_set):
            if target is not None and v.hard_affinity & target.pcpu_set:
                cpu = self._cycle_into(target, v)
            else:
                cpu = self._pick_cpu(v, sv)
            if self._rq_of[cpu] is not rq:
                self._move(v, self._rq_of[cpu], cpu, now)
            else:
                sv.processor = cpu
        elif sv.processor not in v.hard_affinity:
            sv.processor = self._cycle_into(rq, v)
        if eligible:
            self._runq_insert(v)
            tickles += self._runq_tickle(v, now)
        return tickles

    # -- credit ---------------------------------------------------------------------------

    def _burn(self, rq: Runqueue, v: SchedVcpu, now: int) -> None:
        """Charge v for the time since its start_time (Xen's burn_credits, t2c_update)."""
        sv = _priv(v)
        delta = now - sv.start_time
        if delta <= 0:
            return
        val = delta * rq.max_weight + sv.residual
        burned, sv.residual = divmod(val, sv.weight)
        sv.credit -= burned
        sv.start_time = now
        if sv.dom.cap:
            sv.budget -= delta

    def _reset_credit(self, rq: Runqueue, pcpu: int, now: int, snext: VcpuState) -> list[int]:
        """End of rq's epoch: everyone gets CREDIT_INIT (times m), clipped to the carry-over."""
        m = 1
        if snext.credit < -CREDIT_INIT:
            m += -snext.credit // CREDIT_INIT
        tickles: list[int] = []
        for v in rq.vcpus:
            sv = _priv(v)
            if v.pcpu is not None and self._current.get(v.pcpu) is v:
                self._burn(rq, v, now)
                if sv.dom.cap and sv.budget <= 0:
                    rq.tickled.add(v.pcpu)
                    tickles.append(v.pcpu)  # out of budget: its pCPU must park it
            sv.credit = min(sv.credit + m * CREDIT_INIT, CREDIT_INIT + CARRYOVER_MAX)
            sv.start_time = now
        self.trace.record("credit_reset", now, pcpu, None, rq=rq.id, m=m)
        return tickles

    def _update_max_weight(self, rq: Runqueue) -> None:
        rq.max_weight = max((_priv(v).weight for v in rq.vcpus), default=1)

    # A vCPU joined or left rq.vcpus: max_weight is recomputed (a walk of the
    # runqueue) only when the heaviest may have left.
    @staticmethod
    def _joined(rq: Runqueue, v: SchedVcpu) -> None:
        rq.max_weight = max(rq.max_weight, _priv(v).weight)

    def _left(self, rq: Runqueue, v: SchedVcpu) -> None:
        if _priv(v).weight >= rq.max_weight:
            self._update_max_weight(rq)

    # -- runqueues --------------------------------------------------------------------------

    def _runq_insert(self, v: SchedVcpu) -> None:
        """Insert after every waiter with at least as much credit (Xen's runq_insert).

        Xen walks the list; a binary search finds the same place, because a
        waiter's credit only changes in a reset, which keeps the order (it adds
        the same amount to everyone and clips them all at one ceiling).  With a
        thousand runnable vCPUs the walk was most of each decision's cost."""
        sv = _priv(v)
        runq = sv.rq.runq
        runq.insert(bisect.bisect_right(runq, -sv.credit, key=_negated_credit), v)
        sv.on_runq = True

    def _runq_remove(self, v: SchedVcpu) -> None:
        sv = _priv(v)
        sv.rq.runq.remove(v)
        sv.on_runq = False

    def _runq_tickle(self, v: SchedVcpu, now: int) -> list[int]:
        """Find a pCPU of v's runqueue to run v now, tickle it (Xen's runq_tickle)."""
        sv = _priv(v)
        rq = sv.rq
        cpu = sv.processor
        hard = v.hard_affinity & rq.pcpu_set
        steps = [v.soft_affinity & hard, hard] if self._has_soft(v) else [hard]
        idlers = {p for p in rq.idle if p not in rq.tickled}
        for mask in steps:
            candidates = idlers & mask
            if not candidates:
                continue
            whole_core = {p for p in candidates
                          if all(s in idlers for s in self._siblings[p])}
            chosen = (same_or_cycle(cpu, whole_core) if whole_core
                      else same_or_cycle(cpu, candidates))
            if chosen is not None:
                return self._tickle(chosen, rq, sv)
        # No idle pCPU: the busy one whose vCPU v beats by the most.
        best_score, chosen = 0, None
        soft = self._soft(v)
        others = [p for p in rq.pcpus
                  if p in hard and p not in rq.idle and p not in rq.tickled and p != cpu]
        if cpu in hard and cpu not in rq.idle and cpu not in rq.tickled:
            score = self._tickle_score(rq, v, cpu, now)
            if score > best_score:
                best_score, chosen = score, cpu
                if cpu in soft:
                    return self._tickle(cpu, rq, sv)
        for p in others:
            score = self._tickle_score(rq, v, p, now)
            if score > best_score:
                best_score, chosen = score, p
        return self._tickle(chosen, rq, sv) if chosen is not None else []

    def _tickle_score(self, rq: Runqueue, new: SchedVcpu, pcpu: int, now: int) -> int:
        cur = self._current[pcpu]
        if cur is None or _priv(cur).removed:
            return -1
        if (self.ratelimit_us * US > RATELIMIT_TICKLE_TOLERANCE
                and now - self._run_start[pcpu]
                <= self.ratelimit_us * US - RATELIMIT_TICKLE_TOLERANCE):
            return -1  # not preemptable yet (ratelimit)
        self._burn(rq, cur, now)
        sn, sc = _priv(new), _priv(cur)
        score = sn.credit - sc.credit
        if sn.processor != pcpu:
            score -= self.migrate_resist
        if score > 0:
            if pcpu in self._soft(new):
                score += CREDIT_INIT
            if pcpu not in self._soft(cur):
                score += CREDIT_INIT
        return score

    def _tickle(self, pcpu: int, rq: Runqueue, sv: VcpuState) -> list[int]:
        rq.tickled.add(pcpu)
        sv.tickled_cpu = pcpu
        return [pcpu]

    # -- placement ---------------------------------------------------------------------------

    def _pick_cpu(self, v: SchedVcpu, sv: VcpuState | None) -> int:
        """The least loaded runqueue for v, soft affinity first (Xen's csched2_cpu_pick)."""
        hard = v.hard_affinity & self.pcpu_set
        has_soft = self._has_soft(v)
        soft = v.soft_affinity & hard
        best: Runqueue | None = None
        best_soft: Runqueue | None = None
        best_load = best_soft_load = 0
        for rq in self.runqueues:
            if not hard & rq.pcpu_set:
                continue
            load = rq.avgload
            if sv is not None and sv.rq is rq:
                load = max(load - sv.avgload, 0)  # impartial: without v's own load
            if best is None or load < best_load:
                best, best_load = rq, load
            if has_soft and soft & rq.pcpu_set and (best_soft is None or load < best_soft_load):
                best_soft, best_soft_load = rq, load
        if best_soft is not None:
            rq, mask = best_soft, soft & best_soft.pcpu_set
        else:
            assert best is not None  # hard affinity was checked against our pCPUs
            rq, mask = best, hard & best.pcpu_set
        cpu = cycle(rq.pick_bias, mask)
        assert cpu is not None
        rq.pick_bias = cpu
        return cpu

    def _cycle_into(self, rq: Runqueue, v: SchedVcpu) -> int:
        cpu = cycle(rq.pick_bias, v.hard_affinity & rq.pcpu_set)
        assert cpu is not None  # callers check that v may run in rq
        rq.pick_bias = cpu
        return cpu

    def _move(self, v: SchedVcpu, target: Runqueue, cpu: int, now: int) -> None:
        """Reassign a vCPU that is neither running nor queued to another runqueue."""
        sv = _priv(v)
        old = sv.rq
        if sv.in_load:
            self.loads.update_runqueue(old, -1, now)
            self.loads.update_runqueue(target, 1, now)
        old.vcpus.remove(v)
        self._left(old, v)
        target.vcpus.append(v)
        sv.rq = target
        sv.processor = cpu
        self._joined(target, v)
        self.trace.record("migrate", now, cpu, v, from_rq=old.id, to_rq=target.id)

    def _migrate(self, v: SchedVcpu, target: Runqueue, now: int) -> list[int]:
        """Move v to another runqueue now, or ask its pCPU to let it go (Xen's migrate)."""
        sv = _priv(v)
        if v.pcpu is not None:
            sv.migrate_to = target
            sv.rq.tickled.add(v.pcpu)
            return [v.pcpu]
        queued = sv.on_runq
        if queued:
            self._runq_remove(v)
        self._move(v, target, self._cycle_into(target, v), now)
        if queued:
            self._runq_insert(v)
            return self._runq_tickle(v, now)
        return []

    def _soft(self, v: SchedVcpu) -> frozenset[int]:
        return v.soft_affinity or self.pcpu_set

    def _has_soft(self, v: SchedVcpu) -> bool:
        """Does v's soft affinity narrow its hard affinity (Xen's has_soft_affinity)?"""
        hard = v.hard_affinity & self.pcpu_set
        soft = v.soft_affinity & hard
        return bool(soft) and soft != hard

    def _check_affinity(self, name: str, hard: frozenset[int]) -> None:
        if not hard & self.pcpu_set:
            raise SchedParamError(f"{name}: hard affinity {sorted(hard)} has none of this "
                                  f"scheduler's pCPUs {self.pcpus}")

    def _known(self, v: SchedVcpu) -> VcpuState:
        sv = v.priv
        if not isinstance(sv, VcpuState) or sv.removed:
            raise ValueError(f"{v.name} is not in this scheduler")
        return sv

    # -- load tracking and balancing ------------------------------------------------------------

    def _load_inc(self, v: SchedVcpu, now: int) -> None:
        sv = _priv(v)
        if not sv.in_load:
            self.loads.update_runqueue(sv.rq, 1, now)
            self.loads.update_vcpu(_priv(v), 1, now)
            sv.in_load = True

    def _load_dec(self, v: SchedVcpu, now: int) -> None:
        sv = _priv(v)
        if sv.in_load:
            self.loads.update_runqueue(sv.rq, -1, now)
            self.loads.update_vcpu(_priv(v), -1, now)
            sv.in_load = False

    def _balance_load(self, pcpu: int, now: int) -> list[int]:
        """Push, pull or swap vCPUs with the runqueue whose load differs most (balance_load)."""
        local = self._rq_of[pcpu]
        self.loads.update_runqueue(local, 0, now)
        other: Runqueue | None = None
        load_delta = 0
        for rq in self.runqueues:
            if rq is local:
                continue
            self.loads.update_runqueue(rq, 0, now)
            delta = abs(local.avgload - rq.avgload)
            if delta > load_delta:
                load_delta, other = delta, rq
        if other is None:
            return []
        shift_p = self.precision_shift
        load_max = max(local.avgload, other.avgload)
        cpus_max = max(len(local.pcpus), len(other.pcpus))
        # Under capacity, only a whole vCPU of difference is worth a move; over it, 1/8.
        tolerance = self.balance_under if load_max < cpus_max << shift_p else self.balance_over
        if load_delta < 1 << (shift_p + tolerance):
            return []
        for v in local.vcpus + other.vcpus:
            self.loads.update_vcpu(_priv(v), 0, now)
        pushable = [v for v in local.vcpus if self._migrateable(v, other)]
        pullable = [v for v in other.vcpus if self._migrateable(v, local)]
        push, pull = self.loads.best_move(local, other, pushable, pullable, load_delta)
        tickles: list[int] = []
        if push is not None:
            tickles += self._migrate(push, other, now)
        if pull is not None:
            tickles += self._migrate(pull, local, now)
        return tickles

    @staticmethod
    def _migrateable(v: SchedVcpu, target: Runqueue) -> bool:
        return _priv(v).migrate_to is None and bool(v.hard_affinity & target.pcpu_set)

    # -- caps -------------------------------------------------------------------------------------

    def _set_quotas(self, dom: DomainState) -> None:
        if dom.vcpus:
            quota = max(dom.tot_budget // len(dom.vcpus), MIN_TIMER)
            for v in dom.vcpus:
                _priv(v).budget_quota = quota

    def _grab_budget(self, v: SchedVcpu, now: int) -> bool:
        """Take a quota from the domain's pool; park v if there is none (vcpu_grab_budget)."""
        sv = _priv(v)
        if sv.budget > 0:
            return True
        dom = sv.dom
        refill(dom, now, self.cap_period)
        dom.budget += sv.budget  # an overrun (budget < 0) is charged to the pool
        if dom.budget > 0:
            sv.budget = min(sv.budget_quota, dom.budget)
            dom.budget -= sv.budget
            return True
        sv.budget = 0
        sv.parked = True
        dom.parked.append(v)
        if sv.on_runq:
            self._runq_remove(v)
            self._load_dec(v, now)
        self.trace.record("park", now, sv.processor, v)
        return False

    def _return_budget(self, v: SchedVcpu, now: int) -> list[int]:
        """Give v's unused budget back; parked siblings may run again (vcpu_return_budget)."""
        sv = _priv(v)
        dom = sv.dom
        refill(dom, now, self.cap_period)
        dom.budget += sv.budget
        sv.budget = 0
        if dom.budget > 0 and dom.parked:
            return self._unpark(dom, now)
        return []

    def _unpark(self, dom: DomainState, now: int) -> list[int]:
        tickles: list[int] = []
        parked, dom.parked = dom.parked, []
        for v in parked:
            sv = _priv(v)
            sv.parked = False
            self.trace.record("unpark", now, sv.processor, v)
            if v.runnable and v.pcpu is None and not sv.on_runq:
                self._load_inc(v, now)
                self._runq_insert(v)
                tickles += self._runq_tickle(v, now)
        return tickles

    def next_timer(self) -> int | None:
        """When parked vCPUs get their next refill (SchedulerTimer)."""
        times = [dom.next_repl for dom in self._capped.values() if dom.parked]
        return min(times) if times else None

    def on_timer(self, now: int) -> list[int]:
        tickles: list[int] = []
        for dom in list(self._capped.values()):
            if dom.parked and dom.next_repl <= now:
                refill(dom, now, self.cap_period)
                if dom.budget > 0:
                    tickles += self._unpark(dom, now)
        return unique(tickles)

    # -- affinity and parameters -----------------------------------------------------------------

    def set_affinity(self, v: SchedVcpu, hard: frozenset[int], soft: frozenset[int],
                     now: int) -> list[int]:
        sv = self._known(v)
        self._check_affinity(v.name, hard)
        v.hard_affinity, v.soft_affinity = frozenset(hard), frozenset(soft)
        if v.pcpu is not None:
            if v.pcpu in hard:
                return []  # it may stay; soft affinity is considered at its next pick
            sv.rq.tickled.add(v.pcpu)
            return [v.pcpu]
        queued = sv.on_runq
        if queued:
            self._runq_remove(v)
        cpu = self._pick_cpu(v, sv)
        if self._rq_of[cpu] is not sv.rq:
            self._move(v, self._rq_of[cpu], cpu, now)
        else:
            sv.processor = cpu
        if queued:
            self._runq_insert(v)
            return self._runq_tickle(v, now)
        return []

    def domain_params(self, domid: int) -> dict[str, Any]:
        dom = self._domains.get(domid) or DomainState(domid, DEFAULT_WEIGHT)
        return {"weight": dom.weight, "cap": dom.cap}

    def set_domain_params(self, domid: int, params: dict[str, Any], now: int) -> list[int]:
        unknown = set(params) - {"weight", "cap"}
        if unknown:
            raise SchedParamError(f"unknown credit2 domain parameter(s) {sorted(unknown)} "
                                  "(known: weight, cap)")
        dom = self._domains.get(domid)
        nr_vcpus = len(dom.vcpus) if dom is not None else 0
        weight = (int_param("weight", params["weight"], WEIGHT_MIN, WEIGHT_MAX)
                  if "weight" in params else None)
        cap = None
        if "cap" in params:
            # Xen allows up to 100% per vCPU of the domain (per pCPU before it has vCPUs).
            limit = 100 * (nr_vcpus or len(self.pcpus))
            cap = int_param("cap", params["cap"], 0, limit)
        if dom is None:
            dom = self._domains[domid] = DomainState(domid, DEFAULT_WEIGHT)
        tickles: list[int] = []
        if weight is not None and weight != dom.weight:
            dom.weight = weight
            for rq in {id(_priv(v).rq): _priv(v).rq for v in dom.vcpus}.values():
                for v in rq.vcpus:  # charge running vCPUs at the rates in force so far
                    if v.pcpu is not None:
                        self._burn(rq, v, now)
            for v in dom.vcpus:
                _priv(v).weight = weight
            for rq in self.runqueues:
                self._update_max_weight(rq)
        if cap is not None and cap != dom.cap:
            tickles += self._set_cap(dom, cap, now)
        return unique(tickles)

    def _set_cap(self, dom: DomainState, cap: int, now: int) -> list[int]:
        tickles: list[int] = []
        if cap:
            dom.tot_budget = self.cap_period * cap // 100
            self._set_quotas(dom)
            if not dom.cap:
                dom.budget = dom.tot_budget
                dom.next_repl = now + self.cap_period
                for v in dom.vcpus:
                    sv = _priv(v)
                    if v.pcpu is not None:
                        # Charge what it ran so far without a cap, then make it grab budget.
                        self._burn(sv.rq, v, now)
                        sv.rq.tickled.add(v.pcpu)
                        tickles.append(v.pcpu)
                    sv.budget = 0
            dom.cap = cap
            self._capped[dom.domid] = dom
        else:
            dom.cap = 0
            self._capped.pop(dom.domid, None)
            dom.tot_budget = dom.budget = 0
            for v in dom.vcpus:
                _priv(v).budget = 0
            tickles += self._unpark(dom, now)
        return tickles

    def global_params(self) -> dict[str, Any]:
        return {"ratelimit_us": self.ratelimit_us, "runqueue": self.arrangement}

    def set_global_params(self, params: dict[str, Any]) -> None:
        for key, value in params.items():
            if key == "runqueue":
                if value != self.arrangement:
                    raise SchedParamError(
                        f"runqueue is {self.arrangement!r} and cannot change while running "
                        "(it is a boot parameter, credit2_runqueue)")
            elif key != "ratelimit_us":
                raise SchedParamError(f"unknown credit2 parameter {key!r} "
                                      "(settable: ratelimit_us)")
        if "ratelimit_us" in params:
            self.ratelimit_us = _ratelimit_param(params["ratelimit_us"])

    # -- inspection -------------------------------------------------------------------------------

    def runqueue_of(self, v: SchedVcpu) -> int:
        """The id of the runqueue v belongs to (an index into ``runqueues``)."""
        return self._known(v).rq.id

    def runqueue_of_pcpu(self, pcpu: int) -> int:
        return self._rq_of[pcpu].id

    def dump(self) -> str:
        p = 1 << self.precision_shift
        lines = [f"credit2: ratelimit={self.ratelimit_us}us runqueue={self.arrangement} "
                 f"migrate_resist={self.migrate_resist // US}us "
                 f"cap_period={self.cap_period // MS}ms"]
        for rq in self.runqueues:
            lines.append(
                f"runqueue {rq.id}: pcpus={rq.pcpus} max_weight={rq.max_weight} load={rq.load} "
                f"avgload={rq.avgload / p:.3f} idle={sorted(rq.idle)} "
                f"tickled={sorted(rq.tickled)}")
            for cpu in rq.pcpus:
                cur = self._current[cpu]
                lines.append(f"  pcpu {cpu}: {cur.name if cur else 'idle'}")
            lines.append("  runq: " + (", ".join(
                f"{v.name}({_priv(v).credit})" for v in rq.runq) or "empty"))
            for v in rq.vcpus:
                sv = _priv(v)
                state = ("running" if v.pcpu is not None else "parked" if sv.parked
                         else "queued" if sv.on_runq else "runnable" if v.runnable
                         else "blocked")
                lines.append(f"  {v.name}: credit={sv.credit} weight={sv.weight} "
                             f"avgload={sv.avgload / p:.3f} cpu={sv.processor} {state}")
        for dom in self._domains.values():
            if dom.cap:
                lines.append(f"d{dom.domid}: cap={dom.cap}% budget={dom.budget} "
                             f"next_refill={dom.next_repl} parked="
                             f"{[v.name for v in dom.parked]}")
        return "\n".join(lines)

