"""VcpuRunner._park's rule, on a stand-in for the runner (no KVM): a paused vCPU
parks even with INIT/SIPI signals queued; it applies them once unpaused."""

from __future__ import annotations

import collections
import threading
from typing import Any

from pyxen.hv.vcpu import VcpuRunner
from pyxen.hv.vcpu_control import Req, ThreadState, VcpuControl


class Domain:
    def __init__(self) -> None:
        self.pause_count = 1
        self.quiesced = threading.Event()

    def vcpu_quiesced(self) -> None:
        self.quiesced.set()


class Apic:
    def __init__(self) -> None:
        self.signals: collections.deque[int] = collections.deque([0x10])  # a SIPI


class Runner:
    """The attributes _park reads and writes."""

    def __init__(self) -> None:
        self.control = VcpuControl(lambda _value: None)
        self.control.started()
        self.online = True
        self.domain = Domain()
        self.apic = Apic()
        self.dispatcher = None
        self.time = self
        self.states: list[int] = []

    def set_runstate(self, state: int) -> None:
        self.states.append(state)


def test_a_paused_vcpu_parks_with_a_signal_queued() -> None:
    """Before, a queued SIPI made _park return at once while the domain was paused
    (signals are applied only unpaused): the vCPU thread spun and Domain.pause()
    waited for it for ever.  A guest sending SIPIs while paused caused it."""
    runner: Any = Runner()
    done = threading.Event()

    def park() -> None:
        VcpuRunner._park(runner)
        done.set()

    thread = threading.Thread(target=park, daemon=True)
    thread.start()
    assert runner.domain.quiesced.wait(30)
    assert not done.is_set(), "_park returned without parking the paused vCPU"
    assert runner.control.state is ThreadState.PARKED and runner.control.quiescent
    runner.domain.pause_count = 0  # Domain.unpause
    runner.control.request(Req.STATE)
    assert done.wait(30)
    thread.join()
    assert runner.control.state is ThreadState.RUNNING


def test_an_unpaused_vcpu_with_a_signal_does_not_park() -> None:
    """Down but not paused, with a SIPI queued: _park returns so that it is applied."""
    runner: Any = Runner()
    runner.domain.pause_count = 0
    runner.online = False
    VcpuRunner._park(runner)
    assert runner.control.state is ThreadState.RUNNING
    assert not runner.domain.quiesced.is_set()
