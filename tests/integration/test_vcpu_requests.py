"""Wake-ups and requests reaching vCPUs at the worst moment, on real guests.

The hypervisor runs in this process (``domains.Host``) so that a test can
step in between two lines of a hypercall through a hook, deterministically.
"""

from __future__ import annotations

import pytest

from integration.domains import Host
from pyxen.abi.xen import ShutdownReason
from pyxen.hv import event_channel
from pyxen.hv.domain import Domain
from pyxen.hv.hypercalls import sched_op


@pytest.mark.kvm
def test_poll_sees_a_send_between_its_check_and_its_sleep(host: Host,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10 item 2: SCHEDOP_poll checked its ports before block() armed its
    wake-up, so a send in between (a PV spinlock kick to a masked port) was
    lost and the poll slept on.  Here the send is made from inside the poll's
    port check, after the port was found idle."""
    d = host.build("poll", "mode=race")
    real_is_pending = sched_op.is_pending
    sent: list[int] = []

    def send_after_the_check(domain: Domain, port: int) -> bool:
        pending = real_is_pending(domain, port)
        if domain is d and not sent:
            sent.append(port)
            with domain.hv.event_lock:
                event_channel.set_pending(domain, 0, port)
        return pending

    monkeypatch.setattr(sched_op, "is_pending", send_after_the_check)
    d.start()
    assert host.wait_all([d], timeout=60) == [ShutdownReason.poweroff], host.describe()
    assert sent, "the poll never checked its port"
    assert host.result(d.domid, "poll") == "PASS", host.describe()
