"""A reference round-robin scheduler: the least a scheduler can do.

One FIFO of runnable vCPUs shared by every pCPU, fixed 2 ms slices, no
accounting, no parameters.  It is not offered to users (not in
``SCHEDULERS``): tests use it to exercise the dispatcher on its own, and
the scheduler benchmark uses it as the cost floor per decision.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from pyxen.hv.sched.interface import Decision, SchedVcpu, Topology, Tracer


class RoundRobin:
    """Reference: one FIFO, 2 ms slices, no accounting (about the least a scheduler does)."""

    name = "rr"
    SLICE_NS = 2_000_000

    def __init__(self, pcpus: Sequence[int], topology: Topology | None = None,
                 tracer: Tracer | None = None, params: dict[str, Any] | None = None) -> None:
        self.queue: deque[SchedVcpu] = deque()
        self.current: dict[int, SchedVcpu | None] = {p: None for p in pcpus}

    def insert_vcpu(self, v: SchedVcpu) -> None:
        pass

    def remove_vcpu(self, v: SchedVcpu, now: int) -> list[int]:
        return self.sleep(v, now)

    def wake(self, v: SchedVcpu, now: int) -> list[int]:
        if v.runnable:
            return []
        v.runnable = True
        self.queue.append(v)
        idle = [p for p, c in self.current.items() if c is None and p in v.hard_affinity]
        return idle[:1]

    def sleep(self, v: SchedVcpu, now: int) -> list[int]:
        v.runnable = False
        if v in self.queue:
            self.queue.remove(v)
        return [p for p, c in self.current.items() if c is v]

    def yield_(self, v: SchedVcpu, now: int) -> None:
        pass

    def pick_next(self, pcpu: int, now: int) -> Decision:
        old = self.current[pcpu]
        if old is not None:
            old.pcpu = None
            if old.runnable:
                self.queue.append(old)
        self.current[pcpu] = None
        for _ in range(len(self.queue)):
            v = self.queue.popleft()
            if v.pcpu is None and pcpu in v.hard_affinity:
                v.pcpu = v.last_pcpu = pcpu
                self.current[pcpu] = v
                return Decision(v, self.SLICE_NS)
            self.queue.append(v)
        return Decision(None, self.SLICE_NS)

    def set_affinity(self, v: SchedVcpu, hard: frozenset[int], soft: frozenset[int],
                     now: int) -> list[int]:
        v.hard_affinity, v.soft_affinity = hard, soft
        return [p for p, c in self.current.items() if c is v and p not in hard]

    def domain_params(self, domid: int) -> dict[str, Any]:
        return {}

    def set_domain_params(self, domid: int, params: dict[str, Any], now: int) -> None:
        pass

    def global_params(self) -> dict[str, Any]:
        return {}

    def set_global_params(self, params: dict[str, Any]) -> None:
        pass

    def dump(self) -> str:
        return f"queue {[v.name for v in self.queue]}"
