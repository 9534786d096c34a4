"""event_channel_op (hypercall 32): the 2-level and FIFO event channel ABIs (§6.1).

Each sub-op copies its argument in, acts under the hypervisor's event lock
(see ``pyxen.hv.event_channel``) and copies results out.  The FIFO sub-ops
(init_control, expand_array, set_priority) are ``pyxen.hv.event_fifo``'s;
as in Xen, init_control writes link_bits back only on success, and a
failing copy-out leaves the FIFO ABI switched on.  PIRQs do not exist for a
PVH domU here (bind_pirq: -ENOSYS, logged).
"""

from __future__ import annotations

import ctypes

from pyxen.abi import event_channel as ec
from pyxen.abi.errno import XenErrno
from pyxen.abi.event_channel import EVTCHN_FIFO_LINK_BITS, EvtchnOp, EvtchnStat
from pyxen.abi.xen import DOMID_SELF
from pyxen.hv import event_channel as ev
from pyxen.hv import event_fifo as fifo
from pyxen.hv.dispatch import Call, report_missing_subop, signed32
from pyxen.hv.domain import Domain
from pyxen.hv.errors import HypercallError
from pyxen.hv.hypercalls.domids import target_domain
from pyxen.memory import GuestFault


def do_event_channel_op(call: Call, cmd: int, arg: int, *_: int) -> int:
    cmd = signed32(cmd)
    handler = _HANDLERS.get(EvtchnOp(cmd)) if cmd in _HANDLERS else None
    if handler is not None:
        handler(call, arg)
        return 0
    # Xen copies every argument in before acting on it: a bad pointer is -EFAULT.
    if cmd == EvtchnOp.bind_pirq:
        call.guest.read_struct(arg, ec.evtchn_bind_pirq)
        return report_missing_subop(call, "event_channel_op", cmd, "bind_pirq")
    return -XenErrno.ENOSYS


def _alloc_unbound(call: Call, arg: int) -> None:
    a = call.guest.read_struct(arg, ec.evtchn_alloc_unbound)
    d = target_domain(call, a.dom)
    remote = call.domain.domid if a.remote_dom == DOMID_SELF else int(a.remote_dom)
    with call.domain.hv.event_lock:
        a.port = ev.alloc_unbound(d, remote)
        _write_or_close(call, arg, a, a.port, d)


def _bind_interdomain(call: Call, arg: int) -> None:
    a = call.guest.read_struct(arg, ec.evtchn_bind_interdomain)
    me = call.domain
    hv = me.hv
    rdom = me.domid if a.remote_dom == DOMID_SELF else int(a.remote_dom)
    if not hv.domain_exists(rdom):
        raise HypercallError(XenErrno.ESRCH)
    with hv.event_lock:
        a.local_port = ev.bind_interdomain(me, hv.domains.get(rdom), int(a.remote_port))
        _write_or_close(call, arg, a, a.local_port)


def _bind_virq(call: Call, arg: int) -> None:
    a = call.guest.read_struct(arg, ec.evtchn_bind_virq)
    with call.domain.hv.event_lock:
        a.port = ev.bind_virq(call.domain, signed32(a.virq), signed32(a.vcpu))
        _write_or_close(call, arg, a, a.port)


def _bind_ipi(call: Call, arg: int) -> None:
    a = call.guest.read_struct(arg, ec.evtchn_bind_ipi)
    with call.domain.hv.event_lock:
        a.port = ev.bind_ipi(call.domain, signed32(a.vcpu))
        _write_or_close(call, arg, a, a.port)


def _write_or_close(call: Call, arg: int, value: ctypes.Structure, port: int,
                    domain: Domain | None = None) -> None:
    """Copy the result out; if that faults, undo the binding (event lock held)."""
    d = domain or call.domain
    try:
        call.guest.write_struct(arg, value)
    except GuestFault:
        ev.close(d, port, d.hv.domains)
        raise


def _close(call: Call, arg: int) -> None:
    port = call.guest.read_struct(arg, ec.evtchn_close).port
    with call.domain.hv.event_lock:
        ev.close(call.domain, int(port), call.domain.hv.domains)


def _send(call: Call, arg: int) -> None:
    port = call.guest.read_struct(arg, ec.evtchn_send).port
    with call.domain.hv.event_lock:
        ev.send(call.domain, int(port), call.domain.hv.domains)


def _status(call: Call, arg: int) -> None:
    a = call.guest.read_struct(arg, ec.evtchn_status)
    d = target_domain(call, a.dom)
    with call.domain.hv.event_lock:
        ch = d.events.get(int(a.port))
        a.status = ch.state
        a.vcpu = ch.notify_vcpu
        a.u.interdomain.port = 0
        a.u.interdomain.dom = 0
        if ch.state == EvtchnStat.unbound:
            a.u.unbound.dom = ch.remote_domid
        elif ch.state == EvtchnStat.interdomain:
            a.u.interdomain.dom = ch.remote_domid
            a.u.interdomain.port = ch.remote_port
        elif ch.state == EvtchnStat.virq:
            a.u.virq = ch.virq
    call.guest.write_struct(arg, a)


def _bind_vcpu(call: Call, arg: int) -> None:
    a = call.guest.read_struct(arg, ec.evtchn_bind_vcpu)
    with call.domain.hv.event_lock:
        ev.bind_vcpu(call.domain, int(a.port), int(a.vcpu))


def _unmask(call: Call, arg: int) -> None:
    port = call.guest.read_struct(arg, ec.evtchn_unmask).port
    with call.domain.hv.event_lock:
        ev.unmask(call.domain, int(port))


def _reset(call: Call, arg: int) -> None:
    dom = call.guest.read_struct(arg, ec.evtchn_reset).dom
    d = target_domain(call, dom)
    if d is not call.domain and d.pause_count == 0:
        raise HypercallError(XenErrno.EINVAL)
    with call.domain.hv.event_lock:
        ev.reset(d, d.hv.domains)


def _init_control(call: Call, arg: int) -> None:
    a = call.guest.read_struct(arg, ec.evtchn_init_control)
    fifo.init_control(call.domain, int(a.vcpu), int(a.control_gfn), int(a.offset))
    a.link_bits = EVTCHN_FIFO_LINK_BITS
    call.guest.write_struct(arg, a)


def _expand_array(call: Call, arg: int) -> None:
    a = call.guest.read_struct(arg, ec.evtchn_expand_array)
    fifo.expand_array(call.domain, int(a.array_gfn))


def _set_priority(call: Call, arg: int) -> None:
    a = call.guest.read_struct(arg, ec.evtchn_set_priority)
    with call.domain.hv.event_lock:
        ev.set_priority(call.domain, int(a.port), int(a.priority))


_HANDLERS = {
    EvtchnOp.alloc_unbound: _alloc_unbound,
    EvtchnOp.bind_interdomain: _bind_interdomain,
    EvtchnOp.bind_virq: _bind_virq,
    EvtchnOp.bind_ipi: _bind_ipi,
    EvtchnOp.close: _close,
    EvtchnOp.send: _send,
    EvtchnOp.status: _status,
    EvtchnOp.bind_vcpu: _bind_vcpu,
    EvtchnOp.unmask: _unmask,
    EvtchnOp.reset: _reset,
    EvtchnOp.init_control: _init_control,
    EvtchnOp.expand_array: _expand_array,
    EvtchnOp.set_priority: _set_priority,
}
