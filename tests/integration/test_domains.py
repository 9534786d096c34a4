"""Several domains in one hypervisor: interdomain events, isolation, pause, teardown.

These tests drive the hypervisor through its Python API in this process
(``domains.Host``), because they need what the command line cannot do yet:
two domains at once and ports handed over by the test.
"""

from __future__ import annotations

import os

import pytest

from integration.domains import Host
from pyxen.abi.xen import ShutdownReason
from pyxen.hv import event_channel


def _assert_passed(host: Host, domid: int, prog: str) -> None:
    assert host.result(domid, prog) == "PASS", f"d{domid} {prog}\n{host.describe()}"


@pytest.mark.kvm
def test_interdomain_pingpong(host: Host) -> None:
    ping_id = host.hv.allocate_domid()
    pong_id = host.hv.allocate_domid()
    ping = host.build("pingpong", f"role=ping peer={pong_id} n=10000", domid=ping_id)
    # As a toolstack does for a backend: offer a port of PING to PONG.
    with host.hv.event_lock:
        port = event_channel.alloc_unbound(ping, pong_id)
    pong = host.build("pingpong", f"role=pong peer={ping_id} port={port}", domid=pong_id)
    ping.start()
    pong.start()
    reasons = host.wait_all([ping, pong], timeout=240)
    assert reasons == [ShutdownReason.poweroff] * 2, host.describe()
    _assert_passed(host, ping_id, "pingpong")
    _assert_passed(host, pong_id, "pingpong")


@pytest.mark.kvm
def test_hostile_guest_leaves_its_neighbour_alone(host: Host) -> None:
    good = host.build("timer", "secs=1")
    bad = host.build("hostile")
    good.start()
    bad.start()
    reasons = host.wait_all([good, bad], timeout=120)
    assert reasons == [ShutdownReason.poweroff] * 2, host.describe()
    _assert_passed(host, good.domid, "timer")
    _assert_passed(host, bad.domid, "hostile")


@pytest.mark.kvm
@pytest.mark.parametrize("action", ["triple", "crash"])
def test_a_crashing_domain_leaves_its_neighbour_alone(host: Host, action: str) -> None:
    good = host.build("ipi", "n=200", vcpus=2)
    bad = host.build("sched", f"action={action}")
    good.start()
    bad.start()
    reasons = host.wait_all([good, bad], timeout=120)
    assert reasons == [ShutdownReason.poweroff, ShutdownReason.crash], host.describe()
    _assert_passed(host, good.domid, "ipi")
    if action == "triple":
        assert "triple fault" in host.log.getvalue() and "rip=" in host.log.getvalue()


@pytest.mark.kvm
def test_privileged_domain_shuts_another_down(host: Host) -> None:
    victim = host.build("idle", "secs=60")
    boss = host.build("sched", f"action=remote target={victim.domid} reason=1")
    boss.privileged = True
    victim.start()
    boss.start()
    reasons = host.wait_all([boss, victim], timeout=60)
    assert reasons == [ShutdownReason.poweroff, ShutdownReason.reboot], host.describe()
    _assert_passed(host, boss.domid, "sched")


@pytest.mark.kvm
def test_pause_quiesces_every_vcpu(host: Host) -> None:
    d = host.build("ipi", "n=300", vcpus=2)
    d.start()
    for _ in range(5):
        d.pause()
        assert all(v.quiescent for v in d.vcpus)
        d.unpause()
    assert host.wait_all([d], timeout=120) == [ShutdownReason.poweroff], host.describe()
    _assert_passed(host, d.domid, "ipi")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.kvm
def test_create_destroy_cycles_release_everything(host: Host) -> None:
    """200 domains built, started and destroyed: threads, fds and memory come back."""
    import threading

    def cycle() -> None:
        d = host.build("hello", memory=4)
        d.start()
        d.wait(30)
        d.destroy()

    for _ in range(5):  # warm up caches and allocator pools
        cycle()
    fds, threads, rss = _fds(), threading.active_count(), _rss_kib()
    for _ in range(200):
        cycle()
    assert _fds() == fds
    assert threading.active_count() == threads
    assert host.hv.domains == {}
    # Generous bound: a leak of one 4 MiB guest per cycle would be 800 MiB.
    assert _rss_kib() - rss < 32 * 1024, f"RSS grew from {rss} KiB to {_rss_kib()} KiB"
