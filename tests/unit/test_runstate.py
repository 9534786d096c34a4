"""hv/runstate.py: time_in agrees with the guest-visible snapshot."""

from __future__ import annotations

from pyxen.abi.vcpu import RunstateState as S
from pyxen.hv.runstate import Runstate


def test_time_in_is_the_snapshots_figure() -> None:
    r = Runstate(S.runnable, 100)
    r.change(S.running, 150)
    r.change(S.blocked, 400)
    r.change(S.running, 1000)
    for now in (1000, 1234, 900):  # 900: a clock read before the last change counts 0
        snap = r.snapshot(now_ns=now)
        for state in S:
            assert r.time_in(state, now) == snap.time[state]
    assert r.time_in(S.running, 1234) == 250 + 234
    assert r.time_in(S.blocked, 5000) == 600
