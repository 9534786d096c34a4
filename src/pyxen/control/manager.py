"""The domains a hypervisor daemon runs: creation, names, states and shutdown actions.

``DomainManager`` is the daemon's toolstack half (what xl's monitoring
process and libxl do around Xen): it builds a domain from a
``DomainRequest``, keeps names unique, reports xl-style domain info, and
carries out the on_poweroff/on_reboot/on_crash/on_watchdog action when a
domain shuts down -- destroy, restart (a new domain with the same config),
rename-restart, or preserve (left shut down until destroyed).

Actions run on a thread of their own: a domain shuts down from one of its
vCPU threads or from the timer thread, and destroying it joins those.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyxen.abi.vcpu import RunstateState
from pyxen.control.names import DOM0_NAME, name_problem
from pyxen.control.paths import DEFAULT_RUN_DIR
from pyxen.control.protocol import ControlError
from pyxen.control.shutdown_actions import ACTIONS, action_setting
from pyxen.cpulist import MAX_CPUS
from pyxen.hv.argo.policy import DEFAULT_DOMU_LABEL, SECLABEL_RE
from pyxen.hv.builder import BuildSpec, build_domain
from pyxen.hv.domain import Domain
from pyxen.hv.errors import BuildError
from pyxen.hv.hypervisor import Hypervisor
from pyxen.hv.sched.interface import SchedParamError

if TYPE_CHECKING:
    from pyxen.control.cpupools import CpuPools
    from pyxen.control.netstats import NetCounters
    from pyxen.control.vbd import Disk
    from pyxen.control.vif import Nic
    from pyxen.control.xenstore_sync import XenstoreSync
    from pyxen.hv.dom0_mem import Dom0Sizing

POOL0 = "Pool-0"

ENDED_KEPT = 256
MAX_DISKS = 64
MAX_NICS = 64
SHUTDOWN_LETTERS = "-rscwS"  # xl list's letter per shutdown reason


@dataclass(frozen=True)
class DomainRequest:
    """A domain to build and what to do when it shuts down."""

    spec: BuildSpec
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    on_watchdog: str = "destroy"
    cpus: frozenset[int] | None = None  # hard affinity of every vCPU (None: all pCPUs)
    cpus_soft: frozenset[int] | None = None
    sched_params: tuple[tuple[str, int], ...] = ()  # e.g. (("weight", 512), ("cap", 50))
    pool: str | None = None  # the cpupool (None: Pool-0)
    # Per-vCPU hard affinity over ``cpus`` (dom0less xen,vcpu nodes): (vcpu, CPUs).
    vcpu_hard: tuple[tuple[int, frozenset[int]], ...] = ()
    disks: tuple[Disk, ...] = ()  # xl.cfg disk=: written to xenstore before INTRODUCE
    nics: tuple[Nic, ...] = ()  # xl.cfg vif=: likewise

    def action_for(self, reason: int) -> str:
        setting = action_setting(reason)
        return str(getattr(self, setting)) if setting else "destroy"


@dataclass
class Managed:
    domain: Domain
    request: DomainRequest
    started: float = field(default_factory=time.time)
    preserved: bool = False


class DomainManager:
    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self._lock = threading.RLock()
        self._managed: dict[int, Managed] = {}
        # Bumped whenever a domain is added or removed: pollers (consoled,
        # xenstore_sync) look at the list again only when it moved.
        self.generation = 0
        # After destroys, hand what the domains' threads freed back to the OS.
        self._trim = hv.timers.timer(return_freed_memory)
        # Recently ended domains' shutdown reasons, for a ``wait`` that comes
        # after the on_* action already destroyed the domain (bounded).
        self._ended: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.started = time.time()
        self._emulated_by_destroyed = 0
        self.xenstore: XenstoreSync | None = None  # set by the daemon when it runs xenstored
        self.pools: CpuPools | None = None  # set by the daemon when it schedules vCPUs
        self.dom0: Dom0Sizing | None = None  # set by the daemon from dom0_mem
        # pyxen boot with a dom0 kernel in the tree: dom0_mem sizes that guest
        # (named dom0), so Domain-0's row stays this process.
        self.dom0_is_guest = False

    # -- lookups -------------------------------------------------------------------

    def get(self, domid: int) -> Managed:
        with self._lock:
            managed = self._managed.get(domid)
        if managed is None:
            raise ControlError("ESRCH", f"domain {domid} does not exist")
        return managed

    def domids(self) -> list[int]:
        with self._lock:
            return sorted(self._managed)

    def live_domains(self) -> dict[int, Domain]:
        """Every domain by id, as of one moment (one lock, not one per domain)."""
        with self._lock:
            return {domid: m.domain for domid, m in self._managed.items()}

    def find(self, name: str) -> int | None:
        if name == DOM0_NAME:
            return 0
        with self._lock:
            for domid, m in self._managed.items():
                if m.domain.name == name:
                    return domid
        return None

    # -- creation and destruction --------------------------------------------------

    def _check_memory(self, memory_mib: int) -> None:
        """Refuse what Xen could not allocate: more than the host's RAM less the
        other domains' memory (Xen does not overcommit; libxl's build fails)."""
        used_mib = sum(m.domain.tot_pages for m in self._managed.values()) * 4 // 1024
        free_mib = host_memory_mib() - used_mib
        if memory_mib > free_mib:
            raise ControlError("ENOMEM", f"cannot allocate {memory_mib} MiB for the domain: "
                                         f"{free_mib} MiB of the host's {host_memory_mib()} "
                                         "MiB are left for domains")

    def _check_name(self, name: str, domid: int | None = None) -> None:
        """xl's name rules (control/names.py); unique among the other domains."""
        problem = name_problem(name)
        if problem is not None:
            raise ControlError("EINVAL", problem)
        other = self.find(name)
        if other is not None and other != domid:
            raise ControlError("EEXIST", f"a domain named '{name}' exists (domain {other}): "
                                         "choose another name")

    def create(self, request: DomainRequest, paused: bool = False) -> Domain:
        if (request.disks or request.nics) and self.xenstore is None:
            raise ControlError("EINVAL", "disk= and vif= need xenstored and the backends, "
                                         "which run with the daemon: start pyxen "
                                         "hypervisor --daemon")
        for disk in request.disks:
            if not os.path.exists(disk.target):
                raise ControlError("ENOENT", f"disk {disk.vdev}: target {disk.target} does "
                                             "not exist")
        with self._lock:
            self._check_name(request.spec.name)
            self._check_memory(request.spec.memory_mib)
            wanted = request.spec.domid
            if wanted is not None and not self.hv.claim_domid(wanted):
                raise ControlError("EEXIST", f"domain id {wanted} is in use or not a domU id")
            try:
                domain = build_domain(self.hv, request.spec)
            except BaseException as e:
                if wanted is not None and wanted not in self.hv.domains:
                    self.hv.release_domid(wanted)
                if isinstance(e, BuildError):
                    raise ControlError("EINVAL", str(e)) from None
                raise
            self._managed[domain.domid] = Managed(domain, request)
            self.generation += 1
        domain.on_shutdown.append(self._shut_down)
        try:
            self._apply_scheduling(domain, request)
        except ControlError:
            self.destroy(domain.domid)
            raise
        if paused:
            domain.pause_count = 1  # the threads park at once; unpause() releases them
        domain.start()
        self.hv.console.log(f"d{domain.domid}: created '{domain.name}'")
        if self.xenstore is not None:
            self.xenstore.kick()
        return domain

    def _apply_scheduling(self, domain: Domain, request: DomainRequest) -> None:
        """pool=, cpus=, cpus_soft=, cpu_weight=, cap= (before the vCPUs start)."""
        if self.pools is not None:
            self.pools.place(domain.domid, request.pool or POOL0)
        elif request.pool not in (None, POOL0):
            raise ControlError("EINVAL", "cpupools need pyxen's scheduler (not --sched host)")
        dispatcher = domain.vcpus[0].dispatcher if domain.vcpus else None
        wanted = bool(request.cpus or request.cpus_soft or request.sched_params
                      or request.vcpu_hard)
        if dispatcher is None:
            if wanted:
                self.hv.console.log(f"d{domain.domid}: cpus/cpu_weight/cap ignored: this "
                                    "hypervisor leaves vCPUs to the host kernel (--sched host)")
            return
        pcpus = frozenset(dispatcher.pcpus)
        for key, chosen in (("cpus", request.cpus), ("cpus_soft", request.cpus_soft)):
            if chosen is not None and not chosen & pcpus:
                raise ControlError("EINVAL", f"{key}: none of CPUs {sorted(chosen)} is one of "
                                             f"this hypervisor's ({sorted(pcpus)})")
        for runner in domain.vcpus:
            runner.affinity_hard = request.cpus & pcpus if request.cpus else None
            runner.affinity_soft = request.cpus_soft & pcpus if request.cpus_soft else None
        for vcpu, chosen in request.vcpu_hard:
            if not chosen & pcpus:
                raise ControlError("EINVAL", f"vCPU {vcpu}'s hard affinity: none of CPUs "
                                             f"{sorted(chosen)} is one of this hypervisor's "
                                             f"({sorted(pcpus)})")
            if vcpu < len(domain.vcpus):
                domain.vcpus[vcpu].affinity_hard = chosen & pcpus
        if request.sched_params:
            try:
                dispatcher.set_domain_params(domain.domid, dict(request.sched_params))
            except SchedParamError as e:
                raise ControlError("EINVAL", str(e)) from None

    def destroy(self, domid: int) -> None:
        managed = self.get(domid)
        with self._lock:
            self._managed.pop(domid, None)
            self.generation += 1
        managed.domain.destroy()
        with self._lock:
            self._emulated_by_destroyed += sum(managed.domain.emulation_counts.values())
        if self.pools is not None:
            self.pools.forget(domid)
        if self.xenstore is not None:
            self.xenstore.release_devices(domid)
            self.xenstore.kick()
        self._trim.arm(self.hv.system_time_ns() + TRIM_DELAY_NS)  # once after a burst

    def wait(self, domid: int, timeout: float | None) -> int | None:
        """The domain's shutdown reason once it has one (None after ``timeout``)."""
        with self._lock:
            managed = self._managed.get(domid)
            if managed is None:
                if domid in self._ended:
                    return self._ended[domid]
                raise ControlError("ESRCH", f"domain {domid} does not exist")
        return managed.domain.wait(timeout)

    def ended_reason(self, domid: int) -> int | None:
        """The shutdown reason of a domain that has gone after shutting down; None if
        it is unknown (destroyed without a shutdown, or forgotten)."""
        with self._lock:
            return self._ended.get(domid)

    def shutdown(self, domid: int, reason: int, force: bool, timeout: float) -> bool:
        """Shut a domain down; cooperatively through xenstore when the guest supports it.

        Returns True if the guest was asked (control/shutdown); it is then
        forced after ``timeout`` seconds if it has not shut down by itself.
        """
        domain = self.get(domid).domain
        asked = (not force and self.xenstore is not None
                 and self.xenstore.request_shutdown(domid, reason))
        if not asked:
            domain.shutdown(reason)
            return False

        def force_it() -> None:
            if domain.shutdown_reason is None and not domain.dying:
                self.hv.console.log(f"d{domid}: did not shut down within {timeout:g} s of "
                                    "the request: forcing it")
                domain.shutdown(reason)

        timer = threading.Timer(timeout, force_it)
        timer.daemon = True
        timer.start()
        return True

    def rename(self, domid: int, name: str) -> None:
        with self._lock:
            self._check_name(name, domid)
            self.get(domid).domain.name = name

    def close(self) -> None:
        for domid in self.domids():
            with contextlib.suppress(ControlError):
                self.destroy(domid)

    # -- shutdown actions ----------------------------------------------------------

    def _shut_down(self, domain: Domain) -> None:
        threading.Thread(target=self._act, args=(domain,), name=f"d{domain.domid}-action",
                         daemon=True).start()

    def _act(self, domain: Domain) -> None:
        with self._lock:
            managed = self._managed.get(domain.domid)
        if managed is None or managed.domain is not domain:
            return  # destroyed meanwhile
        reason = domain.shutdown_reason
        assert reason is not None
        with self._lock:
            self._ended[domain.domid] = reason
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)
        action = managed.request.action_for(reason)
        if action == "preserve":
            managed.preserved = True
            self.hv.console.log(f"d{domain.domid}: preserved (xl destroy to remove it)")
            return
        try:
            self.destroy(domain.domid)
        except ControlError:
            return
        if action in ("restart", "rename-restart"):
            spec = managed.request.spec
            if action == "rename-restart":
                spec = replace(spec, name=f"{spec.name}-{domain.domid}")
            try:
                self.create(replace(managed.request, spec=replace(spec, domid=None)))
            except ControlError as e:
                self.hv.console.log(f"d{domain.domid}: {action} failed: {e.message}")

    # -- information -----------------------------------------------------------------

    def nr_domains(self) -> int:
        """xl info's nr_domains: every domain, Domain-0 included."""
        return len(self.domids()) + 1

    def scheduler(self) -> str:
        """xl info's xen_scheduler: Pool-0's scheduler ("host": the host kernel's)."""
        return self.pools.get(POOL0).sched if self.pools is not None else "host"

    def dom0_vcpu_info(self) -> list[dict[str, Any]]:
        """Domain-0's vCPUs for vcpu-list: Domain-0 is this process, whose threads
        the host kernel runs, so its vCPU N is host CPU N.  A vCPU's time is the
        CPU time of the threads that last ran on that CPU, its state running if
        one of them is running there (from /proc/self/task/*/stat)."""
        ncpus = os.cpu_count() or 1
        ticks = os.sysconf("SC_CLK_TCK")
        time_ns, running = [0] * ncpus, [False] * ncpus
        for stat in Path("/proc/self/task").glob("*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # Fields after the ")" closing the thread name: state is field 3,
                # utime/stime 14/15, processor 39 (proc(5)).
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cpu = int(fields[36])
                if 0 <= cpu < ncpus:
                    time_ns[cpu] += (int(fields[11]) + int(fields[12])) * 10**9 // ticks
                    running[cpu] |= fields[0] == "R"
        return [{"domid": 0, "name": DOM0_NAME, "vcpu": cpu, "online": True,
                 "state": int(RunstateState.running if running[cpu]
                              else RunstateState.blocked),
                 "cpu_time_ns": time_ns[cpu], "cpu": cpu, "hard": None, "soft": None}
                for cpu in range(ncpus)]

    def info(self, domid: int, networks: dict[int, NetCounters] | None = None
             ) -> dict[str, Any]:
        """xl's libxl_dominfo, as a dict; ``networks``: ``read_counters()`` when the
        caller lists many domains (read once, not once per domain)."""
        m = self.get(domid)
        d = m.domain
        if networks is None:
            from pyxen.control.netstats import read_counters

            networks = read_counters()
        net = networks.get(domid)
        online = [v for v in d.vcpus if v.online]
        states = [v.time.runstate.state for v in online]
        shutdown = d.shutdown_reason is not None
        now = self.hv.system_time_ns()
        cpu_ns = sum(v.time.runstate.time_in(RunstateState.running, now) for v in d.vcpus)
        return {
            "domid": d.domid,
            "name": d.name,
            "uuid": d.handle.hex(),
            "current_memkb": d.tot_pages * 4,
            "max_memkb": d.max_pages * 4,
            "vcpus": len(d.vcpus),
            "vcpu_online": len(online),
            "running": not shutdown and not d.pause_count
            and any(s == RunstateState.running for s in states),
            "blocked": not shutdown and bool(states)
            and all(s == RunstateState.blocked for s in states),
            "paused": d.pause_count > 0,
            "shutdown": shutdown,
            "shutdown_reason": d.shutdown_reason if shutdown else None,
            "dying": d.dying,
            "cpu_time_ns": cpu_ns,
            "start_time": m.started,
            "kernel": str(_boot_image(m.request.spec)),
            "type": "pvh" if m.request.spec.hvm is None else "hvm",
            "serial": _serial_console(d),
            "networks": asdict(net) if net else None,
            # Instructions KVM could not emulate and pyxen carried out, by mnemonic
            # (a dict copy of a Counter is one C call: consistent under the GIL).
            "emulated": dict(d.emulation_counts),
        }

    def brief(self) -> list[dict[str, Any]]:
        """Every domain's id, name, dying flag and console kind, by id: what a service
        watching the domain list needs, without the cost of ``info`` (~30 us a domain)."""
        return [{"domid": domid, "name": d.name, "dying": d.dying, "serial": _serial_console(d)}
                for domid, d in sorted(self.live_domains().items())]

    def emulated_total(self) -> int:
        """Instruction fallbacks of every domain this hypervisor has run (destroyed ones too)."""
        with self._lock:
            live = [m.domain for m in self._managed.values()]
            total = self._emulated_by_destroyed
        return total + sum(sum(d.emulation_counts.values()) for d in live)

    def vcpu_info(self, domid: int) -> list[dict[str, Any]]:
        d = self.get(domid).domain
        now = self.hv.system_time_ns()
        out = []
        for v in d.vcpus:
            snap = v.time.runstate.snapshot(now_ns=now)
            out.append({
                "domid": d.domid, "name": d.name, "vcpu": v.vcpu_id, "online": v.online,
                "state": int(snap.state), "cpu_time_ns": int(snap.time[RunstateState.running]),
                "cpu": v.grant,  # the pCPU it holds (None: idle, or host-scheduled)
                "hard": sorted(v.affinity_hard) if v.affinity_hard else None,
                "soft": sorted(v.affinity_soft) if v.affinity_soft else None,
            })
        return out


