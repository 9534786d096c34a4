"""RTDS (real-time, global EDF): direct calls on a fake clock."""

from __future__ import annotations

import random

import pytest
from sched_fuzz import Fuzz

from pyxen.hv.sched.interface import SchedParamError, SchedulerTimer, SchedVcpu, Topology
from pyxen.hv.sched.rtds import FOREVER_NS, Rtds
from pyxen.hv.sched.simulate import SECOND, Hog, Periodic, SimStats, Simulator, Workload

MS = 1_000_000
US = 1_000


def vcpu(domid: int, vid: int = 0, hard: set[int] | None = None,
         pcpus: tuple[int, ...] = (0, 1)) -> SchedVcpu:
    h = frozenset(hard if hard is not None else pcpus)
    return SchedVcpu(domid, vid, h, frozenset(pcpus))


def rt(pcpus: list[int], *doms: tuple[int, int, int]) -> tuple[Rtds, list[SchedVcpu]]:
    """A scheduler with one vCPU per (period us, budget us, extratime) domain, d1, d2..."""
    s = Rtds(pcpus)
    vs = []
    for i, (period, budget, extra) in enumerate(doms):
        v = vcpu(i + 1, pcpus=tuple(pcpus))
        s.insert_vcpu(v)
        s.set_domain_params(i + 1, {"period": period, "budget": budget, "extratime": extra},
                            0)
        vs.append(v)
    return s, vs


def test_defaults_and_timer_protocol() -> None:
    s = Rtds([0])
    assert s.name == "rtds"
    assert s.global_params() == {}
    assert s.domain_params(4) == {"period": 10000, "budget": 4000, "extratime": 1,
                                  "vcpus": {}}
    assert isinstance(s, SchedulerTimer)
    assert s.next_timer() is None


def test_budget_is_burnt_then_depleted_until_the_next_period() -> None:
    s, (a,) = rt([0], (10000, 4000, 0))
    assert s.wake(a, 1 * MS) == [0]
    d = s.pick_next(0, 1 * MS)
    assert d.vcpu is a and d.slice_ns == 4 * MS  # the whole budget; deadline 10 ms
    assert s.next_timer() == 10 * MS
    d = s.pick_next(0, 5 * MS)  # budget used up: depleted, the pCPU idles
    assert d.vcpu is None and d.slice_ns == FOREVER_NS
    assert s.on_timer(10 * MS) == [0]  # replenished: its pCPU is tickled
    d = s.pick_next(0, 10 * MS)
    assert d.vcpu is a and d.slice_ns == 4 * MS
    assert s.next_timer() == 20 * MS


def test_budget_left_when_blocking_is_kept_until_the_deadline() -> None:
    s, (a,) = rt([0], (10000, 4000, 0))
    s.wake(a, 0)
    s.pick_next(0, 0)
    assert s.sleep(a, 1 * MS) == [0]
    assert s.pick_next(0, 1 * MS).vcpu is None
    assert s.next_timer() is None  # blocked vCPUs need no replenishment
    s.wake(a, 3 * MS)
    assert s.pick_next(0, 3 * MS).slice_ns == 3 * MS  # 4 - 1 ms left this period
    s.sleep(a, 4 * MS)
    s.pick_next(0, 4 * MS)
    s.wake(a, 12 * MS)  # a new period began while it slept: full budget
    assert s.pick_next(0, 12 * MS).slice_ns == 4 * MS


def test_extratime_vcpu_keeps_running_at_a_lower_level() -> None:
    s, (a, b) = rt([0], (10000, 4000, 1), (10000, 2000, 0))
    s.wake(a, 0)
    assert s.pick_next(0, 0).vcpu is a
    d = s.pick_next(0, 4 * MS)  # a's budget used up: refilled at level 1
    assert d.vcpu is a and a.priv.level == 1
    assert s.wake(b, 5 * MS) == [0]  # b (level 0) is before any level-1 vCPU
    assert s.pick_next(0, 5 * MS).vcpu is b


