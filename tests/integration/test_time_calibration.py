"""The calibration tick visits only awake vCPUs (hv/vcpu_time.py).

Real guests in a hypervisor in this process: idle.elf arms a timer an hour
ahead and blocks; timer.elf blocks and wakes many times a second. Checked:
a blocked vCPU leaves ``hv.awake_vcpus`` and is not updated by the ticks,
one that wakes has caught up (its generation is the current one), and a
destroyed domain's vCPUs are gone from the set (else it would keep the
domain alive).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from integration.domains import Host
from pyxen.abi.vcpu import RunstateState
from pyxen.hv.domain import Domain

TIMEOUT = 60.0


def _wait(what: str, ok: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _blocked(domain: Domain) -> bool:
    return all(v.time.runstate.state == RunstateState.blocked for v in domain.vcpus)


def _tick(host: Host) -> None:
    """Run a calibration tick now (the timer thread's work, done in this thread)."""
    host.hv._calibrate()


@pytest.mark.kvm
def test_blocked_vcpus_are_not_visited_and_catch_up_when_they_wake(host: Host) -> None:
    idle = host.build("idle", "secs=3600")
    idle.start()
    _wait("idle.elf to block", lambda: _blocked(idle))
    vcpu = idle.vcpus[0]
    assert vcpu not in host.hv.awake_vcpus
    before = vcpu.time.generation
    _tick(host)
    _tick(host)
    assert vcpu.time.generation == before  # the ticks passed it by
    assert host.hv.clock_generation > before

    busy = host.build("timer", "secs=2")  # blocks and wakes ~100 times a second
    busy.start()
    runner = busy.vcpus[0]
    _tick(host)
    # Each time it wakes it is brought level with the latest tick before it runs.
    _wait("the timer guest to wake after a tick",
          lambda: runner.time.generation == host.hv.clock_generation)
    host.wait_all([busy], timeout=TIMEOUT)
    assert host.result(busy.domid, "timer") == "PASS", host.describe()

    idle.destroy()
    busy.destroy()
    _wait("the destroyed domains' vCPUs to leave the awake set",
          lambda: not host.hv.awake_vcpus)
