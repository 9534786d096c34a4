"""pyxen's vCPU schedulers (Xen's Credit2, Credit, RTDS and null) behind one interface.

See ``interface`` for the contract.  Schedulers are registered explicitly in
``SCHEDULERS`` (name -> class); nothing registers itself at import time.  A
scheduler's module is imported when its class is first looked up there, so
a process that schedules with none of them (``pyxen create -F``) or with one
does not pay for the others at start-up.
"""

import importlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from pyxen.hv.sched.interface import Scheduler, Topology, Tracer


class SchedulerClass(Protocol):
    """How every scheduler is constructed: ``cls(pcpus, topology, tracer, params)``."""

    def __call__(self, pcpus: Sequence[int], topology: Topology, tracer: Tracer = ...,
                 params: dict[str, Any] | None = ...) -> Scheduler: ...


_MODULES = {  # name -> (module, class)
    "credit2": ("pyxen.hv.sched.credit2", "Credit2"),
    "credit": ("pyxen.hv.sched.credit", "Credit"),
    "rtds": ("pyxen.hv.sched.rtds", "Rtds"),
    "null": ("pyxen.hv.sched.null", "Null"),
}


class _Schedulers(Mapping[str, SchedulerClass]):
    """The registry: a read-only mapping that imports a scheduler on first lookup."""

    def __getitem__(self, name: str) -> SchedulerClass:
        module, cls = _MODULES[name]
        scheduler: SchedulerClass = getattr(importlib.import_module(module), cls)
        return scheduler

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)


SCHEDULERS: Mapping[str, SchedulerClass] = _Schedulers()
