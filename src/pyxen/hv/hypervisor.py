"""The hypervisor: KVM, the domain table, the console, the hypercall table,
the timer service, the clock and the event lock.

One ``Hypervisor`` per process owns /dev/kvm and every domain.  Domain ids
start at 1; id 0 is the control domain (the hypervisor process and its
toolstack play dom0's role), which always exists.

Time: Xen system time is ``time.monotonic_ns()`` minus the start time; the
wall clock at system time 0 is fixed at start-up.  ``realtime_timers`` (the
daemon sets it) runs the timer thread SCHED_FIFO so that slice ends and
guest timers are not delayed behind CPU-bound vCPU threads.  A calibration timer
refreshes every domain's pvclock parameters once a second.

Global VIRQs (VIRQ_DOM_EXC, VIRQ_CONSOLE, ...) go to the domain registered
with ``set_virq_handler`` (Xen's XEN_DOMCTL_set_virq_handler); with none,
they are dropped (there is no dom0 guest: dom0 is this process).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from pyxen.abi.xen import CONTROL_DOMID, DOMID_FIRST_RESERVED, NR_VIRQS, Virq
from pyxen.hv import event_channel, pvclock
from pyxen.hv.argo.config import ArgoConfig
from pyxen.hv.argo.core import Argo
from pyxen.hv.argo.policy import DOM0_LABEL, Policy
from pyxen.hv.console import HypervisorConsole
from pyxen.hv.console_limit import LogPolicy
from pyxen.hv.control_ports import ControlPorts
from pyxen.hv.dispatch import HypercallTable
from pyxen.hv.domain import Domain
from pyxen.hv.hypercalls import register_all
from pyxen.hv.timers import TimerService
from pyxen.kvm import System

if TYPE_CHECKING:  # the schedulers are imported only by a hypervisor that uses one
    from pyxen.hv.sched.dispatcher import Dispatcher
    from pyxen.hv.vcpu import VcpuRunner

FIRST_DOMU = 1


class Hypervisor:
    def __init__(self, guest_stream: TextIO | None = None,
                 log_stream: TextIO | None = None, realtime_timers: bool = False,
                 console_policy: LogPolicy | None = None,
                 argo: ArgoConfig | None = None, xsm_policy: Policy | None = None) -> None:
        self.kvm = System()
        self.console = HypervisorConsole(guest_stream, log_stream, console_policy)
        self.hypercalls = HypercallTable()
        register_all(self.hypercalls)
        self.domains: dict[int, Domain] = {}
        self._reserved_domids: set[int] = set()
        self._next_domid = FIRST_DOMU
        self._lock = threading.Lock()
        self._boot_ns = time.monotonic_ns()
        self.wallclock_base_ns = time.time_ns() - self.system_time_ns()
        self.event_lock = threading.RLock()
        self.virq_handlers: dict[int, int] = {}
        self.control_ports = ControlPorts(self)
        self.argo = Argo(argo or ArgoConfig(), self.console.log, self.domain_exists)
        if xsm_policy is not None:
            self.argo.set_policy(xsm_policy)
        # Domain 0's VIRQ_ARGO: every host Argo socket (pyxen.argo) listening.
        self.argo_listeners: set[Callable[[], None]] = set()
        self.argo.attach(CONTROL_DOMID, DOM0_LABEL, self._signal_argo_listeners)
        # Set by whoever runs pyxen's own pCPU scheduling (the daemon);
        # None leaves the vCPU threads to the host kernel's scheduler.
        self.dispatcher: Dispatcher | None = None
        self.timers = TimerService(self.system_time_ns, on_error=self.console.log,
                                   realtime=realtime_timers)
        self.tsc = pvclock.TscClock(self.system_time_ns, nominal_tsc_hz(self.kvm))
        # The vCPUs that may be running (their VcpuTime keeps the set) and the
        # number of calibration ticks so far: a tick updates only these vCPUs'
        # time; the others catch up when they wake (hv/vcpu_time.py).
        self.awake_vcpus: set[VcpuRunner] = set()
        self.clock_generation = 0
        self._calibration = self.timers.timer(self._calibrate)
        self._calibration.arm(self.system_time_ns() + pvclock.CALIBRATION_NS)

    def system_time_ns(self) -> int:
        """Xen system time: nanoseconds since the hypervisor started."""
        return time.monotonic_ns() - self._boot_ns

    def _calibrate(self) -> None:
        tsc, now = self.tsc.calibrate()
        self.clock_generation += 1
        for runner in list(self.awake_vcpus):
            runner.domain.update_time(runner, tsc, now, self.tsc.hz)
        self._calibration.arm(now + pvclock.CALIBRATION_NS)

    def allocate_domid(self) -> int:
        """A free domain id, reserved until the domain is added (or released)."""
        with self._lock:
            for _ in range(DOMID_FIRST_RESERVED):
                domid = self._next_domid
                self._next_domid = domid + 1 if domid + 1 < DOMID_FIRST_RESERVED else FIRST_DOMU
                if domid not in self.domains and domid not in self._reserved_domids:
                    self._reserved_domids.add(domid)
                    return domid
        raise RuntimeError("no free domain id")

    def claim_domid(self, domid: int) -> bool:
        """Reserve a chosen domain id; False if it is in use, reserved or not a domU id."""
        with self._lock:
            if not FIRST_DOMU <= domid < DOMID_FIRST_RESERVED or domid in self.domains \
                    or domid in self._reserved_domids:
                return False
            self._reserved_domids.add(domid)
            return True

    def release_domid(self, domid: int) -> None:
        with self._lock:
            self._reserved_domids.discard(domid)

    def add(self, domain: Domain) -> None:
        with self._lock:
            self.domains[domain.domid] = domain
            self._reserved_domids.discard(domain.domid)
        self.argo.attach(domain.domid, domain.seclabel,
                         lambda: event_channel.send_global_virq(domain, Virq.ARGO))

    def _signal_argo_listeners(self) -> None:
        for listener in list(self.argo_listeners):
            listener()

    def remove(self, domain: Domain) -> None:
        with self._lock:
            self.domains.pop(domain.domid, None)

    def domain_destroyed(self, domain: Domain) -> None:
        """Forget a domain whose vCPUs have stopped (called by Domain.destroy)."""
        self.remove(domain)
        self.release_domid(domain.domid)
        for virq, domid in list(self.virq_handlers.items()):
            if domid == domain.domid:
                del self.virq_handlers[virq]
        self.send_global_virq(Virq.DOM_EXC)

    # -- global VIRQs ----------------------------------------------------------

    def set_virq_handler(self, virq: int, domain: Domain) -> None:
        """Route a global VIRQ to ``domain`` (XEN_DOMCTL_set_virq_handler)."""
        if not 0 <= virq < NR_VIRQS or not event_channel.virq_is_global(virq):
            raise ValueError(f"VIRQ {virq} is not a global VIRQ")
        self.virq_handlers[virq] = domain.domid

    def send_global_virq(self, virq: int) -> None:
        domid = self.virq_handlers.get(virq)
        domain = self.domains.get(domid) if domid is not None else None
        if domain is not None:
            event_channel.send_global_virq(domain, virq)

    def domain_exists(self, domid: int) -> bool:
        return domid == CONTROL_DOMID or domid in self.domains

    def close(self) -> None:
        for domain in list(self.domains.values()):
            domain.destroy()
        self.control_ports.close()
        self.timers.close()
        self.kvm.close()


def nominal_tsc_hz(kvm: System) -> int:
    """The TSC frequency KVM reports for a fresh vCPU (0 if it cannot say)."""
    from pyxen.kvm import Vcpu, Vm
    vm = Vm(kvm)
    try:
        vcpu = Vcpu(vm, 0)
        khz = vcpu.tsc_khz()
        vcpu.close()
    finally:
        vm.close()
    return khz * 1000
