"""``pyxen hypervisor``: the hypervisor process, in the foreground or as a daemon.

It owns /dev/kvm and every domain, serves the control socket in its run
directory and writes its log (guest console_io lines and its own messages)
to the log directory when it runs as a daemon.  ``--daemon`` forks, detaches
(setsid, stdio to the log) and returns once the control socket answers, so
the next command can use it at once.  SIGTERM or SIGINT destroys every
domain and removes the socket and the pid file.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
import threading
import time
from typing import NamedTuple, TextIO

from pyxen.control.client import ControlClient, NoDaemon
from pyxen.control.cpupools import CpuPools
from pyxen.control.manager import DomainManager
from pyxen.control.paths import InstancePaths
from pyxen.control.server import ControlServer
from pyxen.control.xenstore_sync import XenstoreSync
from pyxen.cpulist import parse_cpu_list
from pyxen.hv.argo.config import ArgoConfig
from pyxen.hv.argo.policy import Policy
from pyxen.hv.console_limit import LogPolicy
from pyxen.hv.dom0_mem import Dom0Sizing
from pyxen.hv.hypervisor import Hypervisor
from pyxen.hv.sched import SCHEDULERS
from pyxen.hv.vcpu import install_kick_handler
from pyxen.kvm import KvmError
from pyxen.toolstack.services import ServiceSupervisor

READY_TIMEOUT = 30.0


class HvOptions(NamedTuple):
    """What the hypervisor is built with beyond its CPUs and scheduler."""

    console_policy: LogPolicy | None = None
    argo: ArgoConfig | None = None  # Xen's argo= boot option (None: off)
    xsm_policy: Policy | None = None  # None: Xen's dummy XSM module
    dom0: Dom0Sizing | None = None  # dom0_mem (None: Domain-0 is this process)
# Xen 4.12's default scheduler is Credit2; "host" leaves vCPU threads to Linux.
DEFAULT_SCHEDULER = "credit2"


def hypervisor_running(paths: InstancePaths) -> bool:
    try:
        with ControlClient(paths.control_socket) as client:
            client.call("hello")
        return True
    except (NoDaemon, OSError, Exception):
        return False


def run_hypervisor(paths: InstancePaths, daemon: bool, cpus: str | None = None,
                   sched: str = DEFAULT_SCHEDULER, console_policy: LogPolicy | None = None,
                   argo: ArgoConfig | None = None, xsm_policy: Policy | None = None,
                   dom0: Dom0Sizing | None = None) -> int:
    if hypervisor_running(paths):
        print(f"pyxen hypervisor: one is already running at {paths.control_socket}",
              file=sys.stderr)
        return 1
    try:
        paths.make()
    except OSError as e:
        print(f"pyxen hypervisor: cannot create {paths.run_dir} or {paths.log_dir}: "
              f"{e.strerror} (choose others with --run-dir/--log-dir)", file=sys.stderr)
        return 1
    try:
        pcpus = host_pcpus(cpus)
    except ValueError as e:
        print(f"pyxen hypervisor: --cpus: {e}", file=sys.stderr)
        return 2
    if sched != "host" and sched not in SCHEDULERS:
        print(f"pyxen hypervisor: unknown scheduler '{sched}' (choose from "
              f"{', '.join(['host', *SCHEDULERS])})", file=sys.stderr)
        return 2
    options = HvOptions(console_policy, argo, xsm_policy, dom0)
    if daemon:
        return _daemonize(paths, pcpus, sched, options)
    return _serve(paths, sys.stdout, sys.stderr, pcpus, sched, options)


def raise_fd_limit() -> None:
    """Lift the soft open-file limit to the hard one, as Xen's daemons do.

    Each domain holds ~9 descriptors here and a few in the services (which
    inherit the limit): a common default soft limit of 1024 would stop a host
    at about a hundred domains."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # the kernel's ceiling is nr_open
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            return
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def host_pcpus(cpus: str | None) -> list[int]:
    """The host CPUs to schedule on: --cpus, else every CPU this process may use."""
    allowed = sorted(os.sched_getaffinity(0))
    if cpus is None:
        return allowed
    chosen = parse_cpu_list(cpus)
    outside = [c for c in chosen if c not in allowed]
    if outside:
        raise ValueError(f"CPUs {outside} are not available to this process (it may use "
                         f"{allowed})")
    return chosen


