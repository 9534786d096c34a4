"""Event channels whose other end is domain 0: the hypervisor process and its services.

There is no dom0 guest: dom0's side of a channel (xenstored's, consoled's)
is a port in this table, and its "delivery" is a write to an eventfd that
the service holds (handed out through the control socket).  Binding takes
a guest port that is unbound and offered to domain 0 (as the builder
offers the xenstore and console ports) and makes both ends interdomain,
exactly as EVTCHNOP_bind_interdomain from a dom0 guest would; notifying
sets the guest's port pending.

All state is guarded by the hypervisor's event lock.  Invariant: a bound
entry's guest channel is INTERDOMAIN with remote (0, local port); when the
guest closes its end or is destroyed, the entry becomes unbound (its
eventfd stays open until the service unbinds, so the service's copy never
refers to a recycled descriptor).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyxen.abi.errno import XenErrno
from pyxen.abi.event_channel import EvtchnStat
from pyxen.abi.xen import CONTROL_DOMID
from pyxen.hv import event_channel
from pyxen.hv.errors import HypercallError

if TYPE_CHECKING:
    from pyxen.hv.hypervisor import Hypervisor



@dataclass
class ControlPort:
    domid: int  # the guest at the other end (or the one it was bound to)
    guest_port: int
    eventfd: int
    bound: bool = True


class ControlPorts:
    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self._ports: dict[int, ControlPort] = {}
        self._next = 1

    def bind(self, domid: int, guest_port: int) -> tuple[int, int]:
        """Bind to a guest's port offered to dom0; (local port, eventfd)."""
        hv = self.hv
        with hv.event_lock:
            guest = hv.domains.get(domid)
            if guest is None or guest.dying:
                raise HypercallError(XenErrno.ESRCH)
            if not guest.events.valid(guest_port):
                raise HypercallError(XenErrno.EINVAL)
            ch = guest.events.channels[guest_port]
            if ch.state != EvtchnStat.unbound or ch.remote_domid != CONTROL_DOMID:
                raise HypercallError(XenErrno.EINVAL)
            local = self._next
            self._next += 1
            fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self._ports[local] = ControlPort(domid, guest_port, fd)
            ch.state = EvtchnStat.interdomain
            ch.remote_domid, ch.remote_port = CONTROL_DOMID, local
            # As for any bind: the new local end starts pending, so nothing the
            # guest sent while the port was unbound is lost.
            os.eventfd_write(fd, 1)
            return local, fd

    def notify(self, local: int) -> None:
        """Send from dom0's end: the guest's port becomes pending."""
        with self.hv.event_lock:
            entry = self._get(local)
            if not entry.bound:
                return  # like a send on an unbound port: dropped
            guest = self.hv.domains.get(entry.domid)
            if guest is not None and not guest.dying:
                ch = guest.events.channels[entry.guest_port]
                event_channel.set_pending(guest, ch.notify_vcpu, entry.guest_port)

    def unbind(self, local: int) -> None:
        """Close dom0's end: the guest's port is unbound again, offered to dom0."""
        with self.hv.event_lock:
            entry = self._ports.pop(local, None)
            if entry is None:
                raise HypercallError(XenErrno.EINVAL)
            if entry.bound:
                guest = self.hv.domains.get(entry.domid)
                if guest is not None and not guest.dying:
                    ch = guest.events.channels[entry.guest_port]
                    ch.state = EvtchnStat.unbound
                    ch.remote_domid, ch.remote_port = CONTROL_DOMID, 0
            os.close(entry.eventfd)

    def deliver(self, local: int) -> None:
        """The guest sent on its end (event lock held)."""
        entry = self._ports.get(local)
        if entry is not None and entry.bound:
            os.eventfd_write(entry.eventfd, 1)

    def peer_closed(self, local: int) -> None:
        """The guest closed its end or is going away (event lock held)."""
        entry = self._ports.get(local)
        if entry is not None:
            entry.bound = False
            os.eventfd_write(entry.eventfd, 1)  # wake the service so it notices

    def _get(self, local: int) -> ControlPort:
        entry = self._ports.get(local)
        if entry is None:
            raise HypercallError(XenErrno.EINVAL)
        return entry

    def close(self) -> None:
        with self.hv.event_lock:
            for entry in self._ports.values():
                os.close(entry.eventfd)
            self._ports.clear()
