"""A guest flooding the hypervisor console next to a healthy one: the
flooder is held to its per-domain rate limit, the healthy guest's lines all
appear, and the suppressed lines are reported in dmesg."""

from __future__ import annotations

import re

from integration.domains import Host
from pyxen.abi.xen import ShutdownReason
from pyxen.hv.console_limit import make_policy

FLOOD = 1000  # lines through console_io, and as many through port 0xE9
BURST = 40


def test_flooding_guest_is_rate_limited_and_a_healthy_one_is_not(host: Host) -> None:
    # One line a minute after the burst: the guests finish long before a
    # refill can matter (the bound below allows a few).
    host.hv.console.policy = make_policy("info/all", f"{BURST}/60000")
    flooder = host.build("console", f"flood={FLOOD}", domid=host.hv.allocate_domid())
    healthy = host.build("console", domid=host.hv.allocate_domid())
    flooder.start()
    healthy.start()
    assert host.wait_all([flooder, healthy]) == [ShutdownReason.poweroff] * 2, host.describe()
    flooder.destroy()
    healthy.destroy()

    out = host.output()
    flooder_lines = re.findall(rf"^\(d{flooder.domid}\) ", out, re.MULTILINE)
    assert BURST <= len(flooder_lines) <= BURST + 5, host.describe()
    assert host.result(healthy.domid, "console") == "PASS", host.describe()
    assert f"(d{healthy.domid}) e9 works" in out
    reports = [line for line in host.hv.console.ring
               if line.startswith(f"(XEN) d{flooder.domid}: ") and "suppressed" in line]
    dropped = sum(int(re.search(r": (\d+) console lines", r).group(1))  # type: ignore[union-attr]
                  for r in reports)
    assert dropped + len(flooder_lines) >= 2 * FLOOD, reports
    assert not any(f"(XEN) d{healthy.domid}: " in line and "suppressed" in line
                   for line in host.hv.console.ring)