def _daemonize(paths: InstancePaths, pcpus: list[int], sched: str,
               options: HvOptions) -> int:
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)  # the intermediate child exits at once
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if hypervisor_running(paths):
                return 0
            time.sleep(0.05)
        print(f"pyxen hypervisor: the daemon did not start; see {paths.hypervisor_log}",
              file=sys.stderr)
        return 1
    os.setsid()
    if os.fork():
        os._exit(0)
    log = open(paths.hypervisor_log, "a", buffering=1)  # noqa: SIM115 (lives with the process)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    os.close(devnull)
    try:
        status = _serve(paths, log, log, pcpus, sched, options)
    except BaseException:
        status = 1
    os._exit(status)


class ControlPlane:
    """The hypervisor and its control plane: the domain manager, the control
    socket, the pid file and (``start_services``) xenstored, consoled, blkback, netback and the
    xenstore sync.  ``pyxen hypervisor`` serves one until a signal;
    ``pyxen boot`` runs one in the foreground around its tree's domains."""

    def __init__(self, paths: InstancePaths, out: TextIO, err: TextIO, pcpus: list[int],
                 sched: str, options: HvOptions) -> None:
        self.paths = paths
        self.err = err
        self.sched = sched
        self.pcpus = pcpus
        self.options = options
        raise_fd_limit()  # before any service starts: they inherit it
        self.hv = Hypervisor(out, err, realtime_timers=True,
                             console_policy=options.console_policy, argo=options.argo,
                             xsm_policy=options.xsm_policy)  # KvmError: the caller's
        pools = None if sched == "host" else CpuPools(self.hv, pcpus, sched)
        install_kick_handler()
        self.manager = DomainManager(self.hv)
        self.manager.pools = pools
        self.manager.dom0 = options.dom0
        self.server = ControlServer(self.hv, self.manager, paths.control_socket)
        self.services: list[ServiceSupervisor] = []

    def start(self) -> None:
        """Serve the control socket (and write the pid file)."""
        hv, options = self.hv, self.options
        self.paths.pid_file.write_text(f"{os.getpid()}\n")
        self.server.start()
        hv.console.log(f"pyxen hypervisor {os.getpid()} serving {self.paths.control_socket}, "
                       f"scheduler {self.sched} on CPUs {','.join(map(str, self.pcpus))}")
        if options.argo is not None and options.argo.enabled:
            hv.console.log(f"argo: on, mac-permissive "
                           f"{'on' if options.argo.mac_permissive else 'off'}, XSM policy "
                           f"{hv.argo.policy.name}")
        if options.dom0 is not None:
            hv.console.log(options.dom0.describe())

    def start_services(self, names: tuple[str, ...] = ("xenstored", "consoled", "blkback",
                                                      "netback")) -> None:
        """Start the service processes (and, with xenstored, the xenstore sync)."""
        self.services = [ServiceSupervisor(name, f"pyxen.services.{name}", self.paths,
                                           self.err, self.hv.console.log,
                                           self.server.attach_service)
                         for name in names]
        if "xenstored" in names:
            self.manager.xenstore = XenstoreSync(self.manager, self.paths.xenstored_socket)
            self.manager.xenstore.start()
        for service in self.services:
            service.start()

    def close(self) -> None:
        """Destroy every domain, stop the services, remove the socket and pid file."""
        if self.manager.domids():
            self.hv.console.log("shutting down: destroying every domain")
        if self.manager.xenstore is not None:
            self.manager.xenstore.stop()
        for service in self.services:
            service.stop()
        self.server.close()
        self.manager.close()
        self.hv.close()
        with contextlib.suppress(FileNotFoundError):
            self.paths.pid_file.unlink()


def _serve(paths: InstancePaths, out: TextIO, err: TextIO, pcpus: list[int],
           sched: str, options: HvOptions) -> int:
    try:
        plane = ControlPlane(paths, out, err, pcpus, sched, options)
    except KvmError as e:
        print(f"pyxen hypervisor: {e}", file=err)
        return 1
    stop = threading.Event()

    def on_signal(_sig: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    plane.start()
    plane.start_services()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        plane.close()
    return 0
