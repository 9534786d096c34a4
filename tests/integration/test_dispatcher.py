"""The pCPU dispatcher enforcing a scheduler's decisions on real vCPU threads.

A small round-robin scheduler (below) drives the dispatcher here so that
the dispatcher's mechanics -- grants, pinning, preemption at slice end,
blocking and waking, pause -- are tested on their own with real guests.
"""

from __future__ import annotations

import os
from collections import deque

import pytest

from integration.domains import Host
from pyxen.abi.xen import ShutdownReason
from pyxen.hv.sched.dispatcher import Dispatcher
from pyxen.hv.sched.interface import Decision, SchedVcpu

SLICE_NS = 2_000_000


class RoundRobin:
    """One global FIFO; every runnable vCPU gets SLICE_NS in turn."""

    name = "rr"

    def __init__(self, pcpus: list[int]) -> None:
        self.pcpus = pcpus
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
        idle = [p for p, c in self.current.items() if c is None]
        return idle[:1] or list(self.current)[:1]

    def sleep(self, v: SchedVcpu, now: int) -> list[int]:
        v.runnable = False
        if v in self.queue:
            self.queue.remove(v)
        held = [p for p, c in self.current.items() if c is v]
        return held

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
            if v.runnable and v.pcpu is None and pcpu in v.hard_affinity:
                v.pcpu = v.last_pcpu = pcpu
                self.current[pcpu] = v
                return Decision(v, SLICE_NS)
            self.queue.append(v)
        return Decision(None, SLICE_NS)

    def set_affinity(self, v: SchedVcpu, hard: frozenset[int], soft: frozenset[int],
                     now: int) -> list[int]:
        v.hard_affinity, v.soft_affinity = hard, soft
        return []

    def domain_params(self, domid: int) -> dict[str, object]:
        return {}

    def set_domain_params(self, domid: int, params: dict[str, object], now: int) -> None:
        pass

    def global_params(self) -> dict[str, object]:
        return {}

    def set_global_params(self, params: dict[str, object]) -> None:
        pass

    def dump(self) -> str:
        return f"queue {[v.name for v in self.queue]}"


def _use_dispatcher(host: Host, pcpus: list[int]) -> Dispatcher:
    hv = host.hv
    dispatcher = Dispatcher(RoundRobin(pcpus), pcpus, hv.timers, hv.system_time_ns)
    hv.dispatcher = dispatcher
    return dispatcher


@pytest.mark.kvm
def test_more_vcpus_than_pcpus_all_finish(host: Host) -> None:
    """Two 2-vCPU guests (IPI ping-pong, timers) share one pCPU under the dispatcher."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    dispatcher = _use_dispatcher(host, [cpu])
    a = host.build("ipi", "n=100", vcpus=2)
    b = host.build("timer", "secs=1")
    a.start()
    b.start()
    reasons = host.wait_all([a, b], timeout=120)
    assert reasons == [ShutdownReason.poweroff] * 2, host.describe()
    assert host.result(a.domid, "ipi") == "PASS", host.describe()
    assert host.result(b.domid, "timer") == "PASS", host.describe()
    assert dispatcher.decisions > 10
    assert dispatcher.running() == {cpu: None} or all(
        v is None for v in dispatcher.running().values())


@pytest.mark.kvm
def test_pause_with_a_dispatcher(host: Host) -> None:
    pcpus = sorted(os.sched_getaffinity(0))
    _use_dispatcher(host, pcpus)
    d = host.build("ipi", "n=200", vcpus=2)
    d.start()
    for _ in range(3):
        d.pause()
        assert all(v.quiescent for v in d.vcpus)
        d.unpause()
    assert host.wait_all([d], timeout=120) == [ShutdownReason.poweroff], host.describe()
    assert host.result(d.domid, "ipi") == "PASS", host.describe()
