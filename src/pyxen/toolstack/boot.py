"""``pyxen boot FILE.dts|FILE.dtb``: a whole system of domains from a device tree.

Xen's dom0less boot on x86: the tree (:mod:`pyxen.boot.fdt`, read by
:mod:`pyxen.boot.dom0less`) names every domain; this command is the
hypervisor for them, in the foreground.

Sequence
--------
1. Read and check everything before touching KVM: the tree (errors exit 2
   with one line ``FILE: NODE: PROPERTY: problem``), the domain names (xl's
   rules), Xen's command line (``XenOptions``: ``dom0_mem``,
   ``dom0_max_vcpus``, ``argo``, ``sched``; other Xen options are warned
   about and ignored).
2. Start the hypervisor with its control plane (``daemon.ControlPlane``:
   the manager and the control socket in the run directory), so ``pyxen
   list/console/destroy/...`` work while the boot runs; a hypervisor already
   serving that run directory is an error (exit 1).
3. Create the domains at once: dom0 first if the tree has a dom0 kernel,
   then the domUs in tree order, each built paused (a few ms each); then
   unpause them all together, as Xen does, so no domain runs before the
   peers it may address exist.  Domains with xenstore are held until
   xenstored has introduced them (``_await_xenstore``).
   The xenstored/consoled processes start only if some domain asked for PV
   interfaces (``xen,enhanced``), in parallel with the creation.
4. Show every domain's console prefixed ``(dN)``: console_io and port 0xE9
   lines come through the hypervisor console (stdout); the PV console of
   ``xen,enhanced`` domains is consoled's log of it, followed from the
   size it had at creation (``_PvConsoleTail``).
5. Wait until every domain is gone: a domain that shuts down is destroyed
   (its reason recorded); one destroyed by ``pyxen destroy`` counts as
   destroyed.  Exit 0 when all powered off, else the ``create -F`` status
   of the first that did not (crash 13, reboot 11, ...; 1 for destroyed)
   with a one-line summary.  Ctrl-C or SIGTERM destroys everything (130).

The tree's dom0 is a real domain named ``dom0``, sized by ``dom0_mem``
(Xen's default without it: all available memory less min(1/16, 128 MiB),
with Xen 4.12's warning for a PVH dom0 without dom0_mem), with
``xen,enhanced``-style PV interfaces.  pyxen's domain 0 remains the
hypervisor process (the control socket is dom0's kernel interface), so the
tree's dom0 gets the first free domain id and no privileges beyond a domU's.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from pyxen.abi.hvm import HvmParam
from pyxen.abi.xen import ShutdownReason
from pyxen.boot.dom0less import BootTree, DomUNode, read_binding
from pyxen.boot.fdt import FdtError, load_tree
from pyxen.control.names import name_problem
from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import ControlError
from pyxen.hv.argo.config import ArgoConfig, ArgoOptionError
from pyxen.hv.dom0_mem import Dom0Mem, Dom0MemError, Dom0Sizing, host_avail_bytes
from pyxen.hv.domain import reason_name
from pyxen.hv.sched import SCHEDULERS

if TYPE_CHECKING:
    from pyxen.control.manager import DomainRequest
    from pyxen.hv.builder import BuildSpec
    from pyxen.hv.domain import Domain
    from pyxen.toolstack.daemon import ControlPlane

EXIT_CONFIG = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
DOM0_NAME_IN_TREE = "dom0"
POLL_SECONDS = 0.05
# How long xen,enhanced domains are held for xenstored to introduce them.
XENSTORE_WAIT_SECONDS = 10.0
TAIL_SECONDS = 0.05


class BootError(ValueError):
    """A one-line reason the system cannot boot (a bad tree or option)."""


@dataclass
class XenOptions:
    """Xen's boot options from the tree that pyxen acts on."""

    dom0: Dom0Sizing | None = None  # dom0_mem, sized
    dom0_mem_given: bool = False
    dom0_max_vcpus: int = 1
    argo: ArgoConfig | None = None
    sched: str | None = None
    warnings: list[str] = field(default_factory=list)


