"""The hypervisor's side of the control socket.

Design: a listening Unix socket (created 0600 inside the 0700 run
directory) and one thread per connection, each reading requests and
answering them in order.  Operations are functions in ``OPS``; each
validates its arguments and either returns a JSON-able result or raises
``ControlError``.  Anything else a handler raises is a pyxen bug: it is
logged and answered with EIO, and the daemon carries on.

Every operation is atomic as seen from the socket: it runs to completion
(or not at all) whether or not the client is still there to read the
reply, so a client that disconnects mid-operation leaves nothing half-done.

Peers and roles
---------------
Every connection has a ``Role``, fixed when it starts:

- *toolstack*: a connection to control.sock.  The kernel's SO_PEERCRED
  names the connecting process; one whose uid is neither root nor the
  daemon's own is refused (one EACCES reply, then the connection closes),
  whatever the socket's file mode lets through.  A toolstack connection may
  run every operation.
- *service*: a connection the daemon made itself for a service process it
  starts (``attach_service``): a socketpair whose other end the child
  inherits (``PYXEN_CONTROL_FD``, which ``ControlClient.connect`` uses).
  Nothing else can obtain one, so the role needs no token or check.  A
  service may run only ``SERVICE_OPS`` -- find domains, read HVM params,
  bind event channels, map (or grant_copy) the pages granted to domain 0
  and map its rings' frames -- and never create, destroy, rename, pause, shut down or
  reconfigure a domain (EPERM).

The services run as root today, so a service that went rogue could still
connect to control.sock as a toolstack client: the role bounds what a
service does through its own connection (a confused or buggy service
cannot touch domains), and becomes a hard boundary once services run under
a uid of their own, which the SO_PEERCRED check then refuses here.

Pages go to a client as files holding that page alone (control/page_ops.py,
hv/page_export.py).  The hypervisor writes no file a client names: ``trace``
export writes into a file the client opened and sent with the request, so
the client's own permissions decide where it may write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import socket
import stat
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyxen.abi.hvm import HVM_NR_PARAMS
from pyxen.abi.xen import DOMID_FIRST_RESERVED
from pyxen.control import argo_ops, config_ops, device_ops, grant_copy_ops, page_ops
from pyxen.control.manager import POOL0, DomainManager, request_from_dict
from pyxen.control.netstats import read_counters
from pyxen.control.protocol import (
    MAX_MESSAGE,
    MAX_REPLY,
    PROTOCOL_VERSION,
    ControlError,
    ProtocolError,
    RequestError,
    receive,
    send,
)
from pyxen.control.session import Role, Session, WithFds, peer_cred
from pyxen.hv.builder import MAXMEM_SLACK_PAGES, NR_SPECIAL_PAGES
from pyxen.hv.errors import HypercallError
from pyxen.hv.hypervisor import Hypervisor
from pyxen.hv.sched import trace_export
from pyxen.hv.sched.dispatcher import Dispatcher
from pyxen.hv.sched.interface import SchedParamError

if TYPE_CHECKING:
    from pyxen.control.cpupools import CpuPools

MAX_CONNECTIONS = 64
REFUSE_DRAIN = 5.0  # seconds a refused peer has to read its answer and go
DEFAULT_SHUTDOWN_TIMEOUT = 60.0  # a cooperative shutdown is forced after this
Handler = Callable[["ControlServer", "Session", dict[str, Any]], Any]


def _domid(args: dict[str, Any]) -> int:
    value = args.get("domid")
    if (not isinstance(value, int) or isinstance(value, bool)
            or not 0 <= value < DOMID_FIRST_RESERVED):
        raise ControlError("EINVAL", "'domid' must be a domain id "
                           f"(0 to {DOMID_FIRST_RESERVED - 1})")
    return value


def _guest(server: ControlServer, args: dict[str, Any]) -> int:
    domid = _domid(args)
    if domid == 0:
        raise ControlError("EPERM", "domain 0 is the hypervisor process itself")
    server.manager.get(domid)
    return domid


MAX_SECONDS = 7 * 24 * 3600.0


def _seconds(args: dict[str, Any], key: str, default: float | None) -> float | None:
    """A timeout argument: a finite number of seconds from 0 to a week (or the default)."""
    value = args.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) \
            or not 0 <= value <= MAX_SECONDS:  # also refuses NaN
        raise ControlError("EINVAL", f"'{key}' must be a number of seconds (0 to one week)")
    return float(value)


def _hello(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    ops = OPS if session.role is Role.TOOLSTACK else SERVICE_OPS
    return {"version": PROTOCOL_VERSION, "ops": sorted(ops), "pid": os.getpid(),
            "role": session.role.value}


def _create(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    config = args.get("config")
    if not isinstance(config, dict):
        raise ControlError("EINVAL", "'config' must be an object")
    domain = server.manager.create(request_from_dict(config, server.path.parent),
                                   paused=bool(args.get("paused")))
    return {"domid": domain.domid, "name": domain.name}


def _destroy(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    server.manager.destroy(_guest(server, args))
    return None


def _pause(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    server.manager.get(_guest(server, args)).domain.pause()
    return None


def _unpause(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    domain = server.manager.get(_guest(server, args)).domain
    if not domain.pause_count:
        raise ControlError("EINVAL", f"domain {domain.domid} is not paused")
    domain.unpause()
    return None


def _shutdown(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """Shut down: through control/shutdown if the guest has PV control, else forced."""
    reason = args.get("reason", 0)
    if not isinstance(reason, int) or isinstance(reason, bool) or not 0 <= reason <= 5:
        raise ControlError("EINVAL", "'reason' must be a shutdown reason (0 to 5)")
    timeout = _seconds(args, "timeout", DEFAULT_SHUTDOWN_TIMEOUT)
    assert timeout is not None
    asked = server.manager.shutdown(_guest(server, args), reason, bool(args.get("force")),
                                    timeout)
    return {"cooperative": asked}


def _wait(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """Block until the domain has shut down (or ``timeout`` seconds); its reason."""
    timeout = _seconds(args, "timeout", None)
    domid = _domid(args)
    return {"reason": server.manager.wait(domid, timeout)}


def _dom0_info(server: ControlServer) -> dict[str, Any]:
    """Domain 0 is this process: its memory (dom0_mem's size if given, unless a
    dom0 guest of a booted device tree has that size), CPU time and the host's CPUs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    dom0 = server.manager.dom0
    memkb, max_memkb = ((usage.ru_maxrss, usage.ru_maxrss)
                        if dom0 is None or server.manager.dom0_is_guest
                        else (dom0.size.kib, dom0.size.max_kib))
    return {"domid": 0, "name": "Domain-0", "uuid": "00" * 16,
            "current_memkb": memkb, "max_memkb": max_memkb,
            "vcpus": os.cpu_count() or 1, "vcpu_online": os.cpu_count() or 1,
            "running": True, "blocked": False, "paused": False, "shutdown": False,
            "shutdown_reason": None, "dying": False,
            "cpu_time_ns": int((usage.ru_utime + usage.ru_stime) * 1e9),
            "start_time": server.manager.started, "kernel": None, "emulated": {}}


