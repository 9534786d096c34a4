"""cpupools: disjoint sets of pCPUs, each with its own scheduler (xl cpupool-*).

Pool-0 is made at start-up with every pCPU of the daemon and the default
scheduler.  A pCPU belongs to at most one pool; ``cpu_remove`` frees it and
``cpu_add``/``create`` take free pCPUs.  Every domain is in one pool (its
vCPUs are scheduled by that pool's dispatcher); ``migrate`` moves it.

Changing a pool's pCPUs replaces its scheduler: the pool's domains are
paused (every vCPU parked, holding no pCPU), their vCPUs are moved to a new
scheduler and dispatcher over the new pCPU set with their domains'
parameters carried over, and the domains are unpaused.  Moving a domain
between pools pauses just that domain.  A pool with domains cannot lose its
last pCPU; a pool with domains cannot be destroyed (as in Xen).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from pyxen.control.manager import POOL0
from pyxen.control.protocol import ControlError
from pyxen.hv.hypervisor import Hypervisor
from pyxen.hv.sched import SCHEDULERS
from pyxen.hv.sched.dispatcher import Dispatcher
from pyxen.hv.sched.host import host_topology
from pyxen.hv.sched.interface import SchedParamError
from pyxen.hv.sched.trace import SchedTrace

__all__ = ["POOL0", "CpuPool", "CpuPools"]


@dataclass
class CpuPool:
    name: str
    sched: str
    dispatcher: Dispatcher | None  # None: a pool with no pCPUs yet


class CpuPools:
    def __init__(self, hv: Hypervisor, pcpus: list[int], sched: str) -> None:
        self.hv = hv
        self.all_pcpus = list(pcpus)
        self._lock = threading.RLock()
        self.pools: dict[str, CpuPool] = {}
        self.domain_pool: dict[int, str] = {}
        self.pools[POOL0] = CpuPool(POOL0, sched, self._dispatcher(sched, pcpus))
        hv.dispatcher = self.pools[POOL0].dispatcher

    def _dispatcher(self, sched: str, pcpus: list[int]) -> Dispatcher | None:
        if not pcpus:
            return None
        trace = SchedTrace(pcpus, enabled=False)
        scheduler = SCHEDULERS[sched](pcpus, host_topology(pcpus), trace, None)
        return Dispatcher(scheduler, pcpus, self.hv.timers, self.hv.system_time_ns, trace=trace)

    # -- queries -----------------------------------------------------------------------

    def pcpus_of(self, pool: CpuPool) -> list[int]:
        return list(pool.dispatcher.pcpus) if pool.dispatcher else []

    def free_pcpus(self) -> list[int]:
        used = {p for pool in self.pools.values() for p in self.pcpus_of(pool)}
        return [p for p in self.all_pcpus if p not in used]

    def get(self, name: str) -> CpuPool:
        pool = self.pools.get(name)
        if pool is None:
            raise ControlError("ENOENT", f"no cpupool is named '{name}'")
        return pool

    def pool_of(self, domid: int) -> CpuPool:
        return self.get(self.domain_pool.get(domid, POOL0))

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"name": p.name, "sched": p.sched, "cpus": self.pcpus_of(p),
                     "domains": sorted(d for d, n in self.domain_pool.items()
                                       if n == p.name and d in self.hv.domains)}
                    for p in self.pools.values()]

    # -- changes ---------------------------------------------------------------------------

    def create(self, name: str, sched: str, cpus: list[int]) -> None:
        with self._lock:
            if name in self.pools:
                raise ControlError("EEXIST", f"a cpupool named '{name}' exists")
            if sched not in SCHEDULERS:
                raise ControlError("EINVAL", f"unknown scheduler '{sched}' (choose from "
                                             f"{', '.join(SCHEDULERS)})")
            busy = [c for c in cpus if c not in self.free_pcpus()]
            if busy:
                raise ControlError("EBUSY", f"CPUs {busy} are not free (remove them from "
                                            "their pool first: cpupool-cpu-remove)")
            self.pools[name] = CpuPool(name, sched, self._dispatcher(sched, sorted(cpus)))

    def destroy(self, name: str) -> None:
        with self._lock:
            pool = self.get(name)
            if name == POOL0:
                raise ControlError("EINVAL", "Pool-0 cannot be destroyed")
            if self.listing_domains(name):
                raise ControlError("EBUSY", f"cpupool '{name}' still has domains")
            if pool.dispatcher is not None:
                pool.dispatcher.close()
            del self.pools[name]

    def listing_domains(self, name: str) -> list[int]:
        return [d for d, n in self.domain_pool.items() if n == name and d in self.hv.domains]

    def cpu_add(self, name: str, cpus: list[int]) -> None:
        with self._lock:
            pool = self.get(name)
            busy = [c for c in cpus if c not in self.free_pcpus()]
            if busy:
                raise ControlError("EBUSY", f"CPUs {busy} are not free")
            self._repool(pool, sorted(set(self.pcpus_of(pool)) | set(cpus)))

    def cpu_remove(self, name: str, cpus: list[int]) -> None:
        with self._lock:
            pool = self.get(name)
            left = sorted(set(self.pcpus_of(pool)) - set(cpus))
            missing = [c for c in cpus if c not in self.pcpus_of(pool)]
            if missing:
                raise ControlError("EINVAL", f"CPUs {missing} are not in cpupool '{name}'")
            if not left and self.listing_domains(name):
                raise ControlError("EBUSY", f"cpupool '{name}' has domains: it must keep a CPU")
            self._repool(pool, left)

    def place(self, domid: int, name: str) -> None:
        """A new domain (built, not started) joins pool ``name``."""
        with self._lock:
            pool = self.get(name)
            if pool.dispatcher is None:
                raise ControlError("EINVAL", f"cpupool '{name}' has no CPUs")
            self.domain_pool[domid] = name
            for runner in self.hv.domains[domid].vcpus:
                runner.move_to(pool.dispatcher)

    def migrate(self, domid: int, name: str) -> None:
        with self._lock:
            target = self.get(name)
            if target.dispatcher is None:
                raise ControlError("EINVAL", f"cpupool '{name}' has no CPUs")
            domain = self.hv.domains[domid]
            params = self._params(self.pool_of(domid), domid)
            domain.pause()
            try:
                for runner in domain.vcpus:
                    runner.move_to(target.dispatcher)
                self.domain_pool[domid] = name
                self._restore(target, domid, params)
            finally:
                domain.unpause()

    def forget(self, domid: int) -> None:
        with self._lock:
            self.domain_pool.pop(domid, None)

    # -- internals ---------------------------------------------------------------------------

    def _params(self, pool: CpuPool, domid: int) -> dict[str, Any]:
        if pool.dispatcher is None:
            return {}
        return dict(pool.dispatcher.scheduler.domain_params(domid))

    def _restore(self, pool: CpuPool, domid: int, params: dict[str, Any]) -> None:
        if pool.dispatcher is None or not params:
            return
        with contextlib.suppress(SchedParamError):  # a parameter the new scheduler lacks
            pool.dispatcher.set_domain_params(
                domid, {k: v for k, v in params.items() if isinstance(v, int)})

    def _repool(self, pool: CpuPool, pcpus: list[int]) -> None:
        """Replace the pool's scheduler with one over ``pcpus``, moving its domains."""
        domids = self.listing_domains(pool.name)
        domains = [self.hv.domains[d] for d in domids]
        params = {d: self._params(pool, d) for d in domids}
        for domain in domains:
            domain.pause()
        try:
            old = pool.dispatcher
            pool.dispatcher = self._dispatcher(pool.sched, pcpus)
            for domain in domains:
                for runner in domain.vcpus:
                    runner.move_to(pool.dispatcher)
                self._restore(pool, domain.domid, params[domain.domid])
            if old is not None:
                old.close()
            if pool.name == POOL0:
                self.hv.dispatcher = pool.dispatcher
        finally:
            for domain in domains:
                domain.unpause()