def parse_xen_options(cmdline: str, where: str, need_dom0: bool,
                      avail_bytes: int | None = None) -> XenOptions:
    """Xen's command line (``dom0_mem=256M argo=1,mac-permissive=1 ...``); BootError."""
    opts = XenOptions()
    dom0_mem = None
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        try:
            if key == "dom0_mem" and sep:
                dom0_mem = Dom0Mem.parse(value)
            elif key == "argo":
                opts.argo = ArgoConfig.parse(value if sep else "1")
            elif key == "no-argo" and not sep:
                opts.argo = ArgoConfig()
            elif key == "dom0_max_vcpus" and sep:
                if not value.isdigit() or not 1 <= int(value) <= 128:
                    raise BootError(f"dom0_max_vcpus={value}: give a number of vCPUs, 1 to 128")
                opts.dom0_max_vcpus = int(value)
            elif key == "sched" and sep:
                if value not in SCHEDULERS:
                    raise BootError(f"sched={value}: choose one of {', '.join(SCHEDULERS)}")
                opts.sched = value
            else:
                opts.warnings.append(f"{where}: Xen option '{word}' is not one pyxen "
                                     "implements (dom0_mem, dom0_max_vcpus, argo, sched): "
                                     "ignored")
        except (Dom0MemError, ArgoOptionError) as e:
            raise BootError(f"{where}: {e}") from None
        except BootError as e:
            raise BootError(f"{where}: {e}") from None
    if need_dom0:
        opts.dom0_mem_given = dom0_mem is not None
        spec = dom0_mem or Dom0Mem.parse("0")
        avail = host_avail_bytes() if avail_bytes is None else avail_bytes
        try:
            opts.dom0 = Dom0Sizing(spec, spec.compute(avail))
        except Dom0MemError as e:
            raise BootError(f"{where}: {e}") from None
        if not opts.dom0_mem_given:
            opts.warnings.append(f"{where}: no dom0_mem: the PVH dom0 gets Xen's default, "
                                 f"{opts.dom0.size.bytes >> 20} MiB (all available memory "
                                 "but a reserve); give dom0_mem=SIZE")
    elif dom0_mem is not None:
        opts.warnings.append(f"{where}: dom0_mem: the tree has no dom0 kernel: ignored")
    return opts


@dataclass
class Plan:
    """What the tree asks for, checked."""

    tree: BootTree
    options: XenOptions


def plan_boot(path: Path, avail_bytes: int | None = None) -> Plan:
    """Read ``path`` and check the whole system; BootError says what is wrong."""
    from pyxen.boot.dom0less import BindingError

    try:
        tree = read_binding(load_tree(path), path.parent)
    except (FdtError, BindingError) as e:
        raise BootError(f"{path}: {e}") from None
    for domu in tree.domus:
        problem = name_problem(domu.name)
        if domu.name == DOM0_NAME_IN_TREE and tree.dom0 is not None:
            problem = f"'{DOM0_NAME_IN_TREE}' names the tree's dom0: rename the node"
        if problem is not None:
            raise BootError(f"{path}: {domu.node}: name: {problem} (the node name is the "
                            "domain's name)")
    where = f"{path}: /chosen: {tree.xen_cmdline_prop}"
    options = parse_xen_options(tree.xen_cmdline, where, tree.dom0 is not None, avail_bytes)
    return Plan(tree, options)


def boot_command(path: Path, paths: InstancePaths, cpus: str | None = None,
                 sched: str | None = None) -> int:
    err = sys.stderr
    try:
        plan = plan_boot(path)
    except BootError as e:
        print(f"pyxen boot: {e}", file=err)
        return EXIT_CONFIG
    for warning in (*plan.tree.warnings, *plan.options.warnings):
        print(f"pyxen boot: warning: {path}: {warning}" if not warning.startswith(str(path))
              else f"pyxen boot: warning: {warning}", file=err)
    return _Boot(plan, paths, cpus, sched or plan.options.sched).run()


