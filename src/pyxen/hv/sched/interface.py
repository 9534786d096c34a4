"""The scheduler interface: what every pyxen scheduler implements, and what it sees.

A scheduler decides which vCPU runs on which pCPU and for how long; it never
touches KVM or threads.  The pCPU dispatcher (a later part of issue 5) turns
its decisions into action: it pins the chosen vCPU's thread to the pCPU,
runs it until the slice ends or a tickle preempts it (signal +
immediate_exit), and calls back into the scheduler at every event.  Tests
and benchmarks drive the same interface from a discrete-event simulator on
a fake clock (``pyxen.hv.sched.simulate``).

Time is integer nanoseconds of the caller's clock (Xen system time in the
hypervisor, a fake clock in tests); the scheduler never reads a clock
itself, every call passes ``now``.

Calls and their contract (``pcpu`` ids are those given at construction):

- ``insert_vcpu(v)`` / ``remove_vcpu(v, now)``: a vCPU joins or leaves the
  scheduler (domain creation/destruction, cpupool moves).  A removed vCPU is
  never returned again.  It is inserted asleep (not runnable).
  ``remove_vcpu`` returns the pCPUs to tickle (the one v is running on).
- ``wake(v, now)``: v became runnable (created and up, or woken from a
  block).  Returns the pCPUs that should reschedule now (tickled) -- e.g. an
  idle pCPU in v's affinity, or one running a vCPU v should preempt.
- ``sleep(v, now)``: v stopped being runnable (blocked, paused, down).  If v
  is running, returns [its pCPU] so that pCPU picks again.
- ``yield_(v, now)``: v asks to give way (SCHEDOP_yield) while staying
  runnable; the caller then calls ``pick_next`` on v's pCPU.
- ``pick_next(pcpu, now)``: the pCPU must (re)decide: its current vCPU (if
  any) was preempted, its slice ended, it blocked, or the pCPU was tickled.
  Returns a ``Decision``: the vCPU to run (None: idle) and the slice length
  (ignored for idle: an idle pCPU picks again only when tickled).
  The scheduler accounts the time the previous vCPU ran on this pCPU up to
  ``now``.  Invariants: the returned vCPU is runnable, has ``pcpu`` in its
  hard affinity, and is not running on another pCPU (no vCPU on two pCPUs,
  no two vCPUs on one pCPU).  ``Decision.tickle`` lists other pCPUs that
  must pick again now (e.g. an idle one that can run the vCPU just
  preempted here); it defaults to none.
- ``set_affinity(v, hard, soft, now)``: new hard/soft affinity sets;
  returns pCPUs to tickle (v's pCPU if it may no longer run there).
- ``domain_params(domid)`` / ``set_domain_params(domid, params, now)``:
  per-domain tunables (credit/credit2: weight, cap; rtds: period, budget;
  null: none), as the dicts xl's sched-* commands show; invalid values raise
  ``SchedParamError`` with a one-line reason.  ``set_domain_params`` may
  return pCPUs to tickle (e.g. a new cap must stop a running vCPU); None
  means none.
- ``global_params()`` / ``set_global_params(params)``: scheduler-wide
  tunables (e.g. ratelimit_us).
- ``dump()``: a human-readable state (runqueues, credits) for debugging.

Optional: a scheduler with deadlines of its own (Credit2's cap
replenishment, RTDS's budget replenishment) also implements
``SchedulerTimer``: after every call into the scheduler the caller reads
``next_timer()`` (an absolute time, or None) and, when that time comes,
calls ``on_timer(now)``, which returns pCPUs to tickle.  Callers test for
it with ``isinstance(s, SchedulerTimer)``.

Every scheduler records what it does through the ``Tracer`` it is given
(``trace.record(kind, now, pcpu, vcpu, **data)``): kinds "wake", "block",
"run", "preempt", "migrate", "credit_reset", "yield", "idle".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class SchedParamError(ValueError):
    """A scheduler parameter is out of range (the message says which and why)."""


@dataclass(eq=False)
class SchedVcpu:
    """The scheduler's view of one vCPU.

    ``runnable`` and ``pcpu`` (where it is running, or None) are maintained by
    the scheduler through the calls above; ``priv`` is the scheduler's own
    per-vCPU data.  Identity is by object (``eq=False``).
    """

    domid: int
    vcpu_id: int
    hard_affinity: frozenset[int]
    soft_affinity: frozenset[int]
    runnable: bool = False
    pcpu: int | None = None  # the pCPU it is running on, if any
    last_pcpu: int | None = None  # where it ran last (cache affinity)
    priv: Any = None

    @property
    def name(self) -> str:
        return f"d{self.domid}v{self.vcpu_id}"


@dataclass(frozen=True)
class Decision:
    """What a pCPU runs next: ``vcpu`` (None: idle) for up to ``slice_ns``."""

    vcpu: SchedVcpu | None
    slice_ns: int
    migrated: bool = False  # the vCPU last ran on another pCPU
    tickle: tuple[int, ...] = ()  # other pCPUs that must pick again now


@dataclass(frozen=True)
class Topology:
    """Which pCPUs share a core, a socket, a NUMA node (ids are host CPU numbers)."""

    core_of: dict[int, int] = field(default_factory=dict)
    socket_of: dict[int, int] = field(default_factory=dict)
    node_of: dict[int, int] = field(default_factory=dict)

    @classmethod
    def flat(cls, pcpus: Sequence[int]) -> Topology:
        """Every pCPU its own core, all on socket 0 and node 0."""
        return cls({p: p for p in pcpus}, {p: 0 for p in pcpus}, {p: 0 for p in pcpus})


class Tracer(Protocol):
    def record(self, kind: str, now: int, pcpu: int | None, vcpu: SchedVcpu | None,
               **data: Any) -> None: ...


class NullTracer:
    """Records nothing (the default)."""

    def record(self, kind: str, now: int, pcpu: int | None, vcpu: SchedVcpu | None,
               **data: Any) -> None:
        pass


class Scheduler(Protocol):
    """See the module docstring for the contract of each call."""

    name: str  # "credit2", "credit", "rtds", "null"

    def insert_vcpu(self, v: SchedVcpu) -> None: ...
    def remove_vcpu(self, v: SchedVcpu, now: int) -> list[int]: ...
    def wake(self, v: SchedVcpu, now: int) -> list[int]: ...
    def sleep(self, v: SchedVcpu, now: int) -> list[int]: ...
    def yield_(self, v: SchedVcpu, now: int) -> None: ...
    def pick_next(self, pcpu: int, now: int) -> Decision: ...
    def set_affinity(self, v: SchedVcpu, hard: frozenset[int], soft: frozenset[int],
                     now: int) -> list[int]: ...
    def domain_params(self, domid: int) -> dict[str, Any]: ...
    def set_domain_params(self, domid: int, params: dict[str, Any],
                          now: int) -> list[int] | None: ...
    def global_params(self) -> dict[str, Any]: ...
    def set_global_params(self, params: dict[str, Any]) -> None: ...
    def dump(self) -> str: ...


@runtime_checkable
class SchedulerTimer(Protocol):
    """Optional: a scheduler that needs to be called at a time of its own choosing."""

    def next_timer(self) -> int | None:
        """The absolute time (ns) at which ``on_timer`` must be called; None: no need."""
        ...

    def on_timer(self, now: int) -> list[int]:
        """The deadline passed (``now`` >= ``next_timer()``); returns pCPUs to tickle."""
        ...
