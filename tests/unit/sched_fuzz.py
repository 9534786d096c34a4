"""Random call sequences against a scheduler, checking the interface's invariants.

Unlike ``pyxen.hv.sched.simulate`` (where a tickled pCPU picks at the same
instant), this driver acts like the real dispatcher: an idle pCPU that is
tickled picks at once, a busy one only after a delay (its vCPU has to
leave the guest first) during which other calls happen.  Used by the
test_sched_{credit,rtds,null}.py property tests, each with a fixed seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from pyxen.hv.sched.interface import Scheduler, SchedulerTimer, SchedVcpu

US = 1_000
MS = 1_000_000


class Fuzz:
    def __init__(self, sched: Scheduler, pcpus: Sequence[int], seed: int,
                 params: Callable[[random.Random], dict[str, Any]] | None = None) -> None:
        self.s = sched
        self.pcpus = list(pcpus)
        self.rng = random.Random(seed)
        self.params = params
        self.now = 0
        self.vcpus: list[SchedVcpu] = []
        self.removed: list[SchedVcpu] = []
        self.running: dict[int, SchedVcpu | None] = {p: None for p in self.pcpus}
        self.pending: set[int] = set()  # tickled busy pCPUs that have not picked yet
        self.next_domid = 1
        self.decisions = 0

    # -- the dispatcher's side -------------------------------------------------------------

    def decide(self, p: int) -> None:
        d = self.s.pick_next(p, self.now)
        self.decisions += 1
        self.pending.discard(p)
        v = d.vcpu
        if v is not None:
            where = f"pick_next({p}) at {self.now} chose {v.name}"
            assert v not in self.removed, f"{where}: removed"
            assert v.runnable, f"{where}: not runnable"
            assert p in v.hard_affinity, f"{where}: outside {sorted(v.hard_affinity)}"
            for q, w in self.running.items():
                assert q == p or w is not v, f"{where}: also running on {q}"
            assert v.pcpu == p, f"{where}: its pcpu says {v.pcpu}"
        prev = self.running[p]
        if prev is not None and prev is not v:
            assert prev.pcpu != p, f"{prev.name} left pCPU {p} but its pcpu still says so"
        self.running[p] = v
        self.tickle(list(d.tickle))

    def tickle(self, pcpus: list[int]) -> None:
        for p in pcpus:
            assert p in self.running, f"tickled unknown pCPU {p}"
            if self.running[p] is None:
                self.decide(p)  # an idle pCPU picks at once
            else:
                self.pending.add(p)  # a busy one once its vCPU is out of the guest

    def flush(self) -> None:
        while self.pending:
            self.decide(min(self.pending))

    # -- random steps ----------------------------------------------------------------------

    def affinity(self) -> frozenset[int]:
        k = self.rng.randint(1, len(self.pcpus))
        return frozenset(self.rng.sample(self.pcpus, k))

    def step(self) -> None:
        rng = self.rng
        self.now += rng.choice((0, 0, 1, 10 * US, 300 * US, 2 * MS, 7 * MS, 31 * MS))
        if isinstance(self.s, SchedulerTimer):
            at = self.s.next_timer()
            if at is not None and at <= self.now:
                self.tickle(self.s.on_timer(self.now))
        op = rng.random()
        live = self.vcpus
        if op < 0.08 or not live:
            v = SchedVcpu(self.next_domid, rng.randint(0, 2), self.affinity(), self.affinity())
            self.next_domid += 1
            self.s.insert_vcpu(v)
            assert not v.runnable
            live.append(v)
        elif op < 0.35:
            v = rng.choice(live)
            self.tickle(self.s.wake(v, self.now))
            assert v.runnable
        elif op < 0.50:
            v = rng.choice(live)
            held = self.running_on(v)
            tickles = self.s.sleep(v, self.now)
            assert not v.runnable
            if held is not None:
                assert held in tickles
                self.decide(held)  # the dispatcher re-picks the pCPU it gave back
            self.tickle([p for p in tickles if p != held])
        elif op < 0.57:
            v = rng.choice(live)
            held = self.running_on(v)
            if held is not None:
                self.s.yield_(v, self.now)
                self.decide(held)
        elif op < 0.75:
            busy = [p for p, v in self.running.items() if v is not None]
            if self.pending and rng.random() < 0.6:
                self.decide(rng.choice(sorted(self.pending)))  # a preemption acknowledged
            elif busy:
                self.decide(rng.choice(busy))  # a slice ended
        elif op < 0.85:
            v = rng.choice(live)
            self.tickle(self.s.set_affinity(v, self.affinity(), self.affinity(), self.now))
        elif op < 0.90:
            v = rng.choice(live)
            held = self.running_on(v)
            if held is not None:
                self.running[held] = None  # released before the scheduler hears of it
            live.remove(v)
            self.removed.append(v)
            self.tickle(self.s.remove_vcpu(v, self.now))
            if held is not None and self.running[held] is None:
                self.decide(held)
        elif self.params is not None:
            v = rng.choice(live)
            self.tickle(self.s.set_domain_params(v.domid, self.params(rng), self.now) or [])

    def running_on(self, v: SchedVcpu) -> int | None:
        for p, w in self.running.items():
            if w is v:
                return p
        return None

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()
        self.flush()

    def idle_pcpus(self) -> list[int]:
        return [p for p, v in self.running.items() if v is None]