TRIM_DELAY_NS = 1_000_000_000
_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only


def return_freed_memory() -> None:
    """Free destroyed domains now and give the memory back to the OS.

    A domain's objects reference each other (domain, vCPUs, tables), so they
    wait for Python's cycle collector; and glibc keeps what is freed in its
    malloc arenas.  Without this the daemon's RSS grew by about 30 KiB with
    every domain created and destroyed.  Runs once after a burst of destroys
    (on the timer thread: one collection, tens of milliseconds at most)."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


def host_memory_mib() -> int:
    """The host's RAM in MiB (what Xen's heap would be)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20


def _seclabel(args: dict[str, Any]) -> str:
    label = args.get("seclabel", DEFAULT_DOMU_LABEL)
    if not isinstance(label, str) or not SECLABEL_RE.fullmatch(label):
        raise ControlError("EINVAL", "config field 'seclabel' must be a label user:role:type")
    return label


def _boot_image(spec: BuildSpec) -> Path:
    """What the domain booted: its kernel, or for HVM its bzImage or hvmloader."""
    hvm = spec.hvm
    if hvm is None:
        return spec.kernel
    image = hvm.kernel or hvm.firmware
    assert image is not None  # HvmSpec has one or the other
    return image


def _serial_console(d: Domain) -> bool:
    """The domain's console is its emulated serial port (xl console's default for HVM)."""
    return d.device_model is not None and d.device_model.spec.serial


