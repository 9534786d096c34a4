"""What Credit, RTDS and null share: the constructor's common part and tickle bookkeeping.

``SchedulerBase.__init__`` checks and keeps the pCPUs, the topology (flat
when none is given) and the tracer.  ``TickleQueue`` is the bookkeeping of
schedulers that decide tickles while they work: ``_ask(p)`` records that
pCPU p must pick again (and ``_tickled`` holds pCPUs asked and not yet
picked, so they are not asked twice); ``_drain(deciding)`` hands the
recorded tickles to the caller once, leaving out the pCPU that is deciding
anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyxen.hv.sched.interface import NullTracer, Topology, Tracer


class SchedulerBase:
    name = "base"

    def __init__(self, pcpus: Sequence[int], topology: Topology | None,
                 tracer: Tracer | None) -> None:
        if not pcpus:
            raise ValueError(f"{self.name}: no pCPUs")
        self.pcpus = list(pcpus)
        self.topology = topology if topology is not None else Topology.flat(self.pcpus)
        self.trace: Tracer = tracer if tracer is not None else NullTracer()


class TickleQueue:
    def __init__(self) -> None:
        self._tickled: set[int] = set()  # asked to pick, not yet picked
        self._pending: list[int] = []  # tickles not yet returned to the caller

    def _ask(self, pcpu: int) -> None:
        """``pcpu`` must pick again: tell the caller (with this call's result)."""
        self._tickled.add(pcpu)
        if pcpu not in self._pending:
            self._pending.append(pcpu)

    def _drain(self, deciding: int | None = None) -> list[int]:
        """The tickles to return now (never the pCPU that is deciding anyway)."""
        out = [p for p in self._pending if p != deciding]
        self._pending.clear()
        return out