class _Boot:
    def __init__(self, plan: Plan, paths: InstancePaths, cpus: str | None,
                 sched: str | None) -> None:
        self.plan = plan
        self.paths = paths
        self.cpus = cpus
        self.sched = sched
        self.domids: dict[int, str] = {}  # every domain this boot created: name
        self.ended: dict[int, int | None] = {}  # domid: shutdown reason (None: destroyed)
        self.wake = threading.Event()
        self.tails: list[_PvConsoleTail] = []

    def run(self) -> int:
        from pyxen.kvm import KvmError
        from pyxen.toolstack.daemon import (
            DEFAULT_SCHEDULER,
            ControlPlane,
            HvOptions,
            host_pcpus,
            hypervisor_running,
        )

        err = sys.stderr
        paths = self.paths
        if hypervisor_running(paths):
            print(f"pyxen boot: a hypervisor is already running at {paths.control_socket} "
                  "(stop it, or choose another --run-dir)", file=err)
            return EXIT_FAILED
        try:
            paths.make()
            pcpus = host_pcpus(self.cpus)
        except OSError as e:
            print(f"pyxen boot: cannot create {paths.run_dir} or {paths.log_dir}: "
                  f"{e.strerror} (choose others with --run-dir/--log-dir)", file=err)
            return EXIT_FAILED
        except ValueError as e:
            print(f"pyxen boot: --cpus: {e}", file=err)
            return EXIT_CONFIG
        sched = self.sched or DEFAULT_SCHEDULER
        if sched != "host" and sched not in SCHEDULERS:
            print(f"pyxen boot: unknown scheduler '{sched}' (choose from "
                  f"{', '.join(['host', *SCHEDULERS])})", file=err)
            return EXIT_CONFIG
        opts = self.plan.options
        hv_options = HvOptions(None, opts.argo, None, opts.dom0)
        try:
            plane = ControlPlane(paths, sys.stdout, err, pcpus, sched, hv_options)
        except KvmError as e:
            print(f"pyxen boot: {e}", file=err)
            return EXIT_FAILED
        old_term = signal.signal(signal.SIGTERM, _interrupt)
        plane.manager.dom0_is_guest = self.plan.tree.dom0 is not None
        try:
            plane.start()
            status, summary = self._boot(plane)
        except KeyboardInterrupt:
            status, summary = EXIT_INTERRUPTED, "interrupted: every domain destroyed"
        finally:
            for tail in self.tails:
                tail.stop()
            plane.close()
            signal.signal(signal.SIGTERM, old_term)
        print(f"pyxen boot: {summary}", file=err)
        return status

    def _boot(self, plane: ControlPlane) -> tuple[int, str]:
        tree = self.plan.tree
        enhanced = {d.enhanced for d in tree.domus} | ({"enabled"} if tree.dom0 else set())
        services = tuple(name for name, wanted in (
            ("xenstored", "enabled" in enhanced),
            ("consoled", bool(enhanced & {"enabled", "no-xenstore"}))) if wanted)
        if services:
            plane.start_services(services)
        requests = self._requests()
        # Every domain is built paused, then all are unpaused together, as Xen
        # does: no domain runs before its peers exist (a ring partner, an
        # event-channel peer named on its command line).
        created = []
        for name, request, pv_console in requests:
            try:
                log = self.paths.console_log(name)
                offset = log.stat().st_size if log.exists() else 0
                domain = plane.manager.create(request, paused=True)
            except ControlError as e:
                return EXIT_FAILED, (f"cannot create {name}: {e.message}" +
                                     ("; the domains already created are destroyed"
                                      if self.domids else ""))
            domain.on_shutdown.append(lambda _d: self.wake.set())
            self.domids[domain.domid] = name
            if pv_console:
                tail = _PvConsoleTail(plane, domain.domid, log, offset)
                tail.start()
                self.tails.append(tail)
            created.append(domain)
        self._await_xenstore(plane, created)
        for domain in created:
            domain.unpause()
        return self._wait(plane)

    @staticmethod
    def _await_xenstore(plane: ControlPlane, domains: list[Domain]) -> None:
        """Hold the domains with xenstore until xenstored has introduced them (at most
        XENSTORE_WAIT_SECONDS): a guest then never talks to a ring nobody serves
        yet, nor meets its introduction half-way through a request."""
        sync = plane.manager.xenstore
        wanted = {d.domid for d in domains if d.params[HvmParam.STORE_PFN]}
        if sync is None or not wanted:
            return
        deadline = time.monotonic() + XENSTORE_WAIT_SECONDS
        while not wanted <= sync.introduced.keys() and time.monotonic() < deadline:
            sync.kick()
            time.sleep(0.02)

    def _requests(self) -> list[tuple[str, DomainRequest, bool]]:
        from pyxen.control.manager import DomainRequest
        from pyxen.hv.builder import BuildSpec

        tree, opts = self.plan.tree, self.plan.options
        out: list[tuple[str, DomainRequest, bool]] = []
        # Every shutdown ends the domain (it is recorded, then destroyed): a
        # dom0less system is not restarted by a toolstack.
        def request(spec: BuildSpec, vcpu_hard: tuple[tuple[int, frozenset[int]], ...] = ()
                    ) -> DomainRequest:
            return DomainRequest(spec, on_poweroff="destroy", on_reboot="destroy",
                                 on_crash="destroy", on_watchdog="destroy",
                                 vcpu_hard=vcpu_hard)

        if tree.dom0 is not None and opts.dom0 is not None:
            size = opts.dom0.size
            mib = max(1, size.bytes >> 20)
            spec = BuildSpec(name=DOM0_NAME_IN_TREE, kernel=tree.dom0.kernel,
                             ramdisk=tree.dom0.ramdisk, cmdline=tree.dom0.cmdline,
                             memory_mib=mib, maxmem_mib=max(mib, min(size.max_bytes >> 20,
                                                                     1 << 20)),
                             vcpus=opts.dom0_max_vcpus, maxvcpus=opts.dom0_max_vcpus)
            out.append((DOM0_NAME_IN_TREE, request(spec), True))
        for d in tree.domus:
            out.append((d.name, request(_spec(d), d.vcpu_hard),
                        d.enhanced != "disabled"))
        return out

    def _wait(self, plane: ControlPlane) -> tuple[int, str]:
        manager = plane.manager
        while len(self.ended) < len(self.domids):
            self.wake.wait(POLL_SECONDS * 4)
            self.wake.clear()
            live = set(manager.domids())
            for domid in self.domids:
                if domid not in self.ended and domid not in live:
                    self.ended[domid] = manager.ended_reason(domid)
        return self._summary()

    def _summary(self) -> tuple[int, str]:
        bad = [(domid, reason) for domid, reason in sorted(self.ended.items())
               if reason != ShutdownReason.poweroff]
        total = len(self.ended)
        if not bad:
            return 0, f"all {total} domains powered off"
        from pyxen.toolstack.create import exit_status

        what = ", ".join(f"{self.domids[d]} (d{d}) "
                         f"{'was destroyed' if r is None else reason_name(r)}" for d, r in bad)
        first = bad[0][1]
        return (EXIT_FAILED if first is None else exit_status(first),
                f"{total - len(bad)} of {total} domains powered off; {what}")