def test_earlier_deadline_preempts_the_latest_deadline_pcpu() -> None:
    s, (slow, mid, fast) = rt([0, 1], (100000, 50000, 0), (20000, 10000, 0),
                              (5000, 1000, 0))
    s.wake(slow, 0)
    s.pick_next(0, 0)
    s.wake(mid, 0)
    s.pick_next(1, 0)
    assert slow.pcpu == 0 and mid.pcpu == 1
    assert s.wake(fast, 1 * MS) == [0]  # deadline 5 ms: preempt slow (deadline 100 ms)
    d = s.pick_next(0, 1 * MS)
    assert d.vcpu is fast
    d = s.pick_next(0, 2 * MS)  # fast's budget is used up: slow again
    assert d.vcpu is slow


def test_untickled_pcpu_keeps_its_vcpu_while_it_has_budget() -> None:
    s, (a, b) = rt([0], (10000, 4000, 0), (10000, 4000, 0))
    s.wake(a, 0)
    s.pick_next(0, 0)
    assert s.wake(b, 0) == []  # same deadline: no preemption
    assert s.pick_next(0, 1 * MS).vcpu is a


def test_preempted_vcpu_tickles_an_idle_pcpu() -> None:
    s = Rtds([0, 1])
    slow = vcpu(1)
    fast = vcpu(2, hard={0})
    for v in (slow, fast):
        s.insert_vcpu(v)
    s.set_domain_params(1, {"period": 100000, "budget": 50000}, 0)
    s.set_domain_params(2, {"period": 5000, "budget": 1000}, 0)
    s.wake(slow, 0)
    assert s.pick_next(0, 0).vcpu is slow
    assert s.wake(fast, 1 * MS) == [0]
    d = s.pick_next(0, 1 * MS)
    assert d.vcpu is fast and d.tickle == (1,)
    d = s.pick_next(1, 1 * MS)
    assert d.vcpu is slow and d.migrated


def test_yield_re_decides_by_edf() -> None:
    s, (a, b) = rt([0], (5000, 2000, 0), (10000, 4000, 0))
    s.wake(a, 0)
    s.wake(b, 0)
    assert s.pick_next(0, 0).vcpu is a
    s.yield_(a, 1 * MS)
    assert s.pick_next(0, 1 * MS).vcpu is a  # still the earliest deadline
    s.pick_next(0, 2 * MS)  # a's budget is used up
    assert b.pcpu == 0
    s.yield_(b, 3 * MS)
    assert s.pick_next(0, 3 * MS).vcpu is b  # a is depleted: nobody else may run


def test_hard_affinity_is_respected() -> None:
    s = Rtds([0, 1])
    a = vcpu(1, hard={1})
    s.insert_vcpu(a)
    assert s.wake(a, 0) == [1]
    assert s.pick_next(0, 0).vcpu is None
    assert s.pick_next(1, 0).vcpu is a
    assert s.set_affinity(a, frozenset({0}), frozenset({0, 1}), 1 * MS) == [1]
    d = s.pick_next(1, 1 * MS)
    assert d.vcpu is None and d.tickle == (0,)
    assert s.pick_next(0, 1 * MS).vcpu is a


def test_removed_vcpu_is_never_returned() -> None:
    s, (a,) = rt([0], (10000, 4000, 0))
    s.wake(a, 0)
    s.pick_next(0, 0)
    assert s.remove_vcpu(a, 1 * MS) == [0]
    assert s.pick_next(0, 1 * MS).vcpu is None
    assert s.wake(a, 2 * MS) == []
    assert s.next_timer() is None


def test_params_per_domain_and_per_vcpu() -> None:
    s = Rtds([0, 1])
    a, b = vcpu(5, 0), vcpu(5, 1)
    for v in (a, b):
        s.insert_vcpu(v)
    s.set_domain_params(5, {"period": 20000, "budget": 5000}, 0)
    s.set_domain_params(5, {"vcpus": {1: {"budget": 20000, "extratime": 0}}}, 0)
    s.set_domain_params(5, {"vcpus": {"0": {"period": 1000, "budget": 10}}}, 0)  # JSON keys
    got = s.domain_params(5)
    assert (got["period"], got["budget"], got["extratime"]) == (20000, 5000, 1)
    assert got["vcpus"] == {0: {"period": 1000, "budget": 10, "extratime": 1},
                            1: {"period": 20000, "budget": 20000, "extratime": 0}}


