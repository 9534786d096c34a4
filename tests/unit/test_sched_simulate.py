"""The scheduler simulator (hv/sched/simulate.py): its workloads, statistics and checks."""

from __future__ import annotations

from typing import Any

import pytest

from pyxen.hv.sched.credit2 import Credit2
from pyxen.hv.sched.interface import Decision, SchedVcpu, Topology
from pyxen.hv.sched.simulate import (
    MS,
    SECOND,
    US,
    Bursty,
    Hog,
    InvariantViolation,
    Periodic,
    Simulator,
    Yielder,
    decision_overhead,
)


class RoundRobin:
    """A minimal correct scheduler: one FIFO, fixed slices, idle pCPUs tickled on wake."""

    name = "rr"

    def __init__(self, pcpus: list[int], slice_ns: int = 1 * MS) -> None:
        self.pcpus = pcpus
        self.slice_ns = slice_ns
        self.queue: list[SchedVcpu] = []
        self.current: dict[int, SchedVcpu | None] = {p: None for p in pcpus}

    def insert_vcpu(self, v: SchedVcpu) -> None:
        v.runnable = False

    def remove_vcpu(self, v: SchedVcpu, now: int) -> list[int]:
        if v in self.queue:
            self.queue.remove(v)
        v.runnable = False
        return [v.pcpu] if v.pcpu is not None else []

    def wake(self, v: SchedVcpu, now: int) -> list[int]:
        if v.runnable:
            return []
        v.runnable = True
        if v.pcpu is None:
            self.queue.append(v)
        idle = [p for p in self.pcpus if self.current[p] is None and p in v.hard_affinity]
        return idle[:1]

    def sleep(self, v: SchedVcpu, now: int) -> list[int]:
        v.runnable = False
        if v in self.queue:
            self.queue.remove(v)
        return [v.pcpu] if v.pcpu is not None else []

    def yield_(self, v: SchedVcpu, now: int) -> None:
        pass

    def pick_next(self, pcpu: int, now: int) -> Decision:
        prev = self.current[pcpu]
        if prev is not None:
            prev.pcpu = None
            prev.last_pcpu = pcpu
            if prev.runnable:
                self.queue.append(prev)
        for v in self.queue:
            if pcpu in v.hard_affinity:
                self.queue.remove(v)
                v.pcpu = pcpu
                self.current[pcpu] = v
                return Decision(v, self.slice_ns)
        self.current[pcpu] = None
        return Decision(None, 0)

    def set_affinity(self, v: SchedVcpu, hard: frozenset[int], soft: frozenset[int],
                     now: int) -> list[int]:
        v.hard_affinity, v.soft_affinity = hard, soft
        return [v.pcpu] if v.pcpu is not None and v.pcpu not in hard else []

    def domain_params(self, domid: int) -> dict[str, Any]:
        return {}

    def set_domain_params(self, domid: int, params: dict[str, Any], now: int) -> None:
        pass

    def global_params(self) -> dict[str, Any]:
        return {}

    def set_global_params(self, params: dict[str, Any]) -> None:
        pass

    def dump(self) -> str:
        return "rr"


def rr_sim(pcpus: list[int], **kw: Any) -> tuple[RoundRobin, Simulator]:
    sched = RoundRobin(pcpus, **kw)
    return sched, Simulator(sched, pcpus)


# -- what it measures ----------------------------------------------------------------------


