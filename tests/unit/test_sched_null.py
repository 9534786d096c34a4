"""null (one vCPU per pCPU, no time sharing): direct calls on a fake clock."""

from __future__ import annotations

import pytest
from sched_fuzz import Fuzz

from pyxen.hv.sched.interface import SchedParamError, SchedVcpu, Topology
from pyxen.hv.sched.null import FOREVER_NS, Null
from pyxen.hv.sched.simulate import SECOND, Bursty, Hog, Simulator

MS = 1_000_000


def vcpu(domid: int, vid: int = 0, hard: set[int] | None = None,
         soft: set[int] | None = None, pcpus: tuple[int, ...] = (0, 1)) -> SchedVcpu:
    h = frozenset(hard if hard is not None else pcpus)
    return SchedVcpu(domid, vid, h, frozenset(soft if soft is not None else pcpus))


def test_a_pcpu_runs_its_one_vcpu_until_it_blocks() -> None:
    s = Null([0])
    a, b = vcpu(1, pcpus=(0,)), vcpu(2, pcpus=(0,))
    s.insert_vcpu(a)
    s.insert_vcpu(b)  # no free pCPU: b waits
    assert s.wake(a, 0) == [0]
    assert s.wake(b, 0) == []
    for t in range(0, 100 * MS, 10 * MS):  # whenever pCPU 0 decides: a, forever
        d = s.pick_next(0, t)
        assert d.vcpu is a and d.slice_ns == FOREVER_NS
    s.yield_(a, 100 * MS)
    assert s.pick_next(0, 100 * MS).vcpu is a
    assert s.sleep(a, 101 * MS) == [0]
    assert s.pick_next(0, 101 * MS).vcpu is None  # a keeps the pCPU while blocked
    assert s.wake(a, 102 * MS) == [0]
    assert s.pick_next(0, 102 * MS).vcpu is a
    assert b.pcpu is None and "waiting: d2v0" in s.dump()


def test_a_waiting_vcpu_gets_the_pcpu_that_frees_up() -> None:
    s = Null([0, 1])
    a, b, c = vcpu(1), vcpu(2), vcpu(3)
    for v in (a, b, c):
        s.insert_vcpu(v)
        s.wake(v, 0)
    assert s.pick_next(0, 0).vcpu is a
    assert s.pick_next(1, 0).vcpu is b
    assert s.remove_vcpu(a, 5 * MS) == [0]  # c takes pCPU 0
    d = s.pick_next(0, 5 * MS)
    assert d.vcpu is c and not d.migrated
    assert s.pick_next(1, 5 * MS).vcpu is b


def test_a_waiting_vcpu_is_assigned_when_it_wakes_if_a_pcpu_is_free() -> None:
    s = Null([0, 1])
    a, b = vcpu(1, hard={0}), vcpu(2, hard={0})
    s.insert_vcpu(a)
    s.insert_vcpu(b)
    assert s.wake(b, 0) == []  # pCPU 1 is free but not in b's affinity
    assert s.set_affinity(b, frozenset({0, 1}), frozenset({0, 1}), 0) == [1]
    assert s.pick_next(1, 0).vcpu is b


def test_hard_affinity_respected_and_soft_preferred() -> None:
    s = Null([0, 1, 2])
    a = vcpu(1, hard={2}, pcpus=(0, 1, 2))
    b = vcpu(2, soft={1}, pcpus=(0, 1, 2))
    c = vcpu(3, pcpus=(0, 1, 2))
    for v in (a, b, c):
        s.insert_vcpu(v)
    assert [s.wake(v, 0) for v in (a, b, c)] == [[2], [1], [0]]
    assert [s.pick_next(p, 0).vcpu for p in (0, 1, 2)] == [c, b, a]