def request_from_dict(args: dict[str, Any], run_dir: Path = Path(DEFAULT_RUN_DIR)
                      ) -> DomainRequest:
    """Validate a create request's config object into a DomainRequest."""
    def text(key: str, default: str | None = None, limit: int = 4096) -> str:
        value = args.get(key, default)
        if not isinstance(value, str) or (not value and default is None) or len(value) > limit:
            raise ControlError("EINVAL", f"config field '{key}' must be a non-empty string "
                                         f"of at most {limit} characters")
        return value

    def number(key: str, low: int, high: int, default: int | None = None) -> int:
        value = args.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ControlError("EINVAL", f"config field '{key}' must be a number "
                                         f"from {low} to {high}")
        return value

    def action(key: str, default: str) -> str:
        value = text(key, default)
        if value not in ACTIONS:
            raise ControlError("EINVAL", f"config field '{key}' must be one of "
                                         f"{', '.join(ACTIONS)}")
        return value

    ramdisk = args.get("ramdisk")
    if ramdisk is not None and not isinstance(ramdisk, str):
        raise ControlError("EINVAL", "config field 'ramdisk' must be a string or null")
    domid = args.get("domid")
    if domid is not None and (not isinstance(domid, int) or isinstance(domid, bool)):
        raise ControlError("EINVAL", "config field 'domid' must be a number or null")
    vcpus = number("vcpus", 1, 128, 1)
    memory = number("memory_mib", 1, 1 << 20, 32)
    if memory > host_memory_mib():
        raise ControlError("ENOMEM", f"cannot allocate {memory} MiB for the domain: the host "
                                     f"has {host_memory_mib()} MiB of RAM")
    name = text("name")
    problem = name_problem(name)
    if problem is not None:
        raise ControlError("EINVAL", f"config field 'name': {problem}")
    hvm = None
    # A PVH guest needs a kernel; an HVM guest boots its firmware, or the kernel
    # directly when the request has one (boot/bzimage.py).
    kernel = (None if args.get("hvm") is not None and args.get("kernel") is None
              else Path(text("kernel")))
    if args.get("hvm") is not None:
        from pyxen.control.hvm_request import hvm_spec_from_dict

        if kernel is None and ramdisk:
            raise ControlError("EINVAL", "config field 'ramdisk' needs a 'kernel': an HVM "
                                         "guest booting from its firmware has no ramdisk")
        hvm = hvm_spec_from_dict(args["hvm"], run_dir, kernel)
    spec = BuildSpec(
        name=name, kernel=kernel if kernel is not None else Path(),
        ramdisk=Path(ramdisk) if ramdisk else None, cmdline=text("cmdline", ""),
        memory_mib=memory, maxmem_mib=number("maxmem_mib", memory, 1 << 20, memory),
        vcpus=vcpus, maxvcpus=number("maxvcpus", vcpus, 128, vcpus),
        max_event_channels=number("max_event_channels", 1, 0xFFFF_FFFF, 1023),
        domid=domid, seclabel=_seclabel(args), hvm=hvm,
        altp2m=number("altp2m", 0, 3, 0),
    )
    def cpu_set(key: str) -> frozenset[int] | None:
        value = args.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not value or not all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c < MAX_CPUS
                for c in value):
            raise ControlError("EINVAL", f"config field '{key}' must be a list of CPU numbers")
        return frozenset(value)

    sched_params = tuple((name, number(key, low, high)) for key, name, low, high in (
        ("cpu_weight", "weight", 1, 65535), ("cap", "cap", 0, 65535)) if args.get(key) is not None)
    pool = args.get("pool")
    if pool is not None and (not isinstance(pool, str) or not pool):
        raise ControlError("EINVAL", "config field 'pool' must be a cpupool name")
    disks = args.get("disks") or []
    if not isinstance(disks, list) or len(disks) > MAX_DISKS:
        raise ControlError("EINVAL", f"config field 'disks' must be a list of at most "
                                     f"{MAX_DISKS} disks")
    parsed: tuple[Disk, ...] = ()
    if disks:  # the PV device modules load only for a domain that has devices
        from pyxen.control.vbd import disk_from_dict

        parsed = tuple(disk_from_dict(d) for d in disks)
    if len({d.devid for d in parsed}) != len(parsed):
        raise ControlError("EINVAL", "two disks have the same virtual device")
    nics = args.get("nics") or []
    if not isinstance(nics, list) or len(nics) > MAX_NICS:
        raise ControlError("EINVAL", f"config field 'nics' must be a list of at most "
                                     f"{MAX_NICS} network interfaces")
    parsed_nics: tuple[Nic, ...] = ()
    if nics:
        from pyxen.control.vif import nic_from_dict

        parsed_nics = tuple(nic_from_dict(n) for n in nics)
    if len({n.devid for n in parsed_nics}) != len(parsed_nics):
        raise ControlError("EINVAL", "two network interfaces have the same device number")
    return DomainRequest(spec, action("on_poweroff", "destroy"), action("on_reboot", "restart"),
                         action("on_crash", "destroy"), action("on_watchdog", "destroy"),
                         cpu_set("cpus"), cpu_set("cpus_soft"), sched_params, pool,
                         disks=parsed, nics=parsed_nics)
