"""Event-channel bookkeeping on real (not started) domains: Xen 4.12's port rules."""

from __future__ import annotations

import pytest

from integration.domains import Host
from pyxen.abi.errno import XenErrno
from pyxen.abi.event_channel import EvtchnStat
from pyxen.abi.xen import Virq
from pyxen.hv import event_channel as ev
from pyxen.hv.builder import CONSOLE_EVTCHN, STORE_EVTCHN
from pyxen.hv.domain import Domain
from pyxen.hv.errors import HypercallError


def _errno(fn: object, *args: object) -> int:
    assert callable(fn)
    with pytest.raises(HypercallError) as info:
        fn(*args)
    return info.value.errno


def test_builder_offers_xenstore_and_console_ports_to_dom0(host: Host) -> None:
    d = host.build("hello")
    for port in (STORE_EVTCHN, CONSOLE_EVTCHN):
        ch = d.events.channels[port]
        assert (ch.state, ch.remote_domid) == (EvtchnStat.unbound, 0)
    assert d.events.channels[0].reserved


def test_port_limit_and_reuse(host: Host) -> None:
    from integration.domains import GUEST_BUILD
    from pyxen.hv.builder import BuildSpec, build_domain

    d = build_domain(host.hv, BuildSpec(name="small", kernel=GUEST_BUILD / "hello.elf",
                                        memory_mib=8, maxmem_mib=8, max_event_channels=200))
    with host.hv.event_lock:
        ports = [ev.alloc_unbound(d, d.domid) for _ in range(198)]
        assert ports == list(range(3, 201))
        assert _errno(ev.alloc_unbound, d, d.domid) == XenErrno.ENOSPC
        ev.close(d, 50, host.hv.domains)
        assert ev.alloc_unbound(d, d.domid) == 50  # lowest free first
        # Ports in an allocated bucket are valid (closed), beyond it -EINVAL.
        assert d.events.valid(255) and not d.events.valid(256)
        assert _errno(ev.close, d, 256, host.hv.domains) == XenErrno.EINVAL


def _pair(host: Host) -> tuple[Domain, Domain, int, int]:
    a = host.build("hello")
    b = host.build("hello")
    with host.hv.event_lock:
        pa = ev.alloc_unbound(a, b.domid)
        pb = ev.bind_interdomain(b, a, pa)
    return a, b, pa, pb


def test_interdomain_bind_send_close(host: Host) -> None:
    a, b, pa, pb = _pair(host)
    assert ev.is_pending(b, pb)  # Xen marks the new local port pending once
    with host.hv.event_lock:
        ev.clear_pending(b, pb)
        ev.send(a, pa, host.hv.domains)
        assert ev.is_pending(b, pb) and not ev.is_pending(a, pa)
        ev.send(b, pb, host.hv.domains)
        assert ev.is_pending(a, pa)
        # Closing one end leaves the other unbound, offered to the closer.
        ev.close(b, pb, host.hv.domains)
        ch = a.events.channels[pa]
        assert (ch.state, ch.remote_domid) == (EvtchnStat.unbound, b.domid)
        assert not ev.is_pending(b, pb)
        ev.send(a, pa, host.hv.domains)  # unbound: dropped, no error


def test_bind_interdomain_refusals(host: Host) -> None:
    a = host.build("hello")
    b = host.build("hello")
    c = host.build("hello")
    with host.hv.event_lock:
        pa = ev.alloc_unbound(a, b.domid)
        assert _errno(ev.bind_interdomain, c, a, pa) == XenErrno.EINVAL  # offered to b
        assert _errno(ev.bind_interdomain, b, a, 4000) == XenErrno.EINVAL
        assert _errno(ev.bind_interdomain, b, None, pa) == XenErrno.EINVAL
        ev.bind_interdomain(b, a, pa)
        assert _errno(ev.bind_interdomain, b, a, pa) == XenErrno.EINVAL  # already bound


def test_destroying_a_domain_unbinds_its_peers(host: Host) -> None:
    a, b, pa, _pb = _pair(host)
    b.destroy()
    ch = a.events.channels[pa]
    assert (ch.state, ch.remote_domid) == (EvtchnStat.unbound, b.domid)
    with host.hv.event_lock:
        ev.send(a, pa, host.hv.domains)  # goes nowhere, harms nothing


def test_virq_rules(host: Host) -> None:
    d = host.build("hello", vcpus=2)
    with host.hv.event_lock:
        port = ev.bind_virq(d, Virq.TIMER, 1)
        assert d.events.virq_ports[1][Virq.TIMER] == port
        assert _errno(ev.bind_virq, d, Virq.TIMER, 1) == XenErrno.EEXIST
        assert ev.bind_virq(d, Virq.TIMER, 0) != port  # per vCPU
        assert _errno(ev.bind_virq, d, Virq.DOM_EXC, 1) == XenErrno.EINVAL  # global: vCPU 0
        assert _errno(ev.bind_virq, d, 24, 0) == XenErrno.EINVAL
        assert _errno(ev.bind_virq, d, Virq.TIMER, 2) == XenErrno.ENOENT
        assert _errno(ev.bind_vcpu, d, port, 0) == XenErrno.EINVAL  # per-vCPU VIRQ
        g = ev.bind_virq(d, Virq.DOM_EXC, 0)
        ev.bind_vcpu(d, g, 1)
        assert d.events.channels[g].notify_vcpu == 1
        ev.close(d, port, host.hv.domains)
        assert d.events.virq_ports[1][Virq.TIMER] == 0


def test_dom_exc_reaches_the_registered_handler(host: Host) -> None:
    watcher = host.build("hello")
    other = host.build("hello")
    with host.hv.event_lock:
        port = ev.bind_virq(watcher, Virq.DOM_EXC, 0)
    host.hv.set_virq_handler(Virq.DOM_EXC, watcher)
    other.destroy()
    assert ev.is_pending(watcher, port)
