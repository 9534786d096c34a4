"""Credit2's records, and the arithmetic on them that decides nothing by itself.

``credit2`` holds the algorithm; this module holds what it keeps per vCPU,
per runqueue and per domain, the fixed-point load averages (Xen's
update_runq_load / update_svc_load), the cap budget refill, and the search
for the push, pull or swap that best evens two runqueues' loads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyxen.hv.sched.interface import SchedParamError, SchedVcpu

LOADAVG_GRANULARITY_SHIFT = 10  # load time stamps in units of 1024 ns (~1 µs)


@dataclass(eq=False)
class DomainState:
    domid: int
    weight: int
    cap: int = 0  # % of one pCPU; 0: none
    vcpus: list[SchedVcpu] = field(default_factory=list)
    budget: int = 0  # the pool vCPUs grab from (ns); negative after an overrun
    tot_budget: int = 0  # refill per period
    next_repl: int = 0  # time of the next refill
    parked: list[SchedVcpu] = field(default_factory=list)


@dataclass(eq=False)
class Runqueue:
    id: int
    pcpus: list[int]  # sorted
    pcpu_set: frozenset[int] = frozenset()
    runq: list[SchedVcpu] = field(default_factory=list)  # waiting, by credit, highest first
    vcpus: list[SchedVcpu] = field(default_factory=list)  # every vCPU assigned here
    max_weight: int = 1
    load: int = 0  # runnable vCPUs now (running or waiting)
    avgload: int = 0  # decaying average of load, fixed point
    load_last_update: int = 0  # in units of 2^LOADAVG_GRANULARITY_SHIFT ns
    pick_bias: int = 0
    idle: set[int] = field(default_factory=set)
    tickled: set[int] = field(default_factory=set)


@dataclass(eq=False)
class VcpuState:
    """Credit2's per-vCPU data (``SchedVcpu.priv``)."""

    dom: DomainState
    rq: Runqueue
    processor: int  # Xen's v->processor: the pCPU it runs on or is assigned to
    weight: int
    credit: int
    avgload: int
    residual: int = 0
    start_time: int = 0  # when its credit was last burned
    budget: int = 0  # grabbed from the domain's pool, when capped
    budget_quota: int = 0
    tickled_cpu: int | None = None
    load_last_update: int | None = None
    on_runq: bool = False
    in_load: bool = False  # counted in rq.load (runnable and not parked)
    parked: bool = False
    yielding: bool = False
    migrate_to: Runqueue | None = None  # balancing asked a running vCPU to move
    removed: bool = False


class LoadAverages:
    """Exponentially decaying averages of load in fixed point.

    avg' = avg + delta*load*P/W - delta*avg/W, with P = 2^precision_shift
    fractional bits and a window W = 2^window_shift ns (time counted in units
    of 1024 ns); after a whole window without an update the average is simply
    the load.
    """

    def __init__(self, window_shift: int, precision_shift: int) -> None:
        self.shift_w = window_shift - LOADAVG_GRANULARITY_SHIFT
        self.shift_p = precision_shift

    def _decayed(self, avg: int, load: int, last: int, t: int) -> int:
        if last + (1 << self.shift_w) < t:
            return load << self.shift_p
        delta = max(t - last, 0)
        return avg + ((delta * (load << self.shift_p)) >> self.shift_w) - (
            (delta * avg) >> self.shift_w)

    def update_runqueue(self, rq: Runqueue, change: int, now: int) -> None:
        """Bring rq's average up to now, then change its load by ``change``."""
        t = now >> LOADAVG_GRANULARITY_SHIFT
        rq.avgload = self._decayed(rq.avgload, rq.load, rq.load_last_update, t)
        rq.load += change
        rq.load_last_update = t

    def update_vcpu(self, sv: VcpuState, change: int, now: int) -> None:
        """The same for one vCPU (load 1 while runnable); ``change`` as for runqueues."""
        t = now >> LOADAVG_GRANULARITY_SHIFT
        # change -1: it was runnable until now; +1: it was not; 0: as it is.
        load = 1 if change < 0 else 0 if change > 0 else int(sv.in_load)
        if sv.load_last_update is not None:  # else the first sample: keep the initial average
            sv.avgload = self._decayed(sv.avgload, load, sv.load_last_update, t)
        sv.load_last_update = t

    @staticmethod
    def best_move(local: Runqueue, other: Runqueue, pushable: list[SchedVcpu],
                  pullable: list[SchedVcpu],
                  load_delta: int) -> tuple[SchedVcpu | None, SchedVcpu | None]:
        """The push, pull or swap (push, pull) that leaves the two averages closest,
        if it beats ``load_delta`` (Xen's consider(), in Xen's order)."""
        best: tuple[SchedVcpu | None, SchedVcpu | None] = (None, None)
        for push in [*pushable, None]:
            for pull in [*pullable, None]:
                if push is None and pull is None:
                    continue
                l_load, o_load = local.avgload, other.avgload
                if push is not None:
                    moved = push.priv.avgload
                    l_load, o_load = l_load - moved, o_load + moved
                if pull is not None:
                    moved = pull.priv.avgload
                    l_load, o_load = l_load + moved, o_load - moved
                delta = abs(l_load - o_load)
                if delta < load_delta:
                    load_delta, best = delta, (push, pull)
        return best


def refill(dom: DomainState, now: int, period: int) -> None:
    """Apply every budget refill of a capped domain due by now.

    Xen refills from a timer each period; computing the same lazily gives the
    same pool: an overrun (negative pool) is paid back first, and a positive
    pool never exceeds one period's worth.
    """
    if not dom.cap or now < dom.next_repl:
        return
    periods = (now - dom.next_repl) // period + 1
    dom.next_repl += periods * period
    budget = dom.budget + periods * dom.tot_budget
    dom.budget = min(budget, dom.tot_budget) if budget > 0 else budget


def cycle(after: int, mask: Iterable[int]) -> int | None:
    """The first pCPU of ``mask`` after ``after``, wrapping around (cpumask_cycle)."""
    above: int | None = None
    lowest: int | None = None
    for p in mask:
        if p > after and (above is None or p < above):
            above = p
        if lowest is None or p < lowest:
            lowest = p
    return above if above is not None else lowest


def same_or_cycle(cpu: int, mask: set[int] | frozenset[int]) -> int | None:
    """``cpu`` if it is in ``mask``, else the next one (cpumask_test_or_cycle)."""
    return cpu if cpu in mask else cycle(cpu, mask)


def int_param(name: str, value: Any, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SchedParamError(f"{name} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise SchedParamError(f"{name} {value} is out of range {lo}..{hi}")
    return value


def unique(pcpus: list[int]) -> list[int]:
    return list(dict.fromkeys(pcpus))
