"""Credit: Xen's proportional-share scheduler (the default before 4.12's Credit2).

Design (after Xen 4.12's sched_credit.c; our own code)
------------------------------------------------------
Credits are CPU time: 10 credits per ms run (``CREDITS_PER_MS``).  Every
accounting period -- one time slice, 30 ms by default, i.e. 3 ticks of
10 ms -- the credits the whole host can burn in a period (``credits per
slice x pCPUs``) are shared among the *active* vCPUs in proportion to their
domain's weight: the weight counts once per active vCPU, as Xen's does.  A
capped domain gets at most ``cap`` percent of one pCPU per period; what a
domain cannot use (its cap, or one pCPU per vCPU) goes to the others.

A vCPU whose credit is negative after accounting is OVER, otherwise UNDER.
A vCPU that wakes while UNDER is BOOSTed, so it preempts UNDER and OVER
vCPUs (once they have run ``ratelimit_us``); it keeps the boost until it is
seen running across a tick.
Each pCPU has a runqueue of waiting vCPUs ordered BOOST, UNDER, OVER and
round robin within one priority.  A pCPU whose best local choice is OVER
(or nothing) first steals a better vCPU from its peers' runqueues -- same
core, socket and node first, soft affinity before hard affinity.  A running
vCPU keeps its pCPU until its slice ends or a higher-priority vCPU tickles
the pCPU; ``ratelimit_us`` guarantees it a minimum run time even then.

A vCPU becomes active when it runs across a tick (it is consuming real
CPU); at accounting a vCPU whose credit exceeds one slice's worth stops
earning (leaves the active set) and keeps half of it, so idle vCPUs do not
hoard.  Credits never go below minus one slice's worth.  A vCPU of a capped
domain that has overspent its cap share is *parked*: not run until an
accounting period brings its credit back to zero or more.

Time and tickles
----------------
Accounting runs at every ``tslice`` boundary of a global grid from time 0;
ticks are a grid of ``tslice / 3``.  Every call first runs the periods that
have ended by its ``now`` (``_catch_up``), charging running vCPUs up to each
boundary first, so the result is the same as Xen's timer firing there.  The
scheduler asks for a timer (``SchedulerTimer``) only while some domain has
a cap or a vCPU is parked, the only accounting results that must act at
once; priority changes act at the next decision, as in Xen.

A decision that needs another pCPU to pick again (a vCPU unparked or
parked by accounting, a preempted vCPU sent to an idle pCPU, a vCPU leaving
a pCPU outside its new affinity) is queued in ``_pending`` and returned by
the call that made it -- in ``Decision.tickle`` for ``pick_next``.
``_tickled`` holds the pCPUs asked to pick that have not yet done so: they
count as busy when placing vCPUs, and their current vCPU faces a full
decision (ratelimit permitting) instead of finishing its slice.

Invariants: a vCPU is in at most one runqueue, never while it is the current
vCPU of a pCPU, never while parked or not runnable; ``v.pcpu`` is the pCPU
whose current vCPU it is.  The caller serialises all calls (one lock).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyxen.hv.sched.base import SchedulerBase, TickleQueue
from pyxen.hv.sched.interface import (
    Decision,
    SchedParamError,
    SchedVcpu,
    Topology,
    Tracer,
)

NS_PER_MS = 1_000_000
NS_PER_US = 1_000
CREDITS_PER_MS = 10  # Xen's CSCHED_CREDITS_PER_MSEC: 1 credit = 100 us of CPU
TICKS_PER_SLICE = 3  # accounting period = slice = 3 ticks (Xen's CSCHED_TICKS_PER_TSLICE)

DEFAULT_WEIGHT = 256
MIN_WEIGHT, MAX_WEIGHT = 1, 65535
DEFAULT_TSLICE_MS = 30
MIN_TSLICE_MS, MAX_TSLICE_MS = 1, 1000  # XEN_SYSCTL_CSCHED_TSLICE_{MIN,MAX}
DEFAULT_RATELIMIT_US = 1000
MIN_RATELIMIT_US, MAX_RATELIMIT_US = 100, 500_000  # XEN_SYSCTL_SCHED_RATELIMIT_{MIN,MAX}

# Priorities: larger runs first.
PRI_BOOST, PRI_UNDER, PRI_OVER, PRI_IDLE = 0, -1, -2, -64
PRI_NAMES = {PRI_BOOST: "BOOST", PRI_UNDER: "UNDER", PRI_OVER: "OVER"}

FOREVER_NS = 1 << 60  # the slice of an idle pCPU (ignored: it waits for a tickle)


@dataclass(eq=False)
class _Domain:
    domid: int
    weight: int = DEFAULT_WEIGHT
    cap: int = 0  # percent of one pCPU, 0: none
    vcpus: list[_Cvcpu] = field(default_factory=list)

    @property
    def active(self) -> int:
        return sum(1 for c in self.vcpus if c.active)


@dataclass(eq=False)
class _Cvcpu:
    v: SchedVcpu
    dom: _Domain
    credit: int = 0
    residual: int = 0  # sub-credit remainder of burnt time (ns x credits/ms)
    pri: int = PRI_UNDER
    active: bool = False  # earning credits (consumed CPU recently)
    parked: bool = False  # over its cap: not run until credit >= 0
    yielded: bool = False
    removed: bool = False
    queued_on: int | None = None  # the pCPU whose runqueue holds it


class Credit(SchedulerBase, TickleQueue):
    """Xen's Credit scheduler; see the module docstring."""

    name = "credit"

    def __init__(self, pcpus: Sequence[int], topology: Topology | None = None,
                 tracer: Tracer | None = None, params: dict[str, Any] | None = None) -> None:
        SchedulerBase.__init__(self, pcpus, topology, tracer)
        TickleQueue.__init__(self)
        self.tslice_ms = DEFAULT_TSLICE_MS
        self.ratelimit_us = DEFAULT_RATELIMIT_US
        self._domains: dict[int, _Domain] = {}
        self._runq: dict[int, list[_Cvcpu]] = {p: [] for p in self.pcpus}
        self._curr: dict[int, _Cvcpu | None] = {p: None for p in self.pcpus}
        self._burnt_to: dict[int, int] = {p: 0 for p in self.pcpus}  # charged up to
        self._run_start: dict[int, int] = {p: 0 for p in self.pcpus}  # current ran since
        self._slice_end: dict[int, int] = {p: 0 for p in self.pcpus}  # its full slice ends
        self._next_acct = self._period_ns()
        self._peers = {p: self._peer_order(p) for p in self.pcpus}
        if params:
            self.set_global_params(params)

    # -- vCPU lifecycle --------------------------------------------------------------------

    def insert_vcpu(self, v: SchedVcpu) -> None:
        dom = self._domains.get(v.domid)
        if dom is None:
            dom = self._domains[v.domid] = _Domain(v.domid)
        c = _Cvcpu(v, dom)
        v.priv, v.runnable, v.pcpu = c, False, None
        dom.vcpus.append(c)

    def remove_vcpu(self, v: SchedVcpu, now: int) -> list[int]:
        self._catch_up(now)
        c = self._c(v)
        c.removed, c.active, c.parked = True, False, False
        self._dequeue(c)
        c.dom.vcpus.remove(c)
        if not c.dom.vcpus:
            del self._domains[c.dom.domid]
        if v.pcpu is not None:
            self._ask(v.pcpu)
        return self._drain()

    def wake(self, v: SchedVcpu, now: int) -> list[int]:
        self._catch_up(now)
        c = self._c(v)
        if v.runnable or c.removed:
            return self._drain()
        v.runnable = True
        if c.parked or v.pcpu is not None:
            # parked: accounting unparks it; still current: its pCPU is deciding
            self.trace.record("wake", now, v.pcpu, v, pri=c.pri, credit=c.credit)
            return self._drain()
        if c.pri == PRI_UNDER:
            c.pri = PRI_BOOST  # it was not over its share: give it latency
        self._place(c)
        self.trace.record("wake", now, c.queued_on, v, pri=c.pri, credit=c.credit)
        return self._drain()

    def sleep(self, v: SchedVcpu, now: int) -> list[int]:
        self._catch_up(now)
        c = self._c(v)
        if v.runnable:
            v.runnable = False
            self.trace.record("block", now, v.pcpu, v, credit=c.credit)
            self._dequeue(c)
            if v.pcpu is not None:
                self._ask(v.pcpu)
        return self._drain()

    def yield_(self, v: SchedVcpu, now: int) -> None:
        self._catch_up(now)  # its tickles go out with the pick_next that follows
        c = self._c(v)
        c.yielded = True
        self.trace.record("yield", now, v.pcpu, v)

    def set_affinity(self, v: SchedVcpu, hard: frozenset[int], soft: frozenset[int],
                     now: int) -> list[int]:
        if not hard & set(self.pcpus):
            raise ValueError(f"{v.name}: hard affinity {sorted(hard)} has none of our pCPUs")
        self._catch_up(now)
        c = self._c(v)
        v.hard_affinity, v.soft_affinity = hard, soft
        if v.pcpu is not None and v.pcpu not in hard:
            self._ask(v.pcpu)  # it moves when that pCPU decides
        elif c.queued_on is not None and c.queued_on not in hard:
            self._dequeue(c)
            self._place(c)
        return self._drain()

    # -- SchedulerTimer: accounting that must act on time -------------------------------------

    def next_timer(self) -> int | None:
        """The next accounting, if a cap may park or unpark a vCPU there."""
        for d in self._domains.values():
            for c in d.vcpus:
                if c.parked or (d.cap and (c.active or c.v.runnable)):
                    return self._next_acct
        return None

    def on_timer(self, now: int) -> list[int]:
        self._catch_up(now)
        return self._drain()

    # -- the decision ----------------------------------------------------------------------

    def pick_next(self, pcpu: int, now: int) -> Decision:
        self._catch_up(now)
        tickled = pcpu in self._tickled
        self._tickled.discard(pcpu)
        prev = self._curr[pcpu]
        if prev is not None:
            self._burn(prev, pcpu, now)
            if self._may_continue(prev, pcpu):
                runtime = now - self._run_start[pcpu]
                ratelimit = self.ratelimit_us * NS_PER_US
                if not tickled and now < self._slice_end[pcpu]:
                    return self._run(pcpu, prev, now, self._slice_end[pcpu] - now)
                if ratelimit and runtime < ratelimit:
                    self._slice_end[pcpu] = now + ratelimit - runtime  # then decide in full
                    return self._run(pcpu, prev, now, ratelimit - runtime)
            self._put_back(prev, pcpu)
        runq = self._runq[pcpu]
        best = runq[0] if runq else None
        if best is None or best.pri <= PRI_OVER:
            best = self._steal(pcpu, best.pri if best else PRI_IDLE) or best
        if prev is not None and prev is not best:
            prev.v.pcpu = None
            self._curr[pcpu] = None
            if prev.queued_on is not None:
                self.trace.record("preempt", now, pcpu, prev.v, credit=prev.credit)
                if prev.queued_on == pcpu:
                    self._send_to_idle(prev, pcpu)
        if best is None:
            self.trace.record("idle", now, pcpu, None, slice_ns=FOREVER_NS)
            return Decision(None, FOREVER_NS, tickle=tuple(self._drain(pcpu)))
        self._dequeue(best)
        if best is not prev:
            self._curr[pcpu] = best
            self._run_start[pcpu] = now
            self._burnt_to[pcpu] = now
        self._slice_end[pcpu] = now + self.tslice_ms * NS_PER_MS
        return self._run(pcpu, best, now, self.tslice_ms * NS_PER_MS)

    def _may_continue(self, c: _Cvcpu, pcpu: int) -> bool:
        v = c.v
        return (v.runnable and not c.removed and not c.parked and not c.yielded
                and pcpu in v.hard_affinity)

    def _put_back(self, c: _Cvcpu, pcpu: int) -> None:
        """The current vCPU of ``pcpu`` stops being current: requeue it if it may run."""
        v = c.v
        if v.runnable and not c.removed and not c.parked:
            if pcpu in v.hard_affinity:
                self._enqueue(c, pcpu)
            else:
                self._place(c)  # its affinity changed: somewhere else
        c.yielded = False

    def _send_to_idle(self, c: _Cvcpu, pcpu: int) -> None:
        """Preempted ``c`` waits on ``pcpu``: an idle pCPU of its affinity takes it instead.

        (Xen's __runq_tickle tickles idlers for the preempted vCPU too.)
        """
        idle = [p for p in self.pcpus if p != pcpu and p in c.v.hard_affinity
                and self._is_idle(p)]
        if idle:
            self._dequeue(c)
            target = self._prefer(c.v, idle, key=lambda q: q)
            self._enqueue(c, target)
            self._ask(target)

    def _run(self, pcpu: int, c: _Cvcpu, now: int, slice_ns: int) -> Decision:
        v = c.v
        migrated = v.last_pcpu is not None and v.last_pcpu != pcpu
        if migrated:
            self.trace.record("migrate", now, pcpu, v, from_pcpu=v.last_pcpu)
        v.pcpu = v.last_pcpu = pcpu
        slice_ns = max(slice_ns, 1)
        self.trace.record("run", now, pcpu, v, slice_ns=slice_ns, credit=c.credit)
        return Decision(v, slice_ns, migrated, tuple(self._drain(pcpu)))

    def _steal(self, pcpu: int, than: int) -> _Cvcpu | None:
        """A waiting vCPU of a peer with priority above ``than`` that may run on ``pcpu``."""
        for soft_pass in (True, False):
            for peer in self._peers[pcpu]:
                for c in self._runq[peer]:
                    if c.pri <= than:
                        break  # the rest of this runqueue is no better
                    v = c.v
                    if pcpu not in v.hard_affinity:
                        continue
                    if soft_pass and not (_soft_matters(v) and pcpu in v.soft_affinity):
                        continue
                    return c
        return None

    # -- placement and tickling --------------------------------------------------------------

    def _place(self, c: _Cvcpu) -> None:
        """Queue a runnable, not current vCPU where it runs soonest (Xen's __runq_tickle).

        An idle pCPU of its affinity (soft first, its last pCPU first) is
        tickled; else a pCPU running a lower-priority vCPU, which is
        preempted (the lowest priority, soft first); else it waits on its
        last pCPU, or the shortest runqueue, for a pCPU to steal it.
        """
        v = c.v
        hard = [p for p in self.pcpus if p in v.hard_affinity]
        idle = [p for p in hard if self._is_idle(p)]
        busy = [p for p in hard if p not in self._tickled and self._curr[p] is not None
                and self._curr_pri(p) < c.pri]
        if idle:
            target = self._prefer(v, idle, key=lambda q: q)
        elif busy:
            target = self._prefer(v, busy, key=self._curr_pri)
        elif v.last_pcpu in hard:
            target = v.last_pcpu
        else:
            target = self._prefer(v, hard, key=lambda q: len(self._runq[q]))
        self._enqueue(c, target)
        if idle or busy:
            self._ask(target)

    def _prefer(self, v: SchedVcpu, cands: list[int], key: Any) -> int:
        """v's last pCPU if a candidate, else the soft-affine candidate with the least key."""
        if v.last_pcpu in cands and (not _soft_matters(v) or v.last_pcpu in v.soft_affinity):
            return v.last_pcpu
        soft = [p for p in cands if p in v.soft_affinity] if _soft_matters(v) else []
        return int(min(soft or cands, key=key))

    def _is_idle(self, p: int) -> bool:
        return self._curr[p] is None and not self._runq[p] and p not in self._tickled

    def _curr_pri(self, p: int) -> int:
        c = self._curr[p]
        return c.pri if c is not None else PRI_IDLE

    def _enqueue(self, c: _Cvcpu, pcpu: int) -> None:
        """Insert after every vCPU of equal or higher priority (yielded: one further)."""
        runq = self._runq[pcpu]
        i = 0
        while i < len(runq) and runq[i].pri >= c.pri:
            i += 1
        if c.yielded and i < len(runq):
            i += 1
        runq.insert(i, c)
        c.queued_on = pcpu

    def _dequeue(self, c: _Cvcpu) -> None:
        if c.queued_on is not None:
            self._runq[c.queued_on].remove(c)
            c.queued_on = None

    def _peer_order(self, pcpu: int) -> list[int]:
        """Other pCPUs, nearest first (core, socket, node), each group cyclic from pcpu+1."""
        topo = self.topology
        n = len(self.pcpus)
        i = self.pcpus.index(pcpu)
        cyclic = [self.pcpus[(i + k) % n] for k in range(1, n)]

        def distance(q: int) -> int:
            for level, table in enumerate((topo.core_of, topo.socket_of, topo.node_of)):
                if table.get(q, -1 - q) == table.get(pcpu, -2 - pcpu):
                    return level
            return 3

        return sorted(cyclic, key=distance)  # stable: keeps the cyclic order per group

    # -- credit accounting -------------------------------------------------------------------

    def _period_ns(self) -> int:
        return self.tslice_ms * NS_PER_MS

    def _tick_ns(self) -> int:
        return self._period_ns() // TICKS_PER_SLICE

    def _credits_per_slice(self) -> int:
        return CREDITS_PER_MS * self.tslice_ms

    def _burn(self, c: _Cvcpu, pcpu: int, until: int) -> None:
        """Charge ``c`` (current on ``pcpu``) for its run up to ``until``."""
        start = self._burnt_to[pcpu]
        if until <= start:
            return
        self._burnt_to[pcpu] = until
        total = (until - start) * CREDITS_PER_MS + c.residual
        c.credit -= total // NS_PER_MS
        c.residual = total % NS_PER_MS
        tick = self._tick_ns()
        if until // tick > start // tick:  # seen running at a tick
            if c.pri == PRI_BOOST:
                c.pri = PRI_UNDER
            c.active = True

    def _catch_up(self, now: int) -> None:
        """Run every accounting period that has ended by ``now``."""
        while now >= self._next_acct:
            at = self._next_acct
            for p, c in self._curr.items():
                if c is not None:
                    self._burn(c, p, at)
            self._account(at)
            period = self._period_ns()
            self._next_acct = at + period
            if self._next_acct <= now and not self._anything_to_account():
                self._next_acct += (now - self._next_acct) // period * period + period

    def _anything_to_account(self) -> bool:
        if any(c is not None for c in self._curr.values()):
            return True
        return any(c.active or c.parked for d in self._domains.values() for c in d.vcpus)

    def _account(self, now: int) -> None:
        """csched_acct: share one period's credits among the active vCPUs by weight."""
        per_slice = self._credits_per_slice()
        doms = [d for d in self._domains.values() if d.active]
        shares = _water_fill(doms, per_slice * len(self.pcpus), per_slice)
        self.trace.record("credit_reset", now, None, None, credit_total=sum(shares.values()),
                          domains=len(doms))
        for d in doms:
            active = [c for c in d.vcpus if c.active]
            fair = _ceil_div(shares[d.domid], len(active))
            cap_share = _ceil_div(_ceil_div(d.cap * per_slice, 100), len(active))
            for c in active:
                c.credit += fair
                if c.credit < 0:
                    c.pri = PRI_OVER
                    if d.cap and c.credit < -cap_share and not c.parked:
                        self._park(c)
                    c.credit = max(c.credit, -per_slice)
                else:
                    c.pri = PRI_UNDER
                    if c.parked:
                        self._unpark(c)
                    if c.credit > per_slice:  # enough hoarded: stop earning
                        c.active = False
                        c.credit //= 2
        for runq in self._runq.values():
            runq.sort(key=lambda c: -c.pri)  # stable: round robin kept within a priority

    def _park(self, c: _Cvcpu) -> None:
        c.parked = True
        self._dequeue(c)
        if c.v.pcpu is not None:
            self._ask(c.v.pcpu)

    def _unpark(self, c: _Cvcpu) -> None:
        c.parked = False
        if c.v.runnable and c.v.pcpu is None and c.queued_on is None:
            self._place(c)

    # -- parameters ----------------------------------------------------------------------------

    def domain_params(self, domid: int) -> dict[str, Any]:
        dom = self._domains.get(domid)
        if dom is None:
            return {"weight": DEFAULT_WEIGHT, "cap": 0}
        return {"weight": dom.weight, "cap": dom.cap}

    def set_domain_params(self, domid: int, params: dict[str, Any], now: int) -> list[int]:
        _check_keys(params, ("weight", "cap"))
        weight = params.get("weight")
        cap = params.get("cap")
        if weight is not None:
            _check_int("weight", weight, MIN_WEIGHT, MAX_WEIGHT)
        if cap is not None:
            _check_int("cap", cap, 0, 100 * len(self.pcpus),
                       "0 (no cap) to 100 x the number of pCPUs")
        self._catch_up(now)
        dom = self._domains.get(domid)
        if dom is None:
            dom = self._domains[domid] = _Domain(domid)
        if weight is not None:
            dom.weight = weight
        if cap is not None:
            dom.cap = cap
        return self._drain()  # a cap acts at the next accounting, as in Xen

    def global_params(self) -> dict[str, Any]:
        return {"tslice_ms": self.tslice_ms, "ratelimit_us": self.ratelimit_us}

    def set_global_params(self, params: dict[str, Any]) -> None:
        _check_keys(params, ("tslice_ms", "ratelimit_us"))
        tslice = params.get("tslice_ms", self.tslice_ms)
        ratelimit = params.get("ratelimit_us", self.ratelimit_us)
        _check_int("tslice_ms", tslice, MIN_TSLICE_MS, MAX_TSLICE_MS)
        _check_int("ratelimit_us", ratelimit, 0, MAX_RATELIMIT_US)
        if 0 < ratelimit < MIN_RATELIMIT_US:
            raise SchedParamError(f"ratelimit_us {ratelimit} is out of range: 0 (off) or "
                                  f"{MIN_RATELIMIT_US} to {MAX_RATELIMIT_US}")
        if ratelimit * NS_PER_US > tslice * NS_PER_MS:
            raise SchedParamError(f"ratelimit_us {ratelimit} exceeds the time slice "
                                  f"({tslice} ms)")
        self.tslice_ms, self.ratelimit_us = tslice, ratelimit

    # -- debugging -------------------------------------------------------------------------

    def dump(self) -> str:
        lines = [f"credit: tslice {self.tslice_ms} ms, ratelimit {self.ratelimit_us} us, "
                 f"next accounting at {self._next_acct} ns"]
        for p in self.pcpus:
            c = self._curr[p]
            cur = _describe(c) if c is not None else "idle"
            queue = ", ".join(_describe(q) for q in self._runq[p])
            tick = " (tickled)" if p in self._tickled else ""
            lines.append(f"  pCPU {p}{tick}: running {cur}; runq [{queue}]")
        for d in sorted(self._domains.values(), key=lambda d: d.domid):
            vcpus = ", ".join(_describe(c) for c in d.vcpus)
            lines.append(f"  d{d.domid} weight {d.weight} cap {d.cap}: {vcpus}")
        return "\n".join(lines)

    def _c(self, v: SchedVcpu) -> _Cvcpu:
        c = v.priv
        if not isinstance(c, _Cvcpu):
            raise ValueError(f"{v.name} is not in the credit scheduler")
        return c