@pytest.mark.parametrize("params", [
    {"period": 9}, {"budget": 9}, {"budget": 10001}, {"period": 1 << 32},
    {"period": 3000}, {"period": "10000"}, {"budget": 4000.0}, {"extratime": 2},
    {"slice": 1}, {"vcpus": {3: {"budget": 100}}}, {"vcpus": {0: {"weight": 1}}},
    {"vcpus": {0: {"budget": 20000}}}, {"vcpus": [1]},
])
def test_bad_params_are_refused_and_change_nothing(params: dict[str, object]) -> None:
    s = Rtds([0])
    s.insert_vcpu(vcpu(1, pcpus=(0,)))
    before = s.domain_params(1)
    with pytest.raises(SchedParamError):
        s.set_domain_params(1, params, 0)
    assert s.domain_params(1) == before
    with pytest.raises(SchedParamError):
        s.set_global_params({"period": 1})


def test_limits_are_accepted() -> None:
    s = Rtds([0])
    s.insert_vcpu(vcpu(1, pcpus=(0,)))
    s.set_domain_params(1, {"period": 10, "budget": 10}, 0)
    s.set_domain_params(1, {"period": (1 << 32) - 1, "budget": (1 << 32) - 1}, 0)
    s.set_domain_params(1, {"extratime": True}, 0)
    assert s.domain_params(1)["extratime"] == 1


def test_dump_shows_queues() -> None:
    s, (a, b) = rt([0], (10000, 4000, 0), (10000, 4000, 0))
    s.wake(a, 0)
    s.wake(b, 0)
    s.pick_next(0, 0)
    text = s.dump()
    assert "runq: d" in text and "pCPU 0" in text


# -- behaviour over time (the simulator) --------------------------------------------------------
#
# RTDS is exact: with extratime off, a vCPU that always has work receives
# precisely its budget in every period when the set is schedulable, so the
# feasibility tests compare per-period CPU time with no tolerance at all.


