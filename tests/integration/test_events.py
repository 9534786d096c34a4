"""Event channels, timers, blocking, SMP and time: the guests that use upcalls.

Each guest checks ordering properties itself (never woken before a deadline,
events delivered once, times nondecreasing, ...) and reports one RESULT
line; nothing here asserts on speed.  The info lines the guests print
(round-trip times, timer lateness, clock deviation) are only checked to be
present.
"""

from __future__ import annotations

import re

import pytest

from .test_guests import RunGuest, assert_result

TIMEOUT = 180


def _info(domid: int, pattern: str, out: str) -> re.Match[str] | None:
    return re.search(rf"^\(d{domid}\) {pattern}", out, re.MULTILINE)


@pytest.mark.kvm
def test_evtchn(run_guest: RunGuest) -> None:
    status, out, err = run_guest("evtchn", timeout=TIMEOUT)
    assert_result("evtchn", status, out, err)


@pytest.mark.kvm
def test_ipi(run_guest: RunGuest) -> None:
    status, out, err = run_guest("ipi", vcpus=2, timeout=TIMEOUT)
    domid = assert_result("ipi", status, out, err)
    assert _info(domid, r"ipi: n=1000 mean_rtt_us=\d+\.\d{3}$", out), out
    pattern = (r"ipi: n=1000 rtt_median_ns=\d+ rtt_p99_ns=\d+ "
               r"oneway_median_ns=\d+ oneway_p99_ns=\d+$")
    assert _info(domid, pattern, out), out


@pytest.mark.kvm
def test_timer(run_guest: RunGuest) -> None:
    status, out, err = run_guest("timer", timeout=TIMEOUT)
    domid = assert_result("timer", status, out, err)
    pattern = r"timer: count=\d+ late_median_us=\d+ late_p99_us=\d+ late_max_us=\d+$"
    assert _info(domid, pattern, out), out


@pytest.mark.kvm
def test_poll(run_guest: RunGuest) -> None:
    status, out, err = run_guest("poll", vcpus=2, timeout=TIMEOUT)
    assert_result("poll", status, out, err)
    assert "skipping" not in out, out


@pytest.mark.kvm
def test_block(run_guest: RunGuest) -> None:
    status, out, err = run_guest("block", vcpus=2, timeout=TIMEOUT)
    assert_result("block", status, out, err)
    assert "skipping" not in out, out


@pytest.mark.kvm
def test_clock(run_guest: RunGuest) -> None:
    status, out, err = run_guest("clock", cmdline="secs=10", vcpus=2, timeout=TIMEOUT)
    domid = assert_result("clock", status, out, err)
    assert _info(domid, r"clock: samples=\d+ max_dev_us=", out), out
    assert _info(domid, r"ok - vcpu 1: 2000 pvclock reads monotonic", out), out


@pytest.mark.kvm
def test_hostile_two_vcpus(run_guest: RunGuest) -> None:
    """hostile with vcpus = 2: also the VCPUOP_initialise/up checks on vCPU 1."""
    status, out, err = run_guest("hostile", vcpus=2, timeout=TIMEOUT)
    domid = assert_result("hostile", status, out, err)
    assert "skipping" not in out, out
    assert _info(domid, r"ok - up\(vcpu 1\) never initialised -> -EINVAL$", out), out


@pytest.mark.kvm
@pytest.mark.parametrize("hz", [0, 100])
def test_idle(run_guest: RunGuest, hz: int) -> None:
    status, out, err = run_guest("idle", cmdline=f"secs=1 hz={hz}", timeout=TIMEOUT)
    domid = assert_result("idle", status, out, err)
    m = _info(domid, rf"idle: secs=1 hz={hz} ticks=(\d+)$", out)
    assert m, out
    ticks = int(m.group(1))
    assert ticks <= hz + 1, out
    assert ticks > 0, out