def _soft_matters(v: SchedVcpu) -> bool:
    """Soft affinity restricts something (not empty, not a superset of hard)."""
    return bool(v.soft_affinity & v.hard_affinity) and not v.hard_affinity <= v.soft_affinity


def _water_fill(doms: Iterable[_Domain], total: int, per_slice: int) -> dict[int, int]:
    """Credits per domain: ``total`` by weight x active vCPUs, none above its peak.

    A domain's peak is one slice's credits per active vCPU, or its cap; what
    a capped or small domain cannot take is shared among the others (Xen
    redistributes it in one lazy pass; here it is exact).
    """
    open_ = {d.domid: d for d in doms}
    shares: dict[int, int] = {}
    left = total
    while open_:
        weight = sum(d.weight * d.active for d in open_.values())
        full = []
        for d in open_.values():
            peak = d.active * per_slice
            if d.cap:
                peak = min(peak, _ceil_div(d.cap * per_slice, 100))
            fair = _ceil_div(left * d.weight * d.active, weight)
            if fair >= peak:
                full.append((d, peak))
        if not full:
            for d in open_.values():
                shares[d.domid] = _ceil_div(left * d.weight * d.active, weight)
            break
        for d, peak in full:
            shares[d.domid] = peak
            left -= peak
            del open_[d.domid]
    return shares


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_keys(params: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise SchedParamError(f"unknown parameter {unknown[0]!r} (known: {', '.join(known)})")


def _check_int(name: str, value: Any, lo: int, hi: int, what: str | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SchedParamError(f"{name} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise SchedParamError(f"{name} {value} is out of range: {what or f'{lo} to {hi}'}")


def _describe(c: _Cvcpu) -> str:
    flags = "P" if c.parked else ""
    flags += "a" if c.active else ""
    return f"{c.v.name}({PRI_NAMES.get(c.pri, c.pri)} {c.credit}{' ' + flags if flags else ''})"
