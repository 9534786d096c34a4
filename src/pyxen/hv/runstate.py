"""vCPU runstate accounting (VCPUOP_get_runstate_info, §8.1).

A vCPU is in one of four states -- running, runnable, blocked, offline --
and accumulates the nanoseconds spent in each.  Only the vCPU's own thread
changes its state (when it enters or leaves the guest's work, blocks,
parks or waits for a pCPU), so no lock is needed for writes; readers on
other threads take a consistent-enough snapshot (Python attribute reads
are atomic; Xen's readers race the same way without the update flag).
"""

from __future__ import annotations

from pyxen.abi.vcpu import RunstateState, compat_vcpu_runstate_info, vcpu_runstate_info


class Runstate:
    __slots__ = ("entry_time", "state", "time")

    def __init__(self, state: RunstateState, now_ns: int) -> None:
        self.state = state
        self.entry_time = now_ns
        self.time = [0, 0, 0, 0]

    def change(self, state: RunstateState, now_ns: int) -> bool:
        """Move to ``state`` at ``now_ns``; False if it was already there."""
        if state == self.state:
            return False
        self.time[self.state] += max(now_ns - self.entry_time, 0)
        self.state = state
        self.entry_time = now_ns
        return True

    def time_in(self, state: RunstateState, now_ns: int) -> int:
        """Nanoseconds spent in ``state`` up to ``now_ns`` (what ``snapshot(now_ns=)``
        reports for it, without building the guest's record)."""
        total = self.time[state]
        if self.state == state:
            total += max(now_ns - self.entry_time, 0)
        return total

    def snapshot(self, compat: bool = False, now_ns: int | None = None
                 ) -> vcpu_runstate_info | compat_vcpu_runstate_info:
        """The guest-visible record.

        With ``now_ns`` (VCPUOP_get_runstate_info), the time spent so far in
        the current state is included, as Xen's vcpu_runstate_get does; the
        registered area gets the record as of the last change.
        """
        info = compat_vcpu_runstate_info() if compat else vcpu_runstate_info()
        info.state = self.state
        info.state_entry_time = self.entry_time
        for i, value in enumerate(self.time):
            info.time[i] = value
        if now_ns is not None:
            info.time[self.state] = self.time_in(self.state, now_ns)
        return info
