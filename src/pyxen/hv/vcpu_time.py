"""Time of one vCPU: its runstate, pvclock parameters, time areas and timers.

- Runstate (§8.1 get_runstate_info, register_runstate_memory_area): changed
  by the vCPU's own thread at every transition, copied into the guest's
  registered area then (a guest virtual address: only this vCPU's thread
  can translate it).
- pvclock: ``update_time`` (domain time lock held, any thread) writes the
  parameters into vcpu_info at once; the secondary copy
  (VCPUOP_register_vcpu_time_memory_area) is at a guest virtual address,
  so it is marked stale with a TIME request and written by the vCPU's own
  thread at its next exit (no kick: the old parameters stay valid).
  The calibration tick (once a second) updates only the vCPUs that may be
  running: ``hv.awake_vcpus``, which ``set_runstate`` keeps (a vCPU is in
  it from its first entry until its thread ends, except while blocked or
  offline). A vCPU that missed a tick (its ``generation`` is behind
  ``hv.clock_generation``) is updated by its own thread when it changes
  back to running, before it enters the guest again -- as Xen brings a
  vCPU's time up to date when it is scheduled. So an idle host's tick
  costs O(awake vCPUs): updating every vCPU of 1000 idle domains took 1.5%
  of a core. (A vCPU that wakes while a tick runs may be updated twice, or
  be one period behind until the next tick; the parameters stay valid.)
- Timers: the single-shot timer (set_timer_op, VCPUOP_set_singleshot_timer)
  and the periodic one (VCPUOP_set_periodic_timer) send VIRQ_TIMER to this
  vCPU from the timer service's thread.
- The TSC offset (guest TSC - host TSC) is learnt once, in the vCPU's own
  thread, before its first entry.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from pyxen.abi.vcpu import RunstateState
from pyxen.abi.xen import Virq
from pyxen.hv import atomic, pvclock
from pyxen.hv.runstate import Runstate
from pyxen.hv.shared_info import TIME_INFO_SIZE, TIME_OFFSET, TimeParams, write_time
from pyxen.hv.vcpu_control import Req
from pyxen.memory import GuestAccess, GuestFault

if TYPE_CHECKING:
    from pyxen.hv.vcpu import VcpuRunner

MSR_IA32_TSC = 0x10


class VcpuTime:
    def __init__(self, runner: VcpuRunner) -> None:
        self.runner = runner
        hv = runner.domain.hv
        self.runstate = Runstate(RunstateState.running if runner.online
                                 else RunstateState.offline, hv.system_time_ns())
        self.runstate_gva: int | None = None
        self.time_area_gva: int | None = None
        self._time_area_version = 0
        self.tsc_offset: int | None = None
        self.params: TimeParams | None = None
        self.singleshot = hv.timers.timer(self._timer_fired)
        self.periodic = hv.timers.timer(self._periodic_fired)
        self.periodic_period = 0
        # hv.clock_generation when the parameters were last published.
        self.generation = -1

    # -- runstate (own thread) ---------------------------------------------------------

    def set_runstate(self, state: RunstateState) -> None:
        hv = self.runner.domain.hv
        if self.runstate.change(state, hv.system_time_ns()):
            if state in (RunstateState.blocked, RunstateState.offline):
                hv.awake_vcpus.discard(self.runner)
            else:
                hv.awake_vcpus.add(self.runner)
                if state == RunstateState.running and self.generation != hv.clock_generation:
                    self.runner.domain.publish_time(self.runner)  # it missed a tick
            self.write_runstate_area()

    def leave(self) -> None:
        """The vCPU's thread ends: no more calibration ticks for it."""
        self.runner.domain.hv.awake_vcpus.discard(self.runner)

    def write_runstate_area(self) -> None:
        """Copy the runstate into the guest's registered area (own thread only)."""
        gva = self.runstate_gva
        if gva is None:
            return
        compat = bool(self.runner.domain.compat)
        with contextlib.suppress(*GuestFault):  # Xen ignores a faulting area too
            self.runner.guest_access().write_struct(gva, self.runstate.snapshot(compat))

    # -- pvclock -------------------------------------------------------------------------

    def start_clock(self) -> None:
        """Learn this vCPU's TSC offset and publish its time (in its own thread)."""
        offset = self.runner.kvm.tsc_offset()
        self.tsc_offset = offset if offset is not None else self._measure_tsc_offset()
        self.runner.domain.publish_time(self.runner)
        if self.runstate.state not in (RunstateState.blocked, RunstateState.offline):
            self.runner.domain.hv.awake_vcpus.add(self.runner)

    def _measure_tsc_offset(self) -> int:
        """Guest TSC minus host TSC from IA32_TSC reads, keeping the narrowest bracket."""
        best: tuple[int, int] | None = None
        for _ in range(8):
            t1 = atomic.read_tsc()
            guest = self.runner.kvm.get_msr(MSR_IA32_TSC)
            t2 = atomic.read_tsc()
            if best is None or t2 - t1 < best[0]:
                best = (t2 - t1, guest - (t1 + t2) // 2)
        assert best is not None
        return best[1]

    def update_time(self, host_tsc: int, now_ns: int, hz: int) -> None:
        """Publish new pvclock parameters (the domain's time lock is held)."""
        if self.tsc_offset is None:
            return
        self.generation = self.runner.domain.hv.clock_generation
        params = pvclock.next_params(self.params, host_tsc + self.tsc_offset, now_ns, hz)
        self.params = params
        write_time(self.runner.vcpu_info_view, TIME_OFFSET, params)
        if self.time_area_gva is not None:
            self.runner.control.request(Req.TIME, kick=False)

    def write_time_area(self, access: GuestAccess) -> None:
        """Copy the pvclock parameters to VCPUOP_register_vcpu_time_memory_area's area."""
        gva, params = self.time_area_gva, self.params
        if gva is None or params is None:
            return
        body = memoryview(bytearray(TIME_INFO_SIZE))
        write_time(body, 0, params)
        self._time_area_version = (self._time_area_version + 1) | 1
        with contextlib.suppress(*GuestFault):  # Xen ignores a faulting area too
            access.write_u32(gva, self._time_area_version)
            access.write(gva + 8, bytes(body[8:]))
            access.write_u32(gva, self._time_area_version + 1)
        self._time_area_version += 1

    # -- timers (the timer service's thread) ---------------------------------------------

    def _timer_fired(self) -> None:
        from pyxen.hv.event_channel import send_vcpu_virq
        send_vcpu_virq(self.runner.domain, self.runner.vcpu_id, Virq.TIMER)

    def _periodic_fired(self) -> None:
        period = self.periodic_period
        if period:
            self.periodic.arm(self.runner.domain.hv.system_time_ns() + period)
        self._timer_fired()

    def cancel_timers(self) -> None:
        self.periodic_period = 0
        self.singleshot.cancel()
        self.periodic.cancel()