def per_period(stats: SimStats, v: SchedVcpu, period: int) -> list[int]:
    """v's CPU time in each whole period [k*period, (k+1)*period) up to stats.now."""
    got = [0] * (stats.now // period)
    for r in stats.runs:
        if r.vcpu != v.name:
            continue
        for k in range(r.start // period, min(len(got), -(-r.end // period))):
            got[k] += max(0, min(r.end, (k + 1) * period) - max(r.start, k * period))
    return got


def sim_rt(pcpus: list[int], spec: list[tuple[int, int, int, Workload]]
           ) -> tuple[Rtds, Simulator, list[SchedVcpu]]:
    s = Rtds(pcpus, Topology.flat(pcpus))
    sim = Simulator(s, pcpus)
    vs = []
    for i, (period, budget, extra, work) in enumerate(spec):
        s.set_domain_params(i + 1, {"period": period, "budget": budget, "extratime": extra}, 0)
        vs.append(sim.add(work, domid=i + 1))
    return s, sim, vs


@pytest.mark.parametrize("pcpus, spec", [
    ([0], [(10000, 3000), (7000, 2000), (5000, 1000)]),  # U = 0.79
    ([0], [(10000, 5000), (5000, 2500)]),  # U = 1.0 exactly, one pCPU
    ([0, 1], [(10000, 4000)] * 3 + [(5000, 1000)] * 2),  # U = 1.6 on 2
    ([0, 1, 2], [(10000, 4000)] * 3 + [(3000, 1000)] * 3 + [(20000, 5000)] * 2),  # U = 2.7
])
def test_feasible_set_gets_every_budget_in_every_period(
        pcpus: list[int], spec: list[tuple[int, int]]) -> None:
    s, sim, vs = sim_rt(pcpus, [(p, b, 0, Hog()) for p, b in spec])
    stats = sim.run(3 * SECOND)
    for v, (period, budget) in zip(vs, spec, strict=True):
        got = per_period(stats, v, period * US)
        assert got[:-1] == [budget * US] * (len(got) - 1), v.name  # the last may be open
        assert s.misses(v) == 0
    # Nobody runs beyond its budget: the pCPUs idle for the rest.
    want = sum(b / p for p, b in spec)
    assert abs(sum(stats.busy_share(p) for p in pcpus) - want) < 0.01


def test_periodic_jobs_inside_their_reservation_all_complete() -> None:
    _, sim, (job, _, _) = sim_rt([0], [
        (10000, 4000, 0, Periodic(10 * MS, 3 * MS, phase=1 * MS)),
        (20000, 8000, 1, Hog()), (30000, 6000, 1, Hog())])
    stats = sim.run(2 * SECOND)
    assert abs(stats.share(job) - 0.3) < 0.002
    # A job is released every 10 ms and each finished before the next release
    # (one still running at its next release would leave no wake-up sample).
    assert len(stats.latencies[job.name]) == 200
    assert stats.latency_percentile(job, 100) < 10 * MS - 3 * MS
    assert stats.busy_share(0) > 0.999  # extratime hogs soak up the rest


def test_infeasible_set_degrades_without_crashing() -> None:
    spec = [(10000, 8000)] * 3  # U = 2.4 on 2 pCPUs
    s, sim, vs = sim_rt([0, 1], [(p, b, 0, Hog()) for p, b in spec])
    stats = sim.run(2 * SECOND)
    assert sum(s.misses(v) for v in vs) > 0
    assert all(stats.share(v) <= 0.8 + 1e-9 for v in vs)  # never beyond a budget
    # Equal deadlines: two vCPUs use their 8 ms, the third gets the 2 ms left
    # before the deadline on one pCPU; the other idles (all are depleted).
    assert abs(sum(stats.share(v) for v in vs) - 1.8) < 0.01


def test_extratime_makes_rtds_work_conserving() -> None:
    spec = [(10000, 4000)] * 3 + [(5000, 1000)] * 2  # U = 1.6 on 2 pCPUs
    s, sim, vs = sim_rt([0, 1], [(p, b, 1, Hog()) for p, b in spec])
    stats = sim.run(2 * SECOND)
    assert stats.busy_share(0) > 0.999 and stats.busy_share(1) > 0.999
    for v, (period, budget) in zip(vs, spec, strict=True):
        got = per_period(stats, v, period * US)
        assert min(got[:-1]) >= budget * US  # reservations still honoured
        assert s.misses(v) == 0


def test_affinity_over_time() -> None:
    s, sim, vs = sim_rt([0, 1], [(10000, 4000, 0, Hog())] * 2)
    pinned = [sim.add(Hog(), domid=9, hard={1}), sim.add(Hog(), domid=9, hard={1})]
    s.set_domain_params(9, {"period": 10000, "budget": 5000, "extratime": 0}, 0)
    stats = sim.run(1 * SECOND)
    for v in pinned:
        assert all(r.pcpu == 1 for r in stats.runs if r.vcpu == v.name)
        assert abs(stats.share(v) - 0.5) < 0.01
    for v in vs:
        assert abs(stats.share(v) - 0.4) < 0.01  # on pCPU 0, where there is room


def test_random_call_sequences_keep_the_invariants() -> None:
    def params(rng: random.Random) -> dict[str, object]:
        period = rng.choice((100, 1000, 10000, 30000))
        return {"period": period, "budget": rng.randint(10, period),
                "extratime": rng.randint(0, 1)}

    for seed in range(6):
        pcpus = [0, 1, 2, 3][: 1 + seed % 4]
        s = Rtds(pcpus, Topology.flat(pcpus))
        fuzz = Fuzz(s, pcpus, seed, params)
        fuzz.run(3000)
        for p in fuzz.idle_pcpus():  # global EDF is work conserving within budgets
            for v in fuzz.vcpus:
                assert not (v.priv.queued and p in v.hard_affinity), \
                    f"seed {seed}: pCPU {p} idle while {v.name} waits\n{s.dump()}"


def test_queues_stay_sorted_through_random_calls() -> None:
    """The run and replenishment queues are kept in order by binary search: that needs
    them sorted (by level then deadline, and by deadline) after every call."""
    def params(rng: random.Random) -> dict[str, object]:
        period = rng.choice((100, 1000, 10000))
        return {"period": period, "budget": rng.randint(10, period),
                "extratime": rng.randint(0, 1)}

    for seed in range(3):
        pcpus = [0, 1]
        s = Rtds(pcpus, Topology.flat(pcpus))
        fuzz = Fuzz(s, pcpus, 50 + seed, params)
        for _ in range(2000):
            fuzz.step()
            keys = [r.key() for r in s._runq]
            deadlines = [r.deadline for r in s._replq]
            assert keys == sorted(keys) and deadlines == sorted(deadlines), s.dump()
        assert fuzz.decisions > 200