def _spec(d: DomUNode) -> BuildSpec:
    from pyxen.hv.builder import BuildSpec

    return BuildSpec(name=d.name, kernel=d.kernel, ramdisk=d.ramdisk, cmdline=d.cmdline,
                     memory_mib=d.memory_mib, maxmem_mib=d.memory_mib, vcpus=d.cpus,
                     maxvcpus=d.cpus, enhanced=d.enhanced)


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class _PvConsoleTail:
    """A domain's PV console output, read from consoled's log as it grows and
    shown through the hypervisor console (``(dN) text`` lines, as console_io).

    consoled owns the ring (one reader per ring; ``pyxen console`` attaches
    to consoled), so the boot follows its log file from the size it had
    before the domain was created (a log of an earlier domain of that name
    is not shown again) until the domain is gone and the log stops growing.
    """

    def __init__(self, plane: ControlPlane, domid: int, log: Path,
                 offset: int) -> None:
        self.plane = plane
        self.domid = domid
        self.log = log
        self.offset = offset
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"d{domid}-pvconsole",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._drain()
            self._stop.set()
            self._thread.join(2)

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            with self.log.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
            if data:
                self.offset += len(data)
                self.plane.hv.console.guest_write(self.domid, data, source="pv")

    def _run(self) -> None:
        while not self._stop.wait(TAIL_SECONDS):
            self._drain()
