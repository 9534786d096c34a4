"""The hypervisor: KVM, the domain table, the console, the hypercall table.

One ``Hypervisor`` per process owns /dev/kvm and every domain.  Domain ids
start at 1; id 0 is the control domain (the hypervisor process and its
toolstack play dom0's role), which always exists.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

from pyxen.hv.console import HypervisorConsole
from pyxen.hv.dispatch import HypercallTable
from pyxen.hv.domain import Domain
from pyxen.hv.hypercalls import register_all
from pyxen.kvm import System

CONTROL_DOMID = 0
FIRST_DOMU = 1
DOMID_FIRST_RESERVED = 0x7FF0


class Hypervisor:
    def __init__(self, guest_stream: TextIO | None = None,
                 log_stream: TextIO | None = None) -> None:
        self.kvm = System()
        self.console = HypervisorConsole(guest_stream, log_stream)
        self.hypercalls = HypercallTable()
        register_all(self.hypercalls)
        self.domains: dict[int, Domain] = {}
        self._next_domid = FIRST_DOMU
        self._lock = threading.Lock()
        self._boot_ns = time.monotonic_ns()

    def system_time_ns(self) -> int:
        """Xen system time: nanoseconds since the hypervisor started."""
        return time.monotonic_ns() - self._boot_ns

    def allocate_domid(self) -> int:
        with self._lock:
            for _ in range(DOMID_FIRST_RESERVED):
                domid = self._next_domid
                self._next_domid = domid + 1 if domid + 1 < DOMID_FIRST_RESERVED else FIRST_DOMU
                if domid not in self.domains:
                    return domid
        raise RuntimeError("no free domain id")

    def add(self, domain: Domain) -> None:
        with self._lock:
            self.domains[domain.domid] = domain

    def remove(self, domain: Domain) -> None:
        with self._lock:
            self.domains.pop(domain.domid, None)

    def domain_exists(self, domid: int) -> bool:
        return domid == CONTROL_DOMID or domid in self.domains

    def close(self) -> None:
        for domain in list(self.domains.values()):
            domain.destroy()
            self.remove(domain)
        self.kvm.close()
