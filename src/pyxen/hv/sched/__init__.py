"""pyxen's vCPU schedulers (Xen's Credit2, Credit, RTDS and null) behind one interface.

See ``interface`` for the contract.  Schedulers are registered explicitly in
``SCHEDULERS`` (name -> class); nothing registers itself at import time.
"""

from collections.abc import Sequence
from typing import Any, Protocol

from pyxen.hv.sched.credit import Credit
from pyxen.hv.sched.credit2 import Credit2
from pyxen.hv.sched.interface import Scheduler, Topology, Tracer
from pyxen.hv.sched.null import Null
from pyxen.hv.sched.rtds import Rtds


class SchedulerClass(Protocol):
    """How every scheduler is constructed: ``cls(pcpus, topology, tracer, params)``."""

    def __call__(self, pcpus: Sequence[int], topology: Topology, tracer: Tracer = ...,
                 params: dict[str, Any] | None = ...) -> Scheduler: ...


SCHEDULERS: dict[str, SchedulerClass] = {
    "credit2": Credit2,
    "credit": Credit,
    "rtds": Rtds,
    "null": Null,
}