def _generation(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """A number that changes whenever a domain is created or destroyed: a poller
    asks for ``list`` again only when it moved (cheap with hundreds of domains)."""
    return server.manager.generation


def _list(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """xl's dominfo list: Domain-0 (this process) first, then every domain.  With
    ``brief``, only each domain's id, name, dying flag and console kind (consoled
    asks after every change of the domain list: with 2000 domains a full list
    took the daemon ~60 ms)."""
    brief = args.get("brief", False)
    if not isinstance(brief, bool):
        raise ControlError("EINVAL", "'brief' must be true or false")
    if brief:
        dom0 = {"domid": 0, "name": "Domain-0", "dying": False, "serial": False}
        return [dom0, *server.manager.brief()]
    if "domid" in args:
        if _domid(args) == 0:
            return [_dom0_info(server)]
        return [server.manager.info(_guest(server, args))]
    infos = [_dom0_info(server)]
    networks = read_counters()
    for domid in server.manager.domids():
        with contextlib.suppress(ControlError):  # destroyed while listing
            infos.append(server.manager.info(domid, networks))
    return infos


def _lookup(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    name = args.get("name")
    if not isinstance(name, str):
        raise ControlError("EINVAL", "'name' must be a string")
    domid = server.manager.find(name)
    if domid is None:
        raise ControlError("ESRCH", f"no domain is named '{name}'")
    return {"domid": domid}


def _rename(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    name = args.get("name")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ControlError("EINVAL", "'name' must be a non-empty string of at most 64 characters")
    server.manager.rename(_guest(server, args), name)
    return None


def _vcpu_list(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """Every domain's vCPUs, Domain-0's first (as xl), or one domain's."""
    if "domid" in args and _domid(args) == 0:
        return server.manager.dom0_vcpu_info()
    domids = [_guest(server, args)] if "domid" in args else server.manager.domids()
    out: list[dict[str, Any]] = [] if "domid" in args else server.manager.dom0_vcpu_info()
    for domid in domids:
        with contextlib.suppress(ControlError):
            out += server.manager.vcpu_info(domid)
    return out


def _mem_max(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    kib = args.get("kib")
    if not isinstance(kib, int) or isinstance(kib, bool) or not 0 < kib < 1 << 40:
        raise ControlError("EINVAL", "'kib' must be a positive number of KiB")
    domain = server.manager.get(_guest(server, args)).domain
    with domain.lock:
        domain.max_pages = kib // 4
    return None


def _mem_set(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """xl mem-set: the balloon target in xenstore, and a maximum that leaves libxl's slack."""
    kib = args.get("kib")
    if not isinstance(kib, int) or isinstance(kib, bool) or not 0 < kib < 1 << 40:
        raise ControlError("EINVAL", "'kib' must be a positive number of KiB")
    domid = _guest(server, args)
    sync = server.manager.xenstore
    if sync is None or not sync.set_target(domid, kib):
        raise ControlError("EAGAIN", "xenstored is not running: the memory target cannot be set")
    domain = server.manager.get(domid).domain
    with domain.lock:
        domain.max_pages = kib // 4 + MAXMEM_SLACK_PAGES + NR_SPECIAL_PAGES
    return None


def _dmesg(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    console = server.hv.console
    lines = list(console.ring)
    if args.get("clear"):
        console.ring.clear()
    return {"lines": lines}


def _info(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    pages = os.sysconf("SC_PHYS_PAGES")
    free = os.sysconf("SC_AVPHYS_PAGES")
    page = os.sysconf("SC_PAGE_SIZE")
    uname = os.uname()
    return {
        "host": uname.nodename, "release": uname.release, "machine": uname.machine,
        "nr_cpus": os.cpu_count() or 1, "total_memory_mib": pages * page >> 20,
        "free_memory_mib": free * page >> 20, "tsc_khz": server.hv.tsc.hz // 1000,
        "xen_major": 4, "xen_minor": 12, "xen_extra": ".0-pyxen",
        "started": server.manager.started, "nr_domains": server.manager.nr_domains(),
        "scheduler": server.manager.scheduler(),
        "emulated": server.manager.emulated_total(),
        **_dom0_mem_info(server),
    }


def _dom0_mem_info(server: ControlServer) -> dict[str, Any]:
    dom0 = server.manager.dom0
    if dom0 is None:
        return {}
    return {"dom0_mem": str(dom0.spec), "dom0_memory_mib": dom0.size.bytes >> 20}


def _param(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    index = args.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < HVM_NR_PARAMS:
        raise ControlError("EINVAL", f"'index' must be an HVM param (0 to {HVM_NR_PARAMS - 1})")
    return {"value": server.manager.get(_guest(server, args)).domain.params[index]}


def _port(args: dict[str, Any], key: str) -> int:
    value = args.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 1 << 31:
        raise ControlError("EINVAL", f"'{key}' must be an event-channel port")
    return value


def _evtchn_bind(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """Bind dom0's end to a guest port offered to dom0; the eventfd signals its sends."""
    domid = _guest(server, args)
    try:
        local, fd = server.hv.control_ports.bind(domid, _port(args, "port"))
    except HypercallError as e:
        raise ControlError(errno.errorcode.get(e.errno, "EINVAL"),
                           f"port {args.get('port')} of domain {domid} is not unbound for "
                           "domain 0") from None
    session.ports.add(local)
    return WithFds({"local_port": local}, [fd])


def _serial_connect(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """An HVM domain's COM1: a socket to its device model's UART (consoled's)."""
    domid = _guest(server, args)
    dm = server.manager.get(domid).domain.device_model
    if dm is None or not dm.spec.serial:
        raise ControlError("ENODEV", f"domain {domid} has no emulated serial port")
    return WithFds({}, [dm.serial.fileno()])


def _evtchn_notify(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    local = _port(args, "local_port")
    if local not in session.ports:
        raise ControlError("EINVAL", f"local port {local} is not bound by this connection")
    server.hv.control_ports.notify(local)
    return None


def _evtchn_unbind(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    local = _port(args, "local_port")
    if local not in session.ports:
        raise ControlError("EINVAL", f"local port {local} is not bound by this connection")
    session.ports.discard(local)
    server.hv.control_ports.unbind(local)
    return None


def _scheduling(server: ControlServer, args: dict[str, Any] | None = None) -> Dispatcher:
    """The dispatcher that schedules a domain (``domid``), a pool (``pool``) or Pool-0."""
    pools = server.manager.pools
    if pools is None or server.hv.dispatcher is None:
        raise ControlError("ENOSYS", "this hypervisor leaves vCPUs to the host kernel's "
                                     "scheduler (start it with --sched credit2|credit|rtds|null)")
    args = args or {}
    if "domid" in args:
        pool = pools.pool_of(_guest(server, args))
    else:
        name = args.get("pool", POOL0)
        pool = pools.get(name if isinstance(name, str) else POOL0)
    if pool.dispatcher is None:
        raise ControlError("EINVAL", f"cpupool '{pool.name}' has no CPUs")
    return pool.dispatcher


def _sched_get(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """The scheduler's name and its global (or one domain's) parameters."""
    scheduler = _scheduling(server, args).scheduler
    if "domid" in args:
        return {"scheduler": scheduler.name,
                "domain": scheduler.domain_params(_guest(server, args))}
    return {"scheduler": scheduler.name, "global": scheduler.global_params()}


def _sched_set(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    dispatcher = _scheduling(server, args)
    params = args.get("params")
    if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in params.items()):
        raise ControlError("EINVAL", "'params' must map parameter names to integers")
    try:
        if "domid" in args:
            dispatcher.set_domain_params(_guest(server, args), params)
        else:
            dispatcher.set_global_params(params)
    except SchedParamError as e:
        raise ControlError("EINVAL", str(e)) from None
    return None


def _vcpu_pin(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """xl vcpu-pin: hard and soft affinity of one vCPU (or all, vcpu -1); null = all pCPUs."""
    dispatcher = _scheduling(server, {"domid": args.get("domid")})
    domain = server.manager.get(_guest(server, args)).domain
    vcpu = args.get("vcpu")
    if not isinstance(vcpu, int) or isinstance(vcpu, bool) or not -1 <= vcpu < len(domain.vcpus):
        raise ControlError("EINVAL", f"'vcpu' must be -1 (all) or 0..{len(domain.vcpus) - 1}")
    pcpus = frozenset(dispatcher.pcpus)

    def cpus(key: str) -> frozenset[int]:
        value = args.get(key)
        if value is None:
            return pcpus
        if not isinstance(value, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) for c in value):
            raise ControlError("EINVAL", f"'{key}' must be a list of CPU numbers or null")
        chosen = frozenset(value) & pcpus
        if not chosen:
            raise ControlError("EINVAL", f"{key}: none of CPUs {sorted(value)} is one of this "
                                         f"hypervisor's ({sorted(pcpus)})")
        return chosen

    hard, soft = cpus("hard"), cpus("soft")
    for runner in domain.vcpus if vcpu == -1 else [domain.vcpus[vcpu]]:
        runner.affinity_hard, runner.affinity_soft = hard, soft
        if runner.sched_vcpu is not None:
            dispatcher.set_affinity(runner, hard, soft)
    return None


def _trace(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """trace start / stop / export (into the file sent with the request)."""
    trace = _scheduling(server, {k: v for k, v in args.items() if k == "pool"}).trace
    action = args.get("action")
    if action == "start":
        trace.start()
    elif action == "stop":
        trace.stop()
    elif action == "export":
        fmt = args.get("format")
        if fmt not in ("perfetto", "csv", "png"):
            raise ControlError("EINVAL", "export needs format perfetto|csv|png")
        if "path" in args:
            raise ControlError("EINVAL", "the hypervisor writes no file by name: send the "
                                         "open output file with the request")
        out = _output_file(session)
        events = trace.snapshot()
        try:
            if fmt == "png":
                with os.fdopen(os.dup(out), "wb") as binary:
                    trace_export.plot(events, binary)
            else:
                with os.fdopen(os.dup(out), "w") as text:
                    if fmt == "perfetto":
                        text.write(trace_export.dumps_perfetto(events))
                    else:
                        trace_export.to_csv(events, text)
        except trace_export.PlotUnavailableError as e:
            raise ControlError("ENOSYS", str(e)) from None
        except OSError as e:
            raise ControlError("EIO", f"cannot write the trace: {e.strerror}") from None
        return {"events": len(events)}
    else:
        raise ControlError("EINVAL", "'action' must be start, stop or export")
    return None


def _output_file(session: Session) -> int:
    """The one file descriptor sent with the request: a regular file open for writing."""
    if len(session.received_fds) != 1:
        raise ControlError("EINVAL", "send exactly one file descriptor, the output file, "
                                     "with the request")
    fd = session.received_fds[0]
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise ControlError("EINVAL", "the output must be a regular file")
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
        raise ControlError("EBADF", "the output file is not open for writing")
    return fd


def _pools(server: ControlServer) -> CpuPools:
    _scheduling(server)
    assert server.manager.pools is not None
    return server.manager.pools


def _cpus_arg(args: dict[str, Any]) -> list[int]:
    cpus = args.get("cpus")
    if not isinstance(cpus, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in cpus):
        raise ControlError("EINVAL", "'cpus' must be a list of CPU numbers")
    return cpus


def _pool_name(args: dict[str, Any]) -> str:
    name = args.get("pool")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ControlError("EINVAL", "'pool' must be a cpupool name")
    return name


def _cpupool(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """cpupool-list / -create / -destroy / -cpu-add / -cpu-remove / -migrate."""
    pools = _pools(server)
    action = args.get("action")
    if action == "list":
        return pools.listing()
    name = _pool_name(args)
    if action == "create":
        sched = args.get("sched", pools.get(POOL0).sched)
        if not isinstance(sched, str):
            raise ControlError("EINVAL", "'sched' must be a scheduler name")
        pools.create(name, sched, _cpus_arg(args))
    elif action == "destroy":
        pools.destroy(name)
    elif action == "cpu_add":
        pools.cpu_add(name, _cpus_arg(args))
    elif action == "cpu_remove":
        pools.cpu_remove(name, _cpus_arg(args))
    elif action == "migrate":
        pools.migrate(_guest(server, args), name)
    else:
        raise ControlError("EINVAL", "'action' must be list, create, destroy, cpu_add, "
                                     "cpu_remove or migrate")
    return None


OPS: dict[str, Handler] = {
    "hello": _hello, "create": _create, "destroy": _destroy, "pause": _pause,
    "unpause": _unpause, "shutdown": _shutdown, "wait": _wait, "list": _list,
    "generation": _generation,
    "lookup": _lookup, "rename": _rename, "vcpu_list": _vcpu_list, "mem_max": _mem_max,
    "mem_set": _mem_set,
    "dmesg": _dmesg, "info": _info, "param": _param, "evtchn_bind": _evtchn_bind,
    "evtchn_notify": _evtchn_notify, "evtchn_unbind": _evtchn_unbind,
    "serial_connect": _serial_connect,
    "foreign_map": page_ops.foreign_map, "foreign_unmap": page_ops.foreign_unmap,
    "grant_map": page_ops.grant_map, "grant_unmap": page_ops.grant_unmap,
    "sched_get": _sched_get, "sched_set": _sched_set, "trace": _trace, "vcpu_pin": _vcpu_pin,
    "cpupool": _cpupool,
    **argo_ops.OPS, **grant_copy_ops.OPS, **device_ops.OPS, **config_ops.OPS,
}

# What a service connection may do: look domains up, read HVM params, serve
# their event channels and map their pages -- nothing that changes a domain.
SERVICE_OPS = frozenset({
    "hello", "list", "generation", "lookup", "param", "evtchn_bind", "evtchn_notify",
    "evtchn_unbind", "serial_connect", "grant_map", "grant_unmap", "foreign_map", "foreign_unmap",
    "copy_buffer", "copy_buffer_free", "grant_copy",
})


class ControlServer:
    def __init__(self, hv: Hypervisor, manager: DomainManager, path: Path) -> None:
        self.hv = hv
        self.manager = manager
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old)
        self._sock.listen(16)
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="control-accept",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def attach_service(self, name: str) -> socket.socket:
        """A service connection: serve one end here, return the other for the child
        (pass it with ``pass_fds`` and name it in ``PYXEN_CONTROL_FD``; close it here
        once the child has it)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        threading.Thread(target=self._serve, args=(mine, Session(Role.SERVICE, name)),
                         name=f"control-{name}", daemon=True).start()
        return theirs

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not self._connections.acquire(blocking=False):
                conn.close()  # too many clients: refuse rather than queue without bound
                continue
            threading.Thread(target=self._serve_peer, args=(conn,), name="control-conn",
                             daemon=True).start()

    def _serve_peer(self, conn: socket.socket) -> None:
        """A connection to control.sock: a toolstack client, if its uid may be one."""
        try:
            try:
                uid = peer_cred(conn).uid
            except OSError:
                uid = -1
            if uid not in (0, os.geteuid()):
                self._refuse(conn, f"uid {uid} may not use this hypervisor (only root and "
                                   f"uid {os.geteuid()})")
                return
            self._serve(conn, Session())
        finally:
            self._connections.release()

    @staticmethod
    def _refuse(conn: socket.socket, message: str) -> None:
        """One EACCES reply, then close.  What the peer sent is drained first (up to a
        frame's worth, for at most REFUSE_DRAIN seconds): closing a Unix socket
        with unread data resets it, and the peer would see ECONNRESET, not why."""
        with conn, contextlib.suppress(OSError):
            send(conn, {"v": PROTOCOL_VERSION, "id": None, "ok": False,
                        "error": {"code": "EACCES", "message": message}})
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(REFUSE_DRAIN)
            left = MAX_MESSAGE + 4
            while left > 0 and (chunk := conn.recv(min(left, 65536))):
                left -= len(chunk)

    def _serve(self, conn: socket.socket, session: Session) -> None:
        try:
            with conn:
                while True:
                    try:
                        request, fds = receive(conn)
                    except RequestError as e:
                        reply: dict[str, Any] = {
                            "v": PROTOCOL_VERSION, "id": None, "ok": False,
                            "error": {"code": "EINVAL", "message": e.message}}
                        out_fds: list[int] = []
                    except (EOFError, ProtocolError, OSError):
                        return
                    else:
                        session.received_fds = fds
                        try:
                            reply, out_fds = self.handle(request, session)
                        finally:
                            session.received_fds = []
                            for fd in fds:
                                os.close(fd)
                    try:
                        try:
                            send(conn, reply, out_fds, limit=MAX_REPLY)
                        except ProtocolError as e:  # a result too large for one reply
                            send(conn, {"v": PROTOCOL_VERSION, "id": reply.get("id"),
                                        "ok": False, "error": {"code": "E2BIG",
                                                               "message": str(e)}})
                    except OSError:
                        return  # the client left; the operation itself is complete
        finally:
            self._release(session)

    def _release(self, session: Session) -> None:
        """What a closed /dev/xen/evtchn and gntdev would release, and the
        connection's domain 0 Argo rings."""
        for local in session.ports:
            with contextlib.suppress(HypercallError):
                self.hv.control_ports.unbind(local)
        for mapping in session.mappings.values():
            try:
                page_ops.release(mapping)
            except Exception:
                self.hv.console.log(f"control: pyxen bug releasing a page mapping:\n"
                                    f"{traceback.format_exc()}")
        session.mappings.clear()
        try:
            argo_ops.release(self, session)
        except Exception:
            self.hv.console.log(f"control: pyxen bug releasing Argo rings:\n"
                                f"{traceback.format_exc()}")
        grant_copy_ops.release(session)

    def handle(self, request: dict[str, Any], session: Session | None = None
               ) -> tuple[dict[str, Any], list[int]]:
        session = session or Session()
        req_id = request.get("id")
        if not isinstance(req_id, int) or isinstance(req_id, bool):
            req_id = None
        reply: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": req_id}
        try:
            if request.get("v") != PROTOCOL_VERSION:
                raise ControlError("EPROTO", f"protocol version {request.get('v')!r} is not "
                                             f"supported (this one speaks {PROTOCOL_VERSION})")
            op = request.get("op")
            handler = OPS.get(op) if isinstance(op, str) else None
            if handler is None:
                raise ControlError("ENOSYS", f"unknown operation {op!r}")
            if session.role is Role.SERVICE and op not in SERVICE_OPS:
                raise ControlError("EPERM", f"'{op}' is not an operation for a service "
                                            f"({session.name})")
            args = request.get("args", {})
            if not isinstance(args, dict):
                raise ControlError("EINVAL", "'args' must be an object")
            result = handler(self, session, args)
            reply["ok"] = True
            if isinstance(result, WithFds):
                reply["result"] = result.result
                return reply, result.fds
            reply["result"] = result
        except ControlError as e:
            reply["ok"] = False
            reply["error"] = {"code": e.code, "message": e.message}
        except Exception:
            self.hv.console.log(f"control: pyxen bug handling {request.get('op')!r}:\n"
                                f"{traceback.format_exc()}")
            reply["ok"] = False
            reply["error"] = {"code": "EIO", "message": "internal error (see the hypervisor log)"}
        return reply, []
