"""The instruction fallback on KVM: instructions this KVM cannot emulate (x87, SSE,
AVX, MXCSR, the XSAVE family, CMPXCHG16B, INT n ...) run in pyxen, with the
faults hardware would raise; an instruction pyxen refuses crashes only its domain.
"""

from __future__ import annotations

import re

import pytest

from integration.conftest import RunGuest
from integration.domains import Host
from pyxen.abi.xen import ShutdownReason

COUNTS_RE = re.compile(r"instruction fallbacks: (\d+) \((.*)\)")


def _counts(log: str) -> dict[str, int]:
    m = COUNTS_RE.search(log)
    assert m, log
    counts = dict((name, int(n)) for name, n in
                  (item.rsplit(" ", 1) for item in m.group(2).split(", ")))
    assert sum(counts.values()) == int(m.group(1))
    return counts


@pytest.mark.kvm
def test_insn_guest_passes_on_two_vcpus(run_guest: RunGuest) -> None:
    rc, out, err = run_guest("insn", "smp_n=200", vcpus=2, timeout=180)
    assert rc == 0, out + err
    assert "RESULT insn: PASS" in out, out + err
    assert "FAIL" not in out, out
    counts = _counts(err)
    # Each class went through the fallback (KVM here emulates none of them).
    for name in ("ldmxcsr", "stmxcsr", "addps", "divss", "fld1", "fstp", "xsave", "xrstor",
                 "xgetbv", "monitor", "int3", "int", "into"):
        assert counts.get(name, 0) >= 1, (name, counts)
    assert counts["cmpxchg16b"] >= 2 * 200  # the two vCPUs' increments
    assert "emulating cmpxchg16b (KVM cannot)" in err


@pytest.mark.kvm
def test_refused_instruction_crashes_only_its_domain(host: Host) -> None:
    good = host.build("insn", "smp_n=0")
    bad = host.build("insn", "mode=unsupported")
    good.start()
    bad.start()
    reasons = host.wait_all([good, bad], timeout=180)
    assert reasons == [ShutdownReason.poweroff, ShutdownReason.crash], host.describe()
    assert host.result(good.domid, "insn") == "PASS", host.describe()
    log = host.log.getvalue()
    line = f"d{bad.domid}: crashed: vcpu 0: cannot emulate `xsaves ["
    assert line in log, log
    assert "(0f c7 2d" in log and "64-bit mode" in log and "at rip 0x" in log, log
    assert bad.emulation_counts["xsaves"] == 1
    assert good.emulation_counts["ldmxcsr"] >= 1