def test_two_hogs_share_a_pcpu_and_every_ns_is_accounted() -> None:
    _, sim = rr_sim([0])
    a = sim.add(Hog(), domid=1)
    b = sim.add(Hog(), domid=2)
    stats = sim.run(SECOND)
    assert stats.cpu_time == {"d1v0": SECOND // 2, "d2v0": SECOND // 2}
    assert stats.busy == {0: SECOND}
    assert stats.share(a) == stats.share(b) == 0.5
    assert stats.decisions == 1001  # the first pick, then one per 1 ms slice
    assert all(r.length == 1 * MS and r.ended == "preempt" for r in stats.runs)
    assert stats.latencies == {"d1v0": (0,), "d2v0": (1 * MS,)}


def test_periodic_gets_its_work_and_no_latency_on_an_idle_pcpu() -> None:
    _, sim = rr_sim([0])
    p = sim.add(Periodic(10 * MS, 2 * MS, phase=1 * MS), domid=1)
    stats = sim.run(SECOND)
    assert stats.cpu_time[p.name] == 100 * 2 * MS
    assert set(stats.latencies[p.name]) == {0}
    assert len(stats.latencies[p.name]) == 100
    assert {r.ended for r in stats.runs} == {"block"}
    assert stats.runs[0].start == 1 * MS


def test_periodic_latency_behind_a_hog() -> None:
    _, sim = rr_sim([0], slice_ns=3 * MS)
    sim.add(Hog(), domid=1)
    p = sim.add(Periodic(10 * MS, 1 * MS, phase=500 * US), domid=2)
    stats = sim.run(SECOND)
    # It waits for the hog's 3 ms slice to end, from wherever its release falls.
    assert 0 < stats.latency_percentile(p, 50) <= 3 * MS
    assert stats.latency_percentile(p, 100) <= 3 * MS


def test_overrunning_periodic_job_goes_on_without_waking() -> None:
    _, sim = rr_sim([0])
    sim.add(Hog(), domid=1)
    p = sim.add(Periodic(2 * MS, 1500 * US), domid=2)  # needs 75%, gets 50%
    stats = sim.run(100 * MS)
    assert stats.share(p) == pytest.approx(0.5, abs=0.01)
    assert len(stats.latencies[p.name]) == 1  # only the first wake-up


def test_migrations_are_counted() -> None:
    _, sim = rr_sim([0, 1])
    for d in (1, 2, 3):
        sim.add(Hog(), domid=d)
    stats = sim.run(30 * MS)
    assert stats.total_migrations > 0
    assert sum(stats.cpu_time.values()) == 60 * MS
    assert stats.busy_share(0) == stats.busy_share(1) == 1.0


def test_bursty_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> dict[str, int]:
        _, sim = rr_sim([0, 1])
        for d in (1, 2, 3):
            sim.add(Bursty(1 * MS, 2 * MS, seed=seed + d), domid=d)
        return dict(sim.run(SECOND).cpu_time)

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_yield_ends_a_run() -> None:
    _, sim = rr_sim([0])
    y = sim.add(Yielder(100 * US), domid=1)
    sim.add(Hog(), domid=2)
    stats = sim.run(50 * MS)
    ends = {r.ended for r in stats.runs if r.vcpu == y.name}
    assert ends == {"yield"}


def test_stats_since_an_earlier_snapshot() -> None:
    _, sim = rr_sim([0])
    a = sim.add(Hog(), domid=1)
    b = sim.add(Periodic(10 * MS, 1 * MS), domid=2, hard={0})
    sim.call_at(100 * MS, lambda s: s.remove(b))
    first = sim.run(100 * MS)
    second = sim.run(200 * MS)
    assert second.share(a, since=first) == 1.0
    assert first.share(a) == pytest.approx(0.9, abs=0.001)
    with pytest.raises(ValueError, match="no wake-up latency"):
        second.latency_percentile("d9v9", 99)


def test_scheduler_timers_are_honoured() -> None:
    sched = Credit2([0], Topology.flat([0]))
    sim = Simulator(sched, [0])
    v = sim.add(Hog(), domid=1)
    sched.set_domain_params(1, {"cap": 10}, 0)
    stats = sim.run(SECOND)  # parked after each 1 ms; only the timer brings it back
    assert stats.share(v) == pytest.approx(0.1, abs=0.002)


def test_decision_overhead_measures_real_time() -> None:
    result = decision_overhead(lambda pcpus: Credit2(pcpus, Topology.flat(pcpus)),
                               nr_pcpus=2, nr_vcpus=4, duration=50 * MS)
    assert result.decisions > 10
    assert 0 < result.median_ns <= result.p99_ns
    assert result.mean_ns > 0


# -- what it catches -------------------------------------------------------------------------


class TicklesAllIdle(RoundRobin):
    def wake(self, v: SchedVcpu, now: int) -> list[int]:
        super().wake(v, now)
        return [p for p in self.pcpus if self.current[p] is None]


class SameOnEveryPcpu(TicklesAllIdle):
    """Broken: hands the first queued vCPU to every pCPU without dequeuing it."""

    def pick_next(self, pcpu: int, now: int) -> Decision:
        for v in self.queue:
            v.pcpu = pcpu
            return Decision(v, self.slice_ns)
        return Decision(None, 0)


class RunsBlocked(RoundRobin):
    """Broken: puts the previous vCPU back in the queue even when it blocked."""

    def pick_next(self, pcpu: int, now: int) -> Decision:
        prev = self.current[pcpu]
        if prev is not None and not prev.runnable:
            self.queue.append(prev)
        return super().pick_next(pcpu, now)


class IgnoresAffinity(TicklesAllIdle):
    """Broken: ignores hard affinity."""

    def pick_next(self, pcpu: int, now: int) -> Decision:
        prev = self.current[pcpu]
        if prev is not None and prev.runnable:
            self.queue.append(prev)
        if prev is not None:
            prev.pcpu = None
        v = self.queue.pop(0) if self.queue else None
        if v is not None:
            v.pcpu = pcpu
        self.current[pcpu] = v
        return Decision(v, self.slice_ns)


class KeepsRemoved(RoundRobin):
    """Broken: a removed vCPU stays queued."""

    def remove_vcpu(self, v: SchedVcpu, now: int) -> list[int]:
        return []


class TicklesNowhere(RoundRobin):
    def wake(self, v: SchedVcpu, now: int) -> list[int]:
        super().wake(v, now)
        return [42]


class ForgetsRunnable(RoundRobin):
    def wake(self, v: SchedVcpu, now: int) -> list[int]:
        tickles = super().wake(v, now)
        v.runnable = False
        return tickles


class KeepsAffinityBreaker(RoundRobin):
    """Broken: an affinity change never makes the vCPU leave its pCPU."""

    def set_affinity(self, v: SchedVcpu, hard: frozenset[int], soft: frozenset[int],
                     now: int) -> list[int]:
        v.hard_affinity, v.soft_affinity = hard, soft
        return []


class Livelock(RoundRobin):
    def pick_next(self, pcpu: int, now: int) -> Decision:
        d = super().pick_next(pcpu, now)
        return Decision(d.vcpu, d.slice_ns, tickle=(pcpu,))


def test_catches_a_vcpu_on_two_pcpus() -> None:
    sched = SameOnEveryPcpu([0, 1])
    sim = Simulator(sched, [0, 1])
    sim.add(Hog(), domid=1)
    with pytest.raises(InvariantViolation, match="running on pCPU"):
        sim.run(10 * MS)


def test_catches_a_blocked_vcpu_chosen() -> None:
    sched = RunsBlocked([0])
    sim = Simulator(sched, [0])
    sim.add(Hog(), domid=1)
    sim.add(Periodic(10 * MS, 500 * US), domid=2)
    with pytest.raises(InvariantViolation, match="not runnable"):
        sim.run(100 * MS)


def test_catches_hard_affinity_violations() -> None:
    sim = Simulator(IgnoresAffinity([0, 1]), [0, 1])
    sim.add(Hog(), domid=1, hard={1})
    sim.add(Hog(), domid=2, hard={1})
    with pytest.raises(InvariantViolation, match="outside its hard affinity"):
        sim.run(10 * MS)


def test_catches_a_vcpu_left_outside_a_new_affinity() -> None:
    sim = Simulator(KeepsAffinityBreaker([0, 1]), [0, 1])
    v = sim.add(Hog(), domid=1)
    sim.run(5 * MS)
    running_on = {r.pcpu for r in sim.stats().runs} | {0}
    with pytest.raises(InvariantViolation, match="still runs d1v0"):
        sim.set_affinity(v, {1} if 0 in running_on else {0})
        sim.run(10 * MS)


def test_catches_a_removed_vcpu_chosen() -> None:
    sim = Simulator(KeepsRemoved([0]), [0])
    a = sim.add(Hog(), domid=1)
    sim.add(Hog(), domid=2)
    sim.call_at(5 * MS, lambda s: s.remove(a))
    with pytest.raises(InvariantViolation, match="no longer"):
        sim.run(20 * MS)


def test_catches_bad_tickles_and_flags() -> None:
    sim = Simulator(TicklesNowhere([0]), [0])
    sim.add(Hog(), domid=1)
    with pytest.raises(InvariantViolation, match="unknown pCPU 42"):
        sim.run(MS)
    sim = Simulator(ForgetsRunnable([0]), [0])
    sim.add(Hog(), domid=1)
    with pytest.raises(InvariantViolation, match="runnable False"):
        sim.run(MS)


def test_catches_a_livelock() -> None:
    sim = Simulator(Livelock([0]), [0])
    sim.add(Hog(), domid=1)
    with pytest.raises(InvariantViolation, match="livelock"):
        sim.run(MS)


def test_credit2_passes_every_check_under_churn() -> None:
    pcpus = list(range(4))
    topology = Topology({p: p // 2 for p in pcpus}, {p: p // 2 for p in pcpus},
                        {p: 0 for p in pcpus})
    sched = Credit2(pcpus, topology, params={"runqueue": "core"})
    sim = Simulator(sched, pcpus)
    vcpus = [sim.add(Bursty(1 * MS, 1 * MS, seed=d), domid=d) for d in range(1, 9)]
    vcpus.append(sim.add(Hog(), domid=9))
    sim.add(Yielder(300 * US), domid=10)
    sched.set_domain_params(9, {"cap": 50}, 0)
    for i, v in enumerate(vcpus[:4]):
        sim.call_at((i + 1) * 50 * MS, lambda s, v=v, i=i: s.set_affinity(v, {i}, {i}))
    sim.call_at(250 * MS, lambda s: s.remove(vcpus[5]))
    sim.call_at(300 * MS, lambda s: s.set_domain_params(9, {"cap": 0, "weight": 64}))
    stats = sim.run(SECOND)
    assert stats.decisions > 1000
    assert sum(stats.cpu_time.values()) == sum(stats.busy.values())
    assert all(t > 0.01 * SECOND for t in stats.cpu_time.values())  # nobody starves
