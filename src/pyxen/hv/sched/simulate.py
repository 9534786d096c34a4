"""A deterministic discrete-event simulator that drives any ``Scheduler`` on a fake clock.

Tests and benchmarks use it to check a scheduler's behaviour (fairness,
caps, latency, balancing) without KVM, threads or real time.

Design
------
- Time is an integer ns clock that jumps from event to event.  Events sit in
  a heap ordered by (time, sequence number), so equal times are handled in
  the order they were scheduled and every run is reproducible.
- Each simulated vCPU runs a ``Workload`` (one instance per vCPU, they keep
  state): ``work(now)`` says how much CPU it wants from a wake-up (None:
  forever), ``done(now)`` what it does when it has had it: ``Block(until)``
  (sleep until a time, None: for good) or ``Yield(work)``.
- The simulator plays the dispatcher exactly as ``dispatcher.py`` does: a
  pCPU calls ``pick_next`` when its slice ends, when it is tickled, when its
  vCPU blocks, yields or is removed; pCPUs returned by ``wake``/``sleep``/
  ``remove_vcpu``/``set_affinity``/``set_domain_params``/``on_timer`` and in
  ``Decision.tickle`` pick again at the same instant (a vCPU leaves a pCPU
  the moment it is asked to).  An idle pCPU has no deadline.  A scheduler
  implementing ``SchedulerTimer`` has ``on_timer`` called when its
  ``next_timer()`` comes.
- CPU time is charged to the vCPU that holds a pCPU, from the decision that
  put it there to the one that takes it away.

Invariants enforced (``InvariantViolation``, an AssertionError, on breach)
--------------------------------------------------------------------------
- A decision names a vCPU the simulator knows and has not removed, that is
  runnable, has the pCPU in its hard affinity and is not on another pCPU.
- After ``wake``/``sleep`` the scheduler's ``SchedVcpu.runnable`` matches;
  after ``pick_next`` the chosen vCPU's ``pcpu`` is that pCPU.
- Tickles name pCPUs the simulator has.
- When an instant's work is done, every running vCPU is runnable, not
  removed and inside its hard affinity (e.g. after an affinity change).
- A scheduler that keeps re-picking at one instant (livelock) is stopped.

Statistics (``SimStats``): per-vCPU CPU time, per-pCPU busy time, wake-to-run
latencies (from the wake-up to the first run after it), decisions,
migrations (a vCPU starting on a pCPU other than the one it last ran on)
and every run interval with why it ended.

Example::

    sched = Credit2([0], Topology.flat([0]))
    sim = Simulator(sched, [0])
    a = sim.add(Hog(), domid=1)
    b = sim.add(Hog(), domid=2)
    sched.set_domain_params(2, {"weight": 512}, 0)
    stats = sim.run(2 * SECOND)
    assert abs(stats.share(b) - 2 / 3) < 0.02
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyxen.hv.sched.interface import Scheduler, SchedulerTimer, SchedVcpu

US = 1_000
MS = 1_000_000
SECOND = 1_000_000_000
MAX_PICKS_PER_INSTANT = 10_000


class InvariantViolation(AssertionError):
    """The scheduler broke the interface contract (the message says how)."""


# -- workloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """Block now; wake at ``until`` (None: never).  ``until <= now`` means go on at once."""

    until: int | None


@dataclass(frozen=True)
class Yield:
    """Call SCHEDOP_yield, then want ``work`` more ns of CPU (None: forever)."""

    work: int | None


class Workload:
    """What one vCPU does.  Subclasses override ``work`` and usually ``done``."""

    def first_wake(self, now: int) -> int | None:
        """When the vCPU first wakes (it is added at ``now``); None: never."""
        return now

    def work(self, now: int) -> int | None:
        """CPU time (ns) wanted from now on before ``done``; None: it never stops."""
        raise NotImplementedError

    def done(self, now: int) -> Block | Yield:
        """It has had the CPU time it wanted: what now?"""
        return Block(None)


class Hog(Workload):
    """Always runnable."""

    def work(self, now: int) -> int | None:
        return None


class Periodic(Workload):
    """Wakes every ``period`` ns (from its first wake), runs ``work`` ns, blocks.

    A job still running at its next release goes on with the next job at once
    (no wake-up, so no latency sample for it).
    """

    def __init__(self, period: int, work: int, phase: int = 0) -> None:
        if period <= 0 or work <= 0:
            raise ValueError("period and work must be positive")
        self.period, self.work_ns, self.phase = period, work, phase
        self._release = 0

    def first_wake(self, now: int) -> int | None:
        self._release = now + self.phase
        return self._release

    def work(self, now: int) -> int | None:
        return self.work_ns

    def done(self, now: int) -> Block | Yield:
        self._release += self.period
        return Block(self._release)


class Bursty(Workload):
    """Bursts of CPU and sleeps of exponentially distributed lengths (seeded)."""

    def __init__(self, run: int, sleep: int, seed: int = 0) -> None:
        self.run_ns, self.sleep_ns = run, sleep
        self._rng = random.Random(seed)

    def work(self, now: int) -> int | None:
        return max(1, round(self._rng.expovariate(1 / self.run_ns)))

    def done(self, now: int) -> Block | Yield:
        return Block(now + max(1, round(self._rng.expovariate(1 / self.sleep_ns))))


class Yielder(Workload):
    """Always runnable, but yields after every ``work`` ns (a spinning vCPU)."""

    def __init__(self, work: int) -> None:
        self.work_ns = work

    def work(self, now: int) -> int | None:
        return self.work_ns

    def done(self, now: int) -> Block | Yield:
        return Yield(self.work_ns)


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """vCPU ``vcpu`` held ``pcpu`` from ``start`` to ``end``; ``ended``: preempt, block,
    yield or removed."""

    vcpu: str
    pcpu: int
    start: int
    end: int
    ended: str

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SimStats:
    """Totals from time 0 to ``now`` (``share``/``busy_share`` can start at ``since``)."""

    now: int
    cpu_time: Mapping[str, int]  # vCPU name -> ns on a pCPU
    busy: Mapping[int, int]  # pCPU -> ns running a vCPU
    latencies: Mapping[str, tuple[int, ...]]  # vCPU name -> wake-to-run latencies (ns)
    migrations: Mapping[str, int]
    decisions: int
    runs: tuple[Run, ...]
    decision_ns: tuple[int, ...] = ()  # real time per pick_next, if measured

    @property
    def total_migrations(self) -> int:
        return sum(self.migrations.values())

    def share(self, v: SchedVcpu | str, since: SimStats | None = None) -> float:
        """v's CPU time as a fraction of the elapsed time (of one pCPU)."""
        name = _name(v)
        t0, c0 = (since.now, since.cpu_time.get(name, 0)) if since else (0, 0)
        return (self.cpu_time.get(name, 0) - c0) / max(self.now - t0, 1)

    def busy_share(self, pcpu: int, since: SimStats | None = None) -> float:
        t0, b0 = (since.now, since.busy.get(pcpu, 0)) if since else (0, 0)
        return (self.busy.get(pcpu, 0) - b0) / max(self.now - t0, 1)

    def latency_percentile(self, v: SchedVcpu | str, q: float) -> int:
        """The q-th percentile (0..100, nearest rank) of v's wake-to-run latencies."""
        samples = sorted(self.latencies.get(_name(v), ()))
        if not samples:
            raise ValueError(f"no wake-up latency recorded for {_name(v)}")
        rank = max(1, -(-len(samples) * q // 100))
        return samples[min(int(rank), len(samples)) - 1]


def _name(v: SchedVcpu | str) -> str:
    return v if isinstance(v, str) else v.name


# -- the simulator -------------------------------------------------------------------------------


@dataclass(eq=False)
class _SimVcpu:
    v: SchedVcpu
    workload: Workload
    hard: frozenset[int]
    runnable: bool = False
    removed: bool = False
    remaining: int | None = None  # CPU ns until workload.done (None: never)
    running_on: int | None = None
    last_pcpu: int | None = None
    run_start: int = 0
    wake_since: int | None = None
    yielded: bool = False
    cpu_time: int = 0
    migrations: int = 0
    latencies: list[int] = field(default_factory=list)


@dataclass(eq=False)
class _SimPcpu:
    cur: _SimVcpu | None = None
    since: int = 0  # CPU time charged up to here
    gen: int = 0  # bumped at every decision: older slice/done events are stale
    busy: int = 0


class Simulator:
    """Drives ``scheduler`` (already built for ``pcpus``) on a fake clock from 0."""

    def __init__(self, scheduler: Scheduler, pcpus: Sequence[int], *,
                 measure_decisions: bool = False) -> None:
        self.sched = scheduler
        self.now = 0
        self.decisions = 0
        self.measure_decisions = measure_decisions
        self._pcpus = {p: _SimPcpu() for p in pcpus}
        self._vcpus: dict[int, _SimVcpu] = {}  # id(SchedVcpu) -> state
        self._order: list[_SimVcpu] = []
        self._events: list[tuple[int, int, str, Any, int]] = []
        self._seq = itertools.count()
        self._pending: deque[int] = deque()
        self._timer_asked: int | None = None  # what next_timer() last said
        self._timer_at: int | None = None  # when the armed timer event fires
        self._timed = scheduler if isinstance(scheduler, SchedulerTimer) else None
        self._runs: list[Run] = []
        self._decision_ns: list[int] = []
        self._next_vcpu_id: dict[int, int] = {}

    # -- setting up and acting on the scheduler (at the current time) ----------------------------

    def add(self, workload: Workload, domid: int, vcpu_id: int | None = None,
            hard: frozenset[int] | set[int] | None = None,
            soft: frozenset[int] | set[int] | None = None) -> SchedVcpu:
        """Insert a vCPU now; it wakes when ``workload.first_wake`` says."""
        if vcpu_id is None:
            vcpu_id = self._next_vcpu_id.get(domid, 0)
        self._next_vcpu_id[domid] = max(self._next_vcpu_id.get(domid, 0), vcpu_id + 1)
        all_pcpus = frozenset(self._pcpus)
        hard_set = frozenset(hard) if hard is not None else all_pcpus
        v = SchedVcpu(domid, vcpu_id, hard_set,
                      frozenset(soft) if soft is not None else all_pcpus)
        sv = _SimVcpu(v, workload, hard_set)
        self.sched.insert_vcpu(v)
        self._vcpus[id(v)] = sv
        self._order.append(sv)
        first = workload.first_wake(self.now)
        if first is not None:
            self._push(max(first, self.now), "wake", sv)
        return v

    def call_at(self, when: int, fn: Callable[[Simulator], None]) -> None:
        """Run ``fn(sim)`` at simulated time ``when`` (e.g. to remove a vCPU)."""
        self._push(when, "call", fn)

    def remove(self, v: SchedVcpu) -> None:
        sv = self._state(v)
        self._settle_vcpu(sv)
        sv.removed = True
        self._honour(self.sched.remove_vcpu(v, self.now), "remove_vcpu")
        if sv.running_on is not None:
            self._tickle(sv.running_on)
        self._flush()

    def set_affinity(self, v: SchedVcpu, hard: set[int] | frozenset[int],
                     soft: set[int] | frozenset[int] | None = None) -> None:
        sv = self._state(v)
        sv.hard = frozenset(hard)
        soft_set = frozenset(soft) if soft is not None else frozenset(self._pcpus)
        self._honour(self.sched.set_affinity(v, sv.hard, soft_set, self.now), "set_affinity")
        self._flush()

    def set_domain_params(self, domid: int, params: dict[str, Any]) -> None:
        self._honour(self.sched.set_domain_params(domid, params, self.now) or [],
                     "set_domain_params")
        self._flush()

    # -- running -------------------------------------------------------------------------------

    def run(self, until: int) -> SimStats:
        """Simulate up to time ``until``; returns the totals so far (it may be called again)."""
        self._flush()
        while self._events and self._events[0][0] <= until:
            when, _, kind, obj, gen = heapq.heappop(self._events)
            self.now = max(self.now, when)
            if kind == "wake":
                self._on_wake(obj)
            elif kind == "slice":
                if gen == self._pcpus[obj].gen:
                    self._repick(obj)
            elif kind == "done":
                if gen == self._pcpus[obj].gen:
                    self._on_done(obj)
            elif kind == "timer":
                if when == self._timer_at:
                    self._timer_at = self._timer_asked = None
                    self._honour(self._timer().on_timer(self.now), "on_timer")
            else:
                obj(self)
            self._flush()
        self.now = max(self.now, until)
        return self.stats()

    def stats(self) -> SimStats:
        for p in self._pcpus:
            self._settle(p)
        return SimStats(
            now=self.now,
            cpu_time={sv.v.name: sv.cpu_time for sv in self._order},
            busy={p: st.busy for p, st in self._pcpus.items()},
            latencies={sv.v.name: tuple(sv.latencies) for sv in self._order},
            migrations={sv.v.name: sv.migrations for sv in self._order},
            decisions=self.decisions,
            runs=tuple(self._runs),
            decision_ns=tuple(self._decision_ns),
        )

    # -- events ----------------------------------------------------------------------------------

    def _on_wake(self, sv: _SimVcpu) -> None:
        if sv.removed or sv.runnable:
            return
        sv.runnable = True
        sv.remaining = sv.workload.work(self.now)
        sv.wake_since = self.now
        tickles = self.sched.wake(sv.v, self.now)
        if not sv.v.runnable:
            raise InvariantViolation(f"{sv.v.name}: wake() left SchedVcpu.runnable False")
        self._honour(tickles, "wake")

    def _on_done(self, pcpu: int) -> None:
        self._settle(pcpu)
        sv = self._pcpus[pcpu].cur
        if sv is None or sv.remaining is None or sv.remaining > 0:
            return
        action = sv.workload.done(self.now)
        if isinstance(action, Yield):
            sv.remaining = action.work
            sv.yielded = True
            self.sched.yield_(sv.v, self.now)
            self._repick(pcpu)
            return
        if action.until is not None and action.until <= self.now:
            sv.remaining = sv.workload.work(self.now)  # the next job is already due
            self._arm_done(pcpu, sv)
            return
        sv.runnable = False
        tickles = self.sched.sleep(sv.v, self.now)
        if sv.v.runnable:
            raise InvariantViolation(f"{sv.v.name}: sleep() left SchedVcpu.runnable True")
        self._repick(pcpu)
        self._honour([p for p in tickles if p != pcpu], "sleep")
        if action.until is not None:
            self._push(action.until, "wake", sv)

    # -- dispatching ---------------------------------------------------------------------------

    def _repick(self, pcpu: int) -> None:
        self._settle(pcpu)
        st = self._pcpus[pcpu]
        prev = st.cur
        if self.measure_decisions:
            t0 = time.perf_counter_ns()
            d = self.sched.pick_next(pcpu, self.now)
            self._decision_ns.append(time.perf_counter_ns() - t0)
        else:
            d = self.sched.pick_next(pcpu, self.now)
        self.decisions += 1
        new = None
        if d.vcpu is not None:
            new = self._vcpus.get(id(d.vcpu))
            what = f"pick_next({pcpu}) at {self.now} chose {d.vcpu.name}"
            if new is None or new.removed:
                raise InvariantViolation(f"{what}, which is not (or no longer) in the scheduler")
            if not new.runnable:
                raise InvariantViolation(f"{what}, which is not runnable")
            if pcpu not in new.hard:
                raise InvariantViolation(f"{what}, outside its hard affinity {sorted(new.hard)}")
            if new.running_on is not None and new.running_on != pcpu:
                raise InvariantViolation(f"{what}, which is running on pCPU {new.running_on}")
            if d.vcpu.pcpu != pcpu:
                raise InvariantViolation(f"{what} but left its SchedVcpu.pcpu {d.vcpu.pcpu}")
        if prev is not None and prev is not new:
            ended = ("removed" if prev.removed else "yield" if prev.yielded
                     else "preempt" if prev.runnable else "block")
            self._runs.append(Run(prev.v.name, pcpu, prev.run_start, self.now, ended))
            prev.running_on = None
            prev.last_pcpu = pcpu
        if prev is not None:
            prev.yielded = False
        if new is not None and new is not prev:
            new.running_on = pcpu
            new.run_start = self.now
            if new.wake_since is not None:
                new.latencies.append(self.now - new.wake_since)
                new.wake_since = None
            if new.last_pcpu is not None and new.last_pcpu != pcpu:
                new.migrations += 1
        st.cur = new
        st.gen += 1
        if new is not None:
            self._push(self.now + max(d.slice_ns, 1), "slice", pcpu, st.gen)
            self._arm_done(pcpu, new)
        self._honour(list(d.tickle), "pick_next")

    def _arm_done(self, pcpu: int, sv: _SimVcpu) -> None:
        if sv.remaining is not None:
            self._push(self.now + max(sv.remaining, 0), "done", pcpu, self._pcpus[pcpu].gen)

    def _tickle(self, pcpu: int) -> None:
        if pcpu not in self._pending:
            self._pending.append(pcpu)

    def _honour(self, tickles: list[int], call: str) -> None:
        for p in tickles:
            if p not in self._pcpus:
                raise InvariantViolation(f"{call} at {self.now} tickled unknown pCPU {p}")
            self._tickle(p)

    def _flush(self) -> None:
        """Let every tickled pCPU pick, then check the instant's end state and the timer."""
        picks = 0
        while self._pending:
            picks += 1
            if picks > MAX_PICKS_PER_INSTANT:
                raise InvariantViolation(f"livelock: {picks} decisions at time {self.now}")
            self._repick(self._pending.popleft())
        for p, st in self._pcpus.items():
            cur = st.cur
            if cur is not None and (cur.removed or not cur.runnable or p not in cur.hard):
                raise InvariantViolation(
                    f"at {self.now} pCPU {p} still runs {cur.v.name}, which is "
                    + ("removed" if cur.removed else "not runnable" if not cur.runnable
                       else f"outside its hard affinity {sorted(cur.hard)}"))
        if self._timed is not None:
            at = self._timed.next_timer()
            if at != self._timer_asked:
                self._timer_asked = at
                self._timer_at = None if at is None else max(at, self.now)
                if self._timer_at is not None:
                    self._push(self._timer_at, "timer", None)

    # -- accounting ----------------------------------------------------------------------------

    def _settle(self, pcpu: int) -> None:
        st = self._pcpus[pcpu]
        dt = self.now - st.since
        st.since = self.now
        if st.cur is not None and dt > 0:
            st.cur.cpu_time += dt
            st.busy += dt
            if st.cur.remaining is not None:
                st.cur.remaining -= dt

    def _settle_vcpu(self, sv: _SimVcpu) -> None:
        if sv.running_on is not None:
            self._settle(sv.running_on)

    def _push(self, when: int, kind: str, obj: Any, gen: int = 0) -> None:
        heapq.heappush(self._events, (when, next(self._seq), kind, obj, gen))

    def _state(self, v: SchedVcpu) -> _SimVcpu:
        sv = self._vcpus.get(id(v))
        if sv is None or sv.removed:
            raise ValueError(f"{v.name} is not in the simulation")
        return sv

    def _timer(self) -> SchedulerTimer:
        assert self._timed is not None
        return self._timed


# -- decision overhead ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Overhead:
    """Real time per ``pick_next`` (ns) over a simulated mixed workload."""

    decisions: int
    mean_ns: float
    median_ns: int
    p99_ns: int


def decision_overhead(make: Callable[[list[int]], Scheduler], nr_pcpus: int = 4,
                      nr_vcpus: int = 16, duration: int = 2 * SECOND) -> Overhead:
    """Time every ``pick_next`` of ``make(pcpus)`` while it schedules a mix of hogs,
    periodic and bursty vCPUs (one per domain) for ``duration`` simulated ns."""
    pcpus = list(range(nr_pcpus))
    sim = Simulator(make(pcpus), pcpus, measure_decisions=True)
    for i in range(nr_vcpus):
        kind = i % 4
        workload: Workload = (Hog() if kind < 2 else Periodic(10 * MS, 1 * MS, phase=i * US)
                              if kind == 2 else Bursty(2 * MS, 5 * MS, seed=i))
        sim.add(workload, domid=i + 1)
    samples = sorted(sim.run(duration).decision_ns)
    if not samples:
        raise RuntimeError("the scheduler made no decisions")
    return Overhead(len(samples), sum(samples) / len(samples), samples[len(samples) // 2],
                    samples[min(len(samples) - 1, len(samples) * 99 // 100)])