def test_new_hard_affinity_moves_a_running_vcpu() -> None:
    s = Null([0, 1])
    a, w = vcpu(1), vcpu(2, hard={0})
    s.insert_vcpu(a)
    s.wake(a, 0)
    s.pick_next(0, 0)
    s.insert_vcpu(w)  # pCPU 1 is free, but w may only use 0: it waits
    s.wake(w, 0)
    tickles = s.set_affinity(a, frozenset({1}), frozenset({1}), MS)
    assert tickles == [0]
    d = s.pick_next(1, MS)  # a is still leaving pCPU 0
    assert d.vcpu is None
    d = s.pick_next(0, MS)  # w gets pCPU 0 and pCPU 1 is told a is free
    assert d.vcpu is w and d.tickle == (1,)
    d = s.pick_next(1, MS)
    assert d.vcpu is a and d.migrated


def test_no_parameters() -> None:
    s = Null([0])
    assert s.name == "null"
    assert s.domain_params(1) == {} and s.global_params() == {}
    assert s.set_domain_params(1, {}, 0) == []
    with pytest.raises(SchedParamError):
        s.set_domain_params(1, {"weight": 256}, 0)
    with pytest.raises(SchedParamError):
        s.set_global_params({"tslice_ms": 1})


# -- behaviour over time (the simulator) --------------------------------------------------------


def test_never_time_shares_and_the_waiter_gets_a_freed_pcpu() -> None:
    s = Null([0, 1], Topology.flat([0, 1]))
    sim = Simulator(s, [0, 1])
    a, b, c = (sim.add(Hog(), domid=d) for d in (1, 2, 3))
    first = sim.run(1 * SECOND)
    assert first.share(a) == 1.0 and first.share(b) == 1.0 and first.share(c) == 0.0
    assert first.decisions == 2  # one decision per pCPU, never a preemption
    sim.call_at(1 * SECOND, lambda sim: sim.remove(a))
    stats = sim.run(2 * SECOND)
    assert stats.share(c, since=first) == 1.0 and stats.share(b, since=first) == 1.0
    assert [r.ended for r in stats.runs] == ["removed"]


def test_blocking_vcpus_keep_their_pcpu() -> None:
    s = Null([0, 1], Topology.flat([0, 1]))
    sim = Simulator(s, [0, 1])
    io = [sim.add(Bursty(1 * MS, 2 * MS, seed=i), domid=1 + i) for i in range(2)]
    hog = sim.add(Hog(), domid=3)
    stats = sim.run(1 * SECOND)
    assert stats.share(hog) == 0.0  # it waits although the pCPUs idle two thirds
    assert stats.total_migrations == 0
    for v in io:
        assert len({r.pcpu for r in stats.runs if r.vcpu == v.name}) == 1
        assert stats.latency_percentile(v, 100) == 0  # its pCPU is always there


def test_affinity_over_time() -> None:
    s = Null([0, 1, 2], Topology.flat([0, 1, 2]))
    sim = Simulator(s, [0, 1, 2])
    a = sim.add(Hog(), domid=1, hard={2})
    b = sim.add(Hog(), domid=2, soft={1})
    c = sim.add(Hog(), domid=3)
    sim.call_at(100 * MS, lambda sim: sim.set_affinity(c, {1}))  # 1 is b's: c waits
    sim.call_at(200 * MS, lambda sim: sim.set_affinity(b, {0}))  # b to 0, c takes 1
    stats = sim.run(300 * MS)
    where = {(r.vcpu, r.pcpu) for r in stats.runs}
    assert where == {(c.name, 0), (b.name, 1)}  # finished runs: c left 0, b left 1
    assert (a.pcpu, b.pcpu, c.pcpu) == (2, 0, 1)
    assert stats.cpu_time[c.name] == 200 * MS


def test_random_call_sequences_keep_the_invariants() -> None:
    for seed in range(6):
        pcpus = [0, 1, 2, 3][: 1 + seed % 4]
        s = Null(pcpus, Topology.flat(pcpus))
        fuzz = Fuzz(s, pcpus, seed)
        fuzz.run(3000)
        for p in pcpus:
            n = s._assigned[p]
            if n is None:  # a free pCPU leaves nobody who may use it waiting
                assert not [v for v in fuzz.vcpus if v.priv in s._waitq
                            and p in v.hard_affinity], f"seed {seed}\n{s.dump()}"
            elif n.v.runnable:  # an assigned runnable vCPU runs
                assert fuzz.running[p] is n.v, f"seed {seed}\n{s.dump()}"
