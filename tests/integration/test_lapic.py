"""The local APIC on real guests: guests/tests/lapic.c in each of its modes.

The guest checks the semantics itself (register values, ordering, never an
interrupt before its deadline) and prints one RESULT line; nothing here
asserts on speed.  The measuring modes' info lines are only checked to be
present.
"""

from __future__ import annotations

import re
import threading

import pytest

from pyxen.abi.xen import ShutdownReason

from .daemon_helpers import wait_for
from .domains import Host
from .test_guests import RunGuest, assert_result

TIMEOUT = 180
CRASH_STATUS = 13


def _info(domid: int, pattern: str, out: str) -> re.Match[str] | None:
    return re.search(rf"^\(d{domid}\) {pattern}", out, re.MULTILINE)


@pytest.mark.kvm
def test_lapic_one_vcpu(run_guest: RunGuest) -> None:
    status, out, err = run_guest("lapic", timeout=TIMEOUT)
    domid = assert_result("lapic", status, out, err)
    assert _info(domid, r"lapic: one vCPU, skipping", out), out
    assert _info(domid, r"ok - upcall vector 0x90 on vCPU 0$", out), out


@pytest.mark.kvm
def test_lapic_two_vcpus(run_guest: RunGuest) -> None:
    """Also IPIs between the vCPUs, an NMI IPI, INIT/SIPI into real mode."""
    status, out, err = run_guest("lapic", vcpus=2, timeout=TIMEOUT)
    domid = assert_result("lapic", status, out, err)
    assert "skipping" not in out, out
    assert _info(domid, r"ok - SIPI started vCPU 1 at 0x8000 \(marker\)$", out), out
    assert _info(domid, r"ok - VCPUOP_initialise \+ up after INIT$", out), out


@pytest.mark.kvm
def test_lapic_solo5_start_up_sequence(run_guest: RunGuest) -> None:
    status, out, err = run_guest("lapic", cmdline="mode=solo5", timeout=TIMEOUT)
    domid = assert_result("lapic", status, out, err)
    assert _info(domid, r"ok - events came through vector 32", out), out


@pytest.mark.kvm
def test_lapic_extint_ipi_crashes_the_domain_as_xen_does(run_guest: RunGuest) -> None:
    status, out, err = run_guest("lapic", cmdline="mode=extint", timeout=TIMEOUT)
    assert status == CRASH_STATUS, out + err
    assert "ExtINT IPI" in err, err
    assert "RESULT lapic" not in out, out


@pytest.mark.kvm
def test_lapic_hostile_beside_a_healthy_domain(host: Host) -> None:
    good = host.build("lapic", "", vcpus=2)
    bad = host.build("lapic", "mode=hostile")
    good.start()
    bad.start()
    reasons = host.wait_all([good, bad], timeout=TIMEOUT)
    assert reasons == [ShutdownReason.poweroff] * 2, host.describe()
    assert host.result(good.domid, "lapic") == "PASS", host.describe()
    assert host.result(bad.domid, "lapic") == "PASS", host.describe()
    assert "pyxen bug" not in host.log.getvalue(), host.describe()


@pytest.mark.kvm
def test_lapic_measurements_report(run_guest: RunGuest) -> None:
    status, out, err = run_guest("lapic", cmdline="mode=bench n=500", timeout=TIMEOUT)
    domid = assert_result("lapic", status, out, err)
    pattern = r"lapic: bench n=500 null_hypercall_ns=\d+ eoi_xapic_ns=\d+ eoi_x2apic_ns=\d+$"
    assert _info(domid, pattern, out), out
    status, out, err = run_guest("lapic", cmdline="mode=timer secs=1", timeout=TIMEOUT)
    domid = assert_result("lapic", status, out, err)
    pattern = r"lapic: timer count=\d+ late_median_us=\d+ late_p99_us=\d+ late_max_us=\d+$"
    assert _info(domid, pattern, out), out


@pytest.mark.kvm
def test_pause_while_the_guest_sends_itself_start_up_ipis(host: Host) -> None:
    """A paused vCPU keeps INIT/SIPI signals for later; it must still park, or
    Domain.pause() waits for it for ever (and the vCPU thread spins)."""
    d = host.build("lapic", "mode=sipiflood secs=4")
    d.start()
    wait_for(lambda: "lapic: sipiflood started" in host.output(), "the SIPI flood")
    for _ in range(20):
        pauser = threading.Thread(target=d.pause, daemon=True)
        pauser.start()
        pauser.join(60)  # a bound, not a timing: pause() normally returns at once
        assert not pauser.is_alive(), "Domain.pause() never returned"
        d.unpause()
    assert host.wait_all([d], timeout=TIMEOUT) == [ShutdownReason.poweroff], host.describe()
    assert host.result(d.domid, "lapic") == "PASS", host.describe()
