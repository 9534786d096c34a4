"""Event channels: ports, bindings, and delivery through the domain's ABI (§6).

Design:
- Each domain has an ``EventChannels`` table: a list of ``Channel`` records
  indexed by port.  Port 0 is reserved at creation.  The table grows in
  buckets of 64 ports, as Xen's does, which decides which ports are
  "valid" (a free port inside a bucket reports status closed; one beyond
  the last bucket is -EINVAL).  New ports take the lowest free number up
  to ``max_port`` (xl's ``max_event_channels``, default 1023) and the ABI
  limit (4096, or 1024 for the compat layout); none left is -ENOSPC.
- Every binding change and every send runs under the hypervisor's single
  event lock (``Hypervisor.event_lock``).  One lock makes interdomain
  bind/close/send and domain teardown trivially consistent; the critical
  sections are a few dictionary operations and one atomic bit routine.
- What a port's pending/masked state is depends on the domain's event ABI,
  chosen per domain like Xen's ``evtchn_port_ops``: ``Domain.evtchn_ops``
  is a ``PortOps`` record of plain functions (set_pending, clear_pending,
  unmask, is_pending, is_masked, set_priority); ``EventChannels.limit``
  gives the ABI's port range.  Every domain
  starts with ``TWO_LEVEL`` (below); EVTCHNOP_init_control switches it to
  ``pyxen.hv.event_fifo.FIFO_OPS`` (and ``events.fifo`` holds the FIFO
  state); EVTCHNOP_reset and domain teardown switch it back
  (``reset``/``destroy``).  Hot callers fetch the function from the record
  (one attribute lookup more than a direct call); the module-level
  ``set_pending``/``is_pending``/... dispatch for everyone else.
- 2-level delivery follows Xen's rule with the atomic routines of
  ``pyxen.hv.atomic`` on the guest's shared_info page, then tells the
  target vCPU (``VcpuRunner.raise_upcall``) when evtchn_upcall_pending
  went from 0 to 1, and wakes vCPUs polling the port.

Invariants: a channel's ``remote_port`` names a channel of ``remote_domid``
in state INTERDOMAIN pointing back (both ends change together, under the
lock); ``virq_ports[vcpu][virq]`` is the port bound to that VIRQ or 0; a
dying domain has no channels and accepts no deliveries;
``domain.evtchn_ops`` is FIFO_OPS exactly while ``events.fifo`` is set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyxen.abi.errno import XenErrno
from pyxen.abi.event_channel import (
    EVTCHN_FIFO_NR_CHANNELS,
    EVTCHN_FIFO_PRIORITY_DEFAULT,
    EvtchnStat,
)
from pyxen.abi.xen import CONTROL_DOMID, NR_VIRQS, PER_VCPU_VIRQS
from pyxen.hv import atomic
from pyxen.hv.errors import HypercallError

if TYPE_CHECKING:
    from pyxen.hv.domain import Domain
    from pyxen.hv.event_fifo import EventFifo

DEFAULT_MAX_EVTCHN_PORT = 1023
BUCKET_PORTS = 64


def virq_is_global(virq: int) -> bool:
    return virq not in PER_VCPU_VIRQS


@dataclass(slots=True)
class Channel:
    state: EvtchnStat = EvtchnStat.closed
    notify_vcpu: int = 0
    remote_domid: int = 0  # unbound: who may bind; interdomain: the peer
    remote_port: int = 0
    virq: int = 0
    reserved: bool = False
    priority: int = EVTCHN_FIFO_PRIORITY_DEFAULT  # FIFO only (Xen resets it on bind)


@dataclass(frozen=True, slots=True)
class PortOps:
    """One event ABI's port operations (Xen's ``struct evtchn_port_ops``).

    All are called with the event lock held, on valid ports (except
    is_pending/is_masked, which SCHEDOP_poll also asks about ports beyond
    the table).  ``set_priority`` is None for an ABI without priorities."""

    name: str
    set_pending: Callable[[Domain, int, int], None]  # (domain, vcpu_id, port)
    clear_pending: Callable[[Domain, int], None]
    unmask: Callable[[Domain, int], None]
    is_pending: Callable[[Domain, int], bool]
    is_masked: Callable[[Domain, int], bool]
    set_priority: Callable[[Domain, int, int], None] | None


class EventChannels:
    """One domain's ports (the event lock protects every field)."""

    def __init__(self, domain: Domain, max_port: int = DEFAULT_MAX_EVTCHN_PORT) -> None:
        self.domain = domain
        self.max_port = max_port
        self.channels: list[Channel] = [Channel() for _ in range(BUCKET_PORTS)]
        self.channels[0].reserved = True
        self.virq_ports = [[0] * NR_VIRQS for _ in range(domain.max_vcpus)]
        self.fifo: EventFifo | None = None  # the FIFO ABI's state while it is in use

    def limit(self) -> int:
        """Ports the ABI in use can address: 4096 (1024 compat), 2^17 under FIFO."""
        if self.fifo is not None:
            return EVTCHN_FIFO_NR_CHANNELS
        return self.domain.layout.nr_ports

    def valid(self, port: int) -> bool:
        return 0 <= port < len(self.channels) and port < self.limit()

    def get(self, port: int) -> Channel:
        """The channel of a valid port (every send looks one up: kept to one call)."""
        channels = self.channels
        if 0 <= port < len(channels) and port < self.limit():
            return channels[port]
        raise HypercallError(XenErrno.EINVAL)

    def allocate(self) -> int:
        """The lowest free port (Xen's get_free_port); -ENOSPC when none is left.

        The table may be longer than the ABI allows (buckets added under FIFO
        stay after a reset to 2-level, as in Xen): ports past the limit are
        never handed out."""
        end = min(self.limit(), self.max_port + 1)
        for port, ch in enumerate(self.channels):
            if port >= end:
                break
            if ch.state == EvtchnStat.closed and not ch.reserved:
                return port
        port = len(self.channels)
        if port >= end:
            raise HypercallError(XenErrno.ENOSPC)
        self.channels.extend(Channel() for _ in range(BUCKET_PORTS))
        return port

    def in_use(self) -> list[int]:
        return [p for p, ch in enumerate(self.channels) if ch.state != EvtchnStat.closed]


