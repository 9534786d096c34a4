"""The pCPU dispatcher enforcing a scheduler's decisions on real vCPU threads.

The reference round-robin scheduler drives the dispatcher here so that
the dispatcher's mechanics -- grants, pinning, preemption at slice end,
blocking and waking, pause -- are tested on their own with real guests.
"""

from __future__ import annotations

import os

import pytest

from integration.domains import Host
from pyxen.abi.xen import ShutdownReason
from pyxen.hv.sched.dispatcher import Dispatcher
from pyxen.hv.sched.roundrobin import RoundRobin


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
