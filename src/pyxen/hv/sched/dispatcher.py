"""The pCPU dispatcher: a scheduler's decisions enforced on the vCPU threads.

Design: every vCPU keeps its own thread (KVM wants that), but a thread may
enter KVM_RUN only while it holds a *grant* for one of the hypervisor's
pCPUs, and it is pinned to that host CPU while it does.  One lock guards
the scheduler and the grant table; the scheduler is only ever called under
it.  Events reach the dispatcher from three places:

- the vCPU's own thread: it became runnable (``runnable``), it stops being
  runnable (``stopped``: blocked, parked, down, gone), or it acknowledges a
  preemption request (``preempted``) -- each may make the scheduler pick
  again for a pCPU;
- the timer thread: a pCPU's slice ended (``_slice_end``);
- tickles returned by the scheduler from wake/sleep: an idle pCPU picks at
  once; a busy one has its vCPU preempted first.

Preemption is a request: the dispatcher publishes ``Req.PREEMPT`` in the
vCPU's request word (hv/vcpu_control.py: immediate_exit and a signal, as for
any request; a request already pending is not sent again); the thread leaves
KVM_RUN -- or a long hypercall at its next preemption point, through a
continuation -- calls ``preempted`` from its attend step, and only then is the
pCPU re-picked.  So a pCPU is never handed on while its vCPU may still be in
the guest.  A vCPU thread waiting for a grant sleeps on its own condition
(``VcpuRunner.wait_for_grant``); ``grant_changed`` wakes it.  The dispatcher
calls into a vCPU's control with its own lock held; a vCPU thread never holds
its control lock while calling the dispatcher.

Invariants (under the lock): ``_running[p]`` is the runner holding pCPU p
or None; a runner's ``grant`` is p exactly when ``_running[p]`` is it; no
runner holds two pCPUs.  A runner waiting for a grant is runnable in the
scheduler and its runstate is "runnable".
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pyxen.abi.vcpu import RunstateState
from pyxen.hv.sched.interface import Scheduler, SchedulerTimer, SchedVcpu
from pyxen.hv.sched.trace import SchedTrace
from pyxen.hv.timers import Timer, TimerService
from pyxen.hv.vcpu_control import Req

if TYPE_CHECKING:
    from pyxen.hv.vcpu import VcpuRunner

Clock = Callable[[], int]


class Dispatcher:
    def __init__(self, scheduler: Scheduler, pcpus: Sequence[int], timers: TimerService,
                 clock: Clock, pin: bool = True, trace: SchedTrace | None = None) -> None:
        self.scheduler = scheduler
        self.trace = trace or SchedTrace(pcpus, enabled=False)
        self.pcpus = list(pcpus)
        self.clock = clock
        self.pin = pin
        self._lock = threading.Lock()
        self._running: dict[int, VcpuRunner | None] = {p: None for p in self.pcpus}
        self._slice: dict[int, Timer] = {
            p: timers.timer(functools.partial(self._slice_end, p)) for p in self.pcpus}
        self._runners: dict[int, VcpuRunner] = {}  # id(SchedVcpu) -> runner
        self.decisions = 0
        # A scheduler with deadlines of its own (caps, RTDS budgets) is called
        # back when they come (interface.SchedulerTimer).
        self._sched_timer = timers.timer(self._scheduler_deadline)

    # -- registration ------------------------------------------------------------------

    def add(self, runner: VcpuRunner) -> SchedVcpu:
        everywhere = frozenset(self.pcpus)
        v = SchedVcpu(runner.domain.domid, runner.vcpu_id, runner.affinity_hard or everywhere,
                      runner.affinity_soft or everywhere)
        with self._lock:
            self._runners[id(v)] = runner
            self.scheduler.insert_vcpu(v)
            self._after()
        return v

    def remove(self, runner: VcpuRunner) -> None:
        v = runner.sched_vcpu
        if v is None:
            return
        with self._lock:
            now = self.clock()
            self._release(runner, now)
            for p in self.scheduler.remove_vcpu(v, now):
                self._tickle(p, now)
            self._runners.pop(id(v), None)
            self._after()

    # -- calls from the vCPU's own thread -------------------------------------------------

    def acquire(self, runner: VcpuRunner) -> bool:
        """Wait (runnable) until the vCPU holds a pCPU; False if it must stop instead."""
        v = runner.sched_vcpu
        assert v is not None
        with self._lock:
            if runner.grant is not None:
                return True
            if not v.runnable:
                for p in self.scheduler.wake(v, self.clock()):
                    self._tickle(p, self.clock())
                self._after()
            if runner.grant is None:
                runner.time.set_runstate(RunstateState.runnable)
        got = runner.wait_for_grant()
        if got is not None and self.pin:
            self._pin(runner, got)
        return got is not None

    def stopped(self, runner: VcpuRunner) -> None:
        """The vCPU is no longer runnable (it blocks, parks or ends)."""
        v = runner.sched_vcpu
        if v is None:
            return
        with self._lock:
            now = self.clock()
            if v.runnable or runner.grant is not None:
                tickles = self.scheduler.sleep(v, now)
                held = self._release(runner, now)
                if held is not None:
                    self._repick(held, now)
                for p in tickles:
                    if p != held:
                        self._tickle(p, now)
                self._after()

    def preempted(self, runner: VcpuRunner) -> None:
        """The vCPU left the guest as asked: its pCPU decides again (maybe the same vCPU)."""
        with self._lock:
            pcpu = runner.grant
            if pcpu is not None:
                self._repick(pcpu, self.clock())
                self._after()

    def yielded(self, runner: VcpuRunner) -> None:
        """SCHEDOP_yield: let the scheduler put someone else first on this pCPU."""
        v = runner.sched_vcpu
        with self._lock:
            pcpu = runner.grant
            if v is None or pcpu is None:
                return
            now = self.clock()
            self.scheduler.yield_(v, now)
            self._repick(pcpu, now)
            self._after()

    # -- internals (lock held) -------------------------------------------------------------

    def _release(self, runner: VcpuRunner, now: int) -> int | None:
        pcpu = runner.grant
        if pcpu is not None:
            self._running[pcpu] = None
            self._slice[pcpu].cancel()
            runner.grant = None
        return pcpu

    def _tickle(self, pcpu: int, now: int) -> None:
        current = self._running.get(pcpu)
        if current is None:
            self._repick(pcpu, now)
        else:
            current.request(Req.PREEMPT)

    def _repick(self, pcpu: int, now: int) -> None:
        decision = self.scheduler.pick_next(pcpu, now)
        self.decisions += 1
        old = self._running[pcpu]
        new = self._runners.get(id(decision.vcpu)) if decision.vcpu is not None else None
        if old is not None and old is not new:
            old.grant = None  # it is out of the guest (preempted or stopped)
            self._running[pcpu] = None
        if new is not None and new is not old:
            if new.grant is not None:  # the scheduler broke its contract
                raise RuntimeError(f"{decision.vcpu} is already running on pCPU {new.grant}")
            new.grant = pcpu
            self._running[pcpu] = new
            new.grant_changed()
        if new is not None:
            self._slice[pcpu].arm(now + max(decision.slice_ns, 1))
        else:
            self._slice[pcpu].cancel()
        for other in decision.tickle:
            if other != pcpu:
                self._tickle(other, now)
        self._after()

    def _after(self) -> None:
        """After any scheduler call: arm the scheduler's own deadline, if it has one."""
        if isinstance(self.scheduler, SchedulerTimer):
            when = self.scheduler.next_timer()
            if when is None:
                self._sched_timer.cancel()
            elif self._sched_timer.deadline != when:
                self._sched_timer.arm(when)

    def _scheduler_deadline(self) -> None:
        with self._lock:
            if not isinstance(self.scheduler, SchedulerTimer):
                return
            now = self.clock()
            for p in self.scheduler.on_timer(now):
                self._tickle(p, now)
            self._after()

    def _slice_end(self, pcpu: int) -> None:
        with self._lock:
            current = self._running.get(pcpu)
            if current is None:
                return
            current.request(Req.PREEMPT)

    def _pin(self, runner: VcpuRunner, pcpu: int) -> None:
        if runner.pinned_to != pcpu:
            try:
                os.sched_setaffinity(0, {pcpu})
                runner.pinned_to = pcpu
            except OSError:
                self.pin = False  # the host refuses: let its scheduler place the thread

    def set_domain_params(self, domid: int, params: dict[str, Any]) -> None:
        with self._lock:
            now = self.clock()
            for p in self.scheduler.set_domain_params(domid, params, now) or ():
                self._tickle(p, now)
            self._after()

    def set_affinity(self, runner: VcpuRunner, hard: frozenset[int],
                     soft: frozenset[int]) -> None:
        """vcpu-pin: new hard and soft affinity (sets of this dispatcher's pCPUs)."""
        v = runner.sched_vcpu
        if v is None:
            raise ValueError(f"d{runner.domain.domid}v{runner.vcpu_id} is not scheduled yet")
        with self._lock:
            now = self.clock()
            for p in self.scheduler.set_affinity(v, hard, soft, now):
                self._tickle(p, now)
            self._after()

    def set_global_params(self, params: dict[str, Any]) -> None:
        with self._lock:
            self.scheduler.set_global_params(params)

    def running(self) -> dict[int, str | None]:
        """pCPU -> the vCPU holding it (for vcpu-list and tests)."""
        with self._lock:
            return {p: (f"d{r.domain.domid}v{r.vcpu_id}" if r else None)
                    for p, r in self._running.items()}

    def close(self) -> None:
        self._sched_timer.cancel()
        for timer in self._slice.values():
            timer.cancel()