# -- the 2-level ABI (shared_info bitmaps) ---------------------------------------


def _2l_set_pending(domain: Domain, vcpu_id: int, port: int) -> None:
    if domain.dying:
        return
    layout = domain.layout
    base = domain.shared_info_host
    vcpu = domain.vcpus[vcpu_id]
    info = vcpu.vcpu_info_host
    result = atomic.set_pending(base + layout.pending, base + layout.mask,
                                info + layout.selector, info, port, port // layout.word_bits)
    if result == atomic.RAISE_UPCALL:
        vcpu.raise_upcall()
    if result != atomic.NO_CHANGE and domain.pollers:
        wake_pollers(domain, port)


def _2l_clear_pending(domain: Domain, port: int) -> None:
    atomic.test_and_clear_bit(domain.shared_info_host + domain.layout.pending, port)


def _2l_is_pending(domain: Domain, port: int) -> bool:
    if port >= domain.layout.nr_ports:
        return False
    view = domain.shared_info_view
    byte = view[domain.layout.pending + (port >> 3)]
    return bool(byte >> (port & 7) & 1)


def _2l_is_masked(domain: Domain, port: int) -> bool:
    if port >= domain.layout.nr_ports:
        return True
    view = domain.shared_info_view
    byte = view[domain.layout.mask + (port >> 3)]
    return bool(byte >> (port & 7) & 1)


def _2l_unmask(domain: Domain, port: int) -> None:
    layout = domain.layout
    base = domain.shared_info_host
    vcpu = domain.vcpus[domain.events.channels[port].notify_vcpu]
    info = vcpu.vcpu_info_host
    result = atomic.unmask(base + layout.pending, base + layout.mask,
                           info + layout.selector, info, port, port // layout.word_bits)
    if result == atomic.RAISE_UPCALL:
        vcpu.raise_upcall()


TWO_LEVEL = PortOps(
    name="2-level",
    set_pending=_2l_set_pending,
    clear_pending=_2l_clear_pending,
    unmask=_2l_unmask,
    is_pending=_2l_is_pending,
    is_masked=_2l_is_masked,
    set_priority=None,  # Xen: -ENOSYS
)


# -- delivery, whatever the ABI --------------------------------------------------


def wake_pollers(domain: Domain, port: int) -> None:
    """Xen's evtchn_check_pollers: ``port`` just became pending."""
    for poller in list(domain.pollers):
        if poller.poll_port == -1 or poller.poll_port == port:
            poller.wake()


def set_pending(domain: Domain, vcpu_id: int, port: int) -> None:
    """Mark ``port`` pending for ``vcpu_id`` of ``domain`` (event lock held)."""
    domain.evtchn_ops.set_pending(domain, vcpu_id, port)


def clear_pending(domain: Domain, port: int) -> None:
    domain.evtchn_ops.clear_pending(domain, port)


def is_pending(domain: Domain, port: int) -> bool:
    """Pending in the ABI in use (False for a port it cannot address)."""
    return domain.evtchn_ops.is_pending(domain, port)


def is_masked(domain: Domain, port: int) -> bool:
    """Masked in the ABI in use (True for a port it cannot address)."""
    return domain.evtchn_ops.is_masked(domain, port)


def unmask(domain: Domain, port: int) -> None:
    """EVTCHNOP_unmask: -EINVAL for an invalid port, else the ABI re-delivers."""
    domain.events.get(port)
    domain.evtchn_ops.unmask(domain, port)


def set_priority(domain: Domain, port: int, priority: int) -> None:
    """EVTCHNOP_set_priority: -EINVAL for an invalid port, -ENOSYS under 2-level."""
    domain.events.get(port)
    setter = domain.evtchn_ops.set_priority
    if setter is None:
        raise HypercallError(XenErrno.ENOSYS)
    setter(domain, port, priority)


def send_vcpu_virq(domain: Domain, vcpu_id: int, virq: int) -> None:
    """Xen's send_guest_vcpu_virq: deliver a per-vCPU VIRQ if it is bound."""
    with domain.hv.event_lock:
        if domain.dying:
            return
        port = domain.events.virq_ports[vcpu_id][virq]
        if port:
            domain.evtchn_ops.set_pending(domain, vcpu_id, port)


def send_global_virq(domain: Domain, virq: int) -> None:
    """Xen's send_guest_global_virq: the binding lives on vCPU 0."""
    with domain.hv.event_lock:
        if domain.dying:
            return
        port = domain.events.virq_ports[0][virq]
        if port:
            domain.evtchn_ops.set_pending(domain, domain.events.channels[port].notify_vcpu, port)


# -- operations (callers hold the event lock) ------------------------------------


def _check_vcpu(domain: Domain, vcpu_id: int) -> None:
    if not 0 <= vcpu_id < len(domain.vcpus):
        raise HypercallError(XenErrno.ENOENT)


def alloc_unbound(domain: Domain, remote_domid: int) -> int:
    events = domain.events
    port = events.allocate()
    ch = events.channels[port]
    ch.state = EvtchnStat.unbound
    ch.remote_domid = remote_domid
    ch.notify_vcpu = 0
    return port


def bind_interdomain(local: Domain, remote: Domain | None, remote_port: int) -> int:
    """Bind a new local port to ``remote``'s unbound port offered to ``local``."""
    lport = local.events.allocate()
    if remote is None or remote.dying or not remote.events.valid(remote_port):
        raise HypercallError(XenErrno.EINVAL)
    rch = remote.events.channels[remote_port]
    if rch.state != EvtchnStat.unbound or rch.remote_domid != local.domid:
        raise HypercallError(XenErrno.EINVAL)
    lch = local.events.channels[lport]
    lch.state = EvtchnStat.interdomain
    lch.remote_domid, lch.remote_port, lch.notify_vcpu = remote.domid, remote_port, 0
    rch.state = EvtchnStat.interdomain
    rch.remote_domid, rch.remote_port = local.domid, lport
    # Xen marks the new local port pending once: notifications sent to the
    # remote's unbound port before the bind would otherwise be lost.
    local.evtchn_ops.set_pending(local, 0, lport)
    return lport


def bind_virq(domain: Domain, virq: int, vcpu_id: int) -> int:
    if not 0 <= virq < NR_VIRQS:
        raise HypercallError(XenErrno.EINVAL)
    if virq_is_global(virq) and vcpu_id != 0:
        raise HypercallError(XenErrno.EINVAL)
    _check_vcpu(domain, vcpu_id)
    events = domain.events
    if events.virq_ports[vcpu_id][virq]:
        raise HypercallError(XenErrno.EEXIST)
    port = events.allocate()
    ch = events.channels[port]
    ch.state, ch.virq, ch.notify_vcpu = EvtchnStat.virq, virq, vcpu_id
    events.virq_ports[vcpu_id][virq] = port
    return port


def bind_ipi(domain: Domain, vcpu_id: int) -> int:
    _check_vcpu(domain, vcpu_id)
    port = domain.events.allocate()
    ch = domain.events.channels[port]
    ch.state, ch.notify_vcpu = EvtchnStat.ipi, vcpu_id
    return port


def close(domain: Domain, port: int, hv_domains: dict[int, Domain]) -> None:
    ch = domain.events.get(port)
    if ch.state == EvtchnStat.closed:
        raise HypercallError(XenErrno.EINVAL)
    if ch.state == EvtchnStat.virq:
        for row in domain.events.virq_ports:
            if row[ch.virq] == port:
                row[ch.virq] = 0
    elif ch.state == EvtchnStat.interdomain:
        remote = hv_domains.get(ch.remote_domid)
        if ch.remote_domid == CONTROL_DOMID:
            domain.hv.control_ports.peer_closed(ch.remote_port)
        elif remote is not None and not remote.dying:
            rch = remote.events.channels[ch.remote_port]
            rch.state = EvtchnStat.unbound
            rch.remote_domid = domain.domid
            rch.remote_port = 0
    domain.evtchn_ops.clear_pending(domain, port)
    domain.events.channels[port] = Channel()


def close_all(domain: Domain, hv_domains: dict[int, Domain]) -> None:
    """Close every port."""
    for port in domain.events.in_use():
        close(domain, port, hv_domains)


def reset(domain: Domain, hv_domains: dict[int, Domain]) -> None:
    """EVTCHNOP_reset: close every port; a FIFO domain goes back to 2-level."""
    close_all(domain, hv_domains)
    fifo = domain.events.fifo
    if fifo is not None:
        domain.events.fifo = None
        domain.evtchn_ops = TWO_LEVEL
        fifo.release(domain)


def destroy(domain: Domain, hv_domains: dict[int, Domain]) -> None:
    """Domain teardown: every port closed, the FIFO state and its page holds dropped."""
    reset(domain, hv_domains)


def send(domain: Domain, port: int, hv_domains: dict[int, Domain]) -> None:
    ch = domain.events.get(port)
    if ch.state == EvtchnStat.interdomain:
        remote = hv_domains.get(ch.remote_domid)
        if ch.remote_domid == CONTROL_DOMID:
            domain.hv.control_ports.deliver(ch.remote_port)
        elif remote is not None and not remote.dying:
            rch = remote.events.channels[ch.remote_port]
            remote.evtchn_ops.set_pending(remote, rch.notify_vcpu, ch.remote_port)
    elif ch.state == EvtchnStat.ipi:
        domain.evtchn_ops.set_pending(domain, ch.notify_vcpu, port)
    elif ch.state != EvtchnStat.unbound:  # an unbound port drops the send silently
        raise HypercallError(XenErrno.EINVAL)


def bind_vcpu(domain: Domain, port: int, vcpu_id: int) -> None:
    _check_vcpu(domain, vcpu_id)
    ch = domain.events.get(port)
    rebindable = (EvtchnStat.unbound, EvtchnStat.interdomain)
    if ch.state in rebindable or (ch.state == EvtchnStat.virq and virq_is_global(ch.virq)):
        ch.notify_vcpu = vcpu_id
    else:
        raise HypercallError(XenErrno.EINVAL)
