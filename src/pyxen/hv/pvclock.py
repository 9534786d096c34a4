"""Guest time: relating each vCPU's TSC to Xen system time (§5.1).

Xen system time is the hypervisor's monotonic clock (ns since it started).
A guest derives it from its own TSC with the pvclock parameters in its
vcpu_time_info, so pyxen must know (a) the host TSC frequency against the
monotonic clock and (b) each vCPU's TSC offset (guest TSC = host TSC +
offset, as KVM runs guests without TSC scaling unless asked).

- ``TscClock`` samples (host TSC, system time) pairs, keeping the pair with
  the narrowest TSC bracket of three reads so that a preemption between the
  reads cannot skew it, and measures the frequency over each calibration
  interval (about a second: one microsecond of sampling error is one ppm).
- ``next_params`` computes a vCPU's next parameters.  The guest's clock is
  continuous across updates: the new line starts where the old one is at
  that TSC and is steered to meet true system time one interval later, so
  time never jumps backwards; an error above ``MAX_SLEW_NS`` is stepped.

The calibration runs from the hypervisor's timer thread once per
``CALIBRATION_NS``; it must never block.
"""

from __future__ import annotations

from collections.abc import Callable

from pyxen.hv import atomic
from pyxen.hv.shared_info import TimeParams, scale_for

CALIBRATION_NS = 1_000_000_000
MAX_SLEW_NS = 1_000_000


class TscClock:
    def __init__(self, now_ns: Callable[[], int], nominal_hz: int) -> None:
        self._now_ns = now_ns
        self.hz = nominal_hz if nominal_hz > 0 else self._measure_hz()
        self.last_tsc, self.last_ns = self.sample()

    def sample(self) -> tuple[int, int]:
        """A (host TSC, system time ns) pair taken at (nearly) the same instant."""
        best: tuple[int, int, int] | None = None
        for _ in range(3):
            t1 = atomic.read_tsc()
            ns = self._now_ns()
            t2 = atomic.read_tsc()
            if best is None or t2 - t1 < best[0]:
                best = (t2 - t1, (t1 + t2) // 2, ns)
        assert best is not None
        return best[1], best[2]

    def _measure_hz(self) -> int:
        t0, n0 = self.sample()
        t1, n1 = self.sample()
        while n1 - n0 < 20_000_000:
            t1, n1 = self.sample()
        return (t1 - t0) * 1_000_000_000 // (n1 - n0)

    def calibrate(self) -> tuple[int, int]:
        """Take a new sample, update the measured frequency, return the sample."""
        tsc, ns = self.sample()
        if ns - self.last_ns >= CALIBRATION_NS // 2 and tsc > self.last_tsc:
            self.hz = (tsc - self.last_tsc) * 1_000_000_000 // (ns - self.last_ns)
            self.last_tsc, self.last_ns = tsc, ns
        return tsc, ns


def next_params(prev: TimeParams | None, guest_tsc: int, now_ns: int, hz: int,
                interval_ns: int = CALIBRATION_NS) -> TimeParams:
    """The parameters to publish at ``guest_tsc`` (== system time ``now_ns``)."""
    ticks = hz * interval_ns // 1_000_000_000
    start = now_ns
    if prev is not None:
        current = prev.ns_at(guest_tsc)
        if abs(current - now_ns) <= MAX_SLEW_NS:
            start = current
    mul, shift = scale_for(ticks, now_ns + interval_ns - start)
    return TimeParams(guest_tsc, start, mul, shift)
