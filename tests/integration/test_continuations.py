"""Long hypercalls preempted and continued as Xen continues them (issue 10 item 4).

The guest is guests/tests/preempt.c.  Preemption points are honoured by
pause, destroy and the scheduler: each test would hang (and fail at its
bound) if a hypercall could not be interrupted.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable

import pytest

from integration.daemon_helpers import wait_for
from integration.domains import Host
from pyxen.abi.xen import ShutdownReason
from pyxen.hv import dispatch, event_channel
from pyxen.hv.domain import Domain
from pyxen.hv.sched.dispatcher import Dispatcher
from pyxen.hv.sched.roundrobin import RoundRobin
from pyxen.hv.vcpu import Req, VcpuRunner

BOUND_S = 60  # a bound on a hang, not a timing: each step normally takes milliseconds
COUNT = 0x7FFF_FFFF
MAP_GRANT_REF_SIZE = 32
GRANT_TABLE_OP = 20


def _bounded(fn: Callable[[], object], what: str) -> None:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    thread.join(BOUND_S)
    assert not thread.is_alive(), f"{what} never returned"


@pytest.mark.kvm
def test_interrupted_batches_give_the_same_results(host: Host,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every 7th preemption point of every batch (grant swap/copy/map/unmap,
    decrease/populate, gmfn_range, a console write) gets a request -- alternately an event for
    the guest and a scheduler preemption -- so each batch is restarted many
    times; the guest checks that every element was done exactly once, in order."""
    d = host.build("preempt", memory=32)
    real_preempted = dispatch.Call.preempted
    points = 0
    sent = 0
    restarts: list[tuple[int, tuple[int, ...]]] = []

    def preempted(call: dispatch.Call) -> bool:
        nonlocal points, sent
        if call.domain is d:
            points += 1
            if points % 14 == 0:
                m = re.search(r"preempt: port=(\d+)", host.output())
                assert m is not None, "the guest did not print its port"
                with d.hv.event_lock:
                    event_channel.set_pending(d, 0, int(m.group(1)))
                sent += 1
            elif points % 7 == 0:
                call.vcpu.request(Req.PREEMPT)
        return real_preempted(call)

    real_restart = VcpuRunner.restart_hypercall

    def restart(runner: VcpuRunner, nr: int, args: tuple[int, ...], compat: bool) -> None:
        restarts.append((nr, args))
        real_restart(runner, nr, args, compat)

    monkeypatch.setattr(dispatch.Call, "preempted", preempted)
    monkeypatch.setattr(VcpuRunner, "restart_hypercall", restart)
    d.start()
    assert host.wait_all([d], timeout=120) == [ShutdownReason.poweroff], host.describe()
    assert host.result(d.domid, "preempt") == "PASS", host.describe()
    assert len(restarts) >= points // 7 > 100, (len(restarts), points)
    assert {nr for nr, _ in restarts} == {GRANT_TABLE_OP, 12, 18}  # + memory_op, console_io
    lines = re.findall(r"preempt: line (\d\d) \.+$", host.output(), re.MULTILINE)
    assert lines == [f"{i:02d}" for i in range(40)], host.describe()  # each chunk once
    m = re.search(r"preempt: events=(\d+)", host.output())
    assert m is not None and int(m.group(1)) == sent, (sent, host.describe())


def _endless(host: Host) -> tuple[Domain, int, int]:
    d = host.build("preempt", "mode=endless", memory=32)
    d.start()
    wait_for(lambda: "preempt: endless" in host.output(), "the endless batch")
    m = re.search(r"preempt: endless stub=(0x[0-9a-f]+) uop=(0x[0-9a-f]+)", host.output())
    assert m is not None, host.describe()
    return d, int(m.group(1), 16), int(m.group(2), 16)


@pytest.mark.kvm
def test_pause_and_destroy_during_a_batch_of_2_to_the_31(host: Host) -> None:
    """grant_table_op(map, 2^31 - 1 elements): Domain.pause returns, the parked
    vCPU's registers are Xen's continuation -- RIP on the stub's OUT, RAX = 20,
    RDI = cmd, RSI = the uop advanced past the elements done, RDX = the count
    left -- the batch makes progress across pauses, and destroy returns."""
    d, stub, uop = _endless(host)
    out_insn = stub + 5  # B8 <nr:u32>, then the OUT
    seen: list[tuple[int, int, int, int, int]] = []

    def paused_in_the_batch() -> bool:
        _bounded(d.pause, "Domain.pause()")
        r = d.vcpus[0].kvm.regs
        regs = (int(r.rip), int(r.rax), int(r.rdi), int(r.rsi), int(r.rdx))
        d.unpause()
        if regs[0] == out_insn and regs[4] < COUNT:
            seen.append(regs)
        return len(seen) >= 2 and seen[-1][4] < seen[0][4]

    wait_for(paused_in_the_batch, "two pauses inside the batch with progress between them",
             timeout=BOUND_S)
    for rip, rax, rdi, rsi, rdx in seen:
        assert (rip, rax, rdi) == (out_insn, GRANT_TABLE_OP, 0)
        assert 0 < rdx < COUNT
        assert rsi == uop + MAP_GRANT_REF_SIZE * (COUNT - rdx)
    assert "RESULT preempt" not in host.output()
    _bounded(d.destroy, "Domain.destroy()")


@pytest.mark.kvm
def test_the_scheduler_preempts_a_batch_of_2_to_the_31(host: Host) -> None:
    """One pCPU for an endless batch and a timer guest: the timer guest gets
    the pCPU (the dispatcher's preemption request ends the batch's invocation)
    and finishes."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    hv = host.hv
    hv.dispatcher = Dispatcher(RoundRobin([cpu]), [cpu], hv.timers, hv.system_time_ns)
    d, _stub, _uop = _endless(host)
    other = host.build("timer", "secs=1")
    other.start()
    assert host.wait_all([other], timeout=120) == [ShutdownReason.poweroff], host.describe()
    assert host.result(other.domid, "timer") == "PASS", host.describe()
    assert d.shutdown_reason is None
    _bounded(d.destroy, "Domain.destroy()")
