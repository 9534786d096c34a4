"""FIFO event channels: the guest programs on KVM, and the bookkeeping on real domains.

The ``fifo`` and ``fifohostile`` guests check the ABI from inside (Xen 4.12's
answers, queue order, delivery); the in-process tests below drive
``pyxen.hv.event_fifo`` on built (not started) domains and read the event
words and control blocks from guest memory, where the guest would see them.
"""

from __future__ import annotations

import re
import struct

import pytest

from integration.domains import GUEST_BUILD, Host
from pyxen.abi.errno import XenErrno
from pyxen.abi.event_channel import EVTCHN_FIFO_NR_CHANNELS
from pyxen.abi.xen import ShutdownReason
from pyxen.hv import event_channel as ev
from pyxen.hv import event_fifo as fifo
from pyxen.hv.builder import STORE_EVTCHN, BuildSpec, build_domain
from pyxen.hv.domain import Domain
from pyxen.hv.errors import HypercallError
from pyxen.memory import PAGE_SIZE, Gfn

from .test_guests import RunGuest, assert_result

TIMEOUT = 240
PENDING, MASKED, LINKED = 1 << 31, 1 << 30, 1 << 29
# Guest RAM frames a not-started hello domain leaves alone (8 MiB and up).
CB_GFN, ARRAY_GFN, ARRAY2_GFN = 0x800, 0x801, 0x802


def _info(domid: int, pattern: str, out: str) -> re.Match[str] | None:
    return re.search(rf"^\(d{domid}\) {pattern}", out, re.MULTILINE)


# -- the guest programs ------------------------------------------------------------


@pytest.mark.kvm
@pytest.mark.parametrize("vcpus", [1, 2])
def test_fifo_program(run_guest: RunGuest, vcpus: int) -> None:
    n = 10000 if vcpus == 2 else 2000
    status, out, err = run_guest("fifo", cmdline=f"n={n}", vcpus=vcpus, timeout=TIMEOUT)
    domid = assert_result("fifo", status, out, err)
    for label in ("ipi", "interdomain"):
        assert _info(domid, rf"fifo: {label} n={n} mean_rtt_us=\d+\.\d{{3}} "
                            r"rtt_median_ns=\d+ rtt_p99_ns=\d+$", out), out
    assert ("one vCPU" in out) == (vcpus == 1), out
    # It switches, resets to 2-level and switches again: logged once (a guest looping
    # init_control/reset must not flood the log).
    assert err.count("switched to the FIFO ABI") == 1, err


@pytest.mark.kvm
@pytest.mark.parametrize("pong_abi", ["fifo", "2l"])
def test_fifo_between_two_domains(host: Host, pong_abi: str) -> None:
    n = 10000 if pong_abi == "fifo" else 1000
    ping_id = host.hv.allocate_domid()
    pong_id = host.hv.allocate_domid()
    ping = host.build("fifo", f"role=ping peer={pong_id} n={n}", domid=ping_id)
    with host.hv.event_lock:
        port = ev.alloc_unbound(ping, pong_id)  # the harness offers PING's port to PONG
    pong = host.build("fifo", f"role=pong peer={ping_id} port={port} n={n} abi={pong_abi}",
                      domid=pong_id)
    ping.start()
    pong.start()
    reasons = host.wait_all([ping, pong], timeout=TIMEOUT)
    assert reasons == [ShutdownReason.poweroff] * 2, host.describe()
    for domid in (ping_id, pong_id):
        assert host.result(domid, "fifo") == "PASS", host.describe()
    assert _info(ping_id, rf"fifo: interdomain n={n} mean_rtt_us=", host.output()), host.describe()


@pytest.mark.kvm
def test_fifohostile_leaves_its_neighbour_alone(host: Host) -> None:
    good = host.build("fifo", "n=1000", vcpus=2)
    bad = host.build("fifohostile", vcpus=2)
    good.start()
    bad.start()
    reasons = host.wait_all([good, bad], timeout=TIMEOUT)
    assert reasons == [ShutdownReason.poweroff] * 2, host.describe()
    assert host.result(good.domid, "fifo") == "PASS", host.describe()
    assert host.result(bad.domid, "fifohostile") == "PASS", host.describe()
    assert "no concurrent scribbling" not in host.output()
    assert "pyxen bug" not in host.log.getvalue(), host.describe()


@pytest.mark.kvm
def test_fifohostile_one_vcpu(run_guest: RunGuest) -> None:
    status, out, err = run_guest("fifohostile", timeout=TIMEOUT)
    assert_result("fifohostile", status, out, err)


# -- bookkeeping on built, not started domains ------------------------------------------


def _errno(fn: object, *args: object) -> int:
    assert callable(fn)
    with pytest.raises(HypercallError) as info:
        fn(*args)
    return info.value.errno


def _u32(d: Domain, gfn: int, offset: int) -> int:
    found = d.memory.lookup(Gfn(gfn))
    assert found is not None
    view = d.memory.pool_view(found[0])
    try:
        return int(struct.unpack_from("<I", view, offset)[0])
    finally:
        view.release()


def _guest_writes_word(d: Domain, port: int, value: int) -> None:
    found = d.memory.lookup(Gfn(ARRAY_GFN))
    assert found is not None
    view = d.memory.pool_view(found[0])
    try:
        struct.pack_into("<I", view, 4 * port, value)
    finally:
        view.release()


def _word(d: Domain, port: int, gfn: int = ARRAY_GFN) -> int:
    return _u32(d, gfn, 4 * (port % 1024))


def _domain(host: Host, max_event_channels: int = 1023, vcpus: int = 1) -> Domain:
    return build_domain(host.hv, BuildSpec(
        name="fifo-book", kernel=GUEST_BUILD / "hello.elf", memory_mib=16, maxmem_mib=16,
        vcpus=vcpus, maxvcpus=vcpus, max_event_channels=max_event_channels))


def _switch(d: Domain) -> None:
    fifo.init_control(d, 0, CB_GFN, 64)
    fifo.expand_array(d, ARRAY_GFN)


def test_switch_keeps_2level_pending_and_reset_goes_back(host: Host) -> None:
    d = _domain(host)
    with host.hv.event_lock:
        pending = ev.bind_ipi(d, 0)
        idle = ev.bind_ipi(d, 0)
        ev.send(d, pending, host.hv.domains)
    assert d.evtchn_ops is ev.TWO_LEVEL
    fifo.init_control(d, 0, CB_GFN, 64)
    assert d.evtchn_ops is fifo.FIFO_OPS and d.events.limit() == EVTCHN_FIFO_NR_CHANNELS
    assert not ev.is_pending(d, pending)  # no event array yet: remembered, not visible
    fifo.expand_array(d, ARRAY_GFN)
    assert _word(d, pending) == PENDING | LINKED and _word(d, idle) == 0
    assert _u32(d, CB_GFN, 64) == 1 << 7  # READY, default priority
    assert _u32(d, CB_GFN, 64 + 8 + 4 * 7) == pending  # HEAD[7]
    assert ev.is_pending(d, pending) and not ev.is_masked(d, idle)
    page_pins = d.grants.page_pins
    assert len(page_pins) == 2
    with host.hv.event_lock:
        ev.reset(d, host.hv.domains)
    assert d.evtchn_ops is ev.TWO_LEVEL and d.events.fifo is None and not page_pins
    assert d.events.in_use() == []
    assert _errno(fifo.expand_array, d, ARRAY_GFN) == XenErrno.EOPNOTSUPP
    fifo.init_control(d, 0, CB_GFN, 0)  # a domain may switch again
    assert d.evtchn_ops is fifo.FIFO_OPS
    d.destroy()  # tears FIFO down with the domain
    assert not page_pins


def test_events_for_ports_beyond_the_array_wait_for_their_page(host: Host) -> None:
    d = _domain(host, max_event_channels=5000)
    with host.hv.event_lock:
        for _ in range(4093):  # 2-level stops at 4095
            ev.alloc_unbound(d, d.domid)
        assert _errno(ev.alloc_unbound, d, d.domid) == XenErrno.ENOSPC
    _switch(d)
    with host.hv.event_lock:
        high = ev.bind_ipi(d, 0)  # FIFO allows up to 2^17 - 1 (and max_event_channels)
        assert high == 4096
        ev.close(d, 1100, host.hv.domains)
        p = ev.bind_ipi(d, 0)
        assert p == 1100
        ev.send(d, p, host.hv.domains)
        ev.send(d, high, host.hv.domains)
        assert not ev.is_pending(d, p) and not ev.is_pending(d, high)
    fifo.expand_array(d, ARRAY2_GFN)  # ports 1024..2047
    assert _word(d, p, ARRAY2_GFN) == PENDING | LINKED and ev.is_pending(d, p)
    assert _u32(d, CB_GFN, 64 + 8 + 4 * 7) == p
    assert not ev.is_pending(d, high)
    with host.hv.event_lock:
        ev.close(d, high, host.hv.domains)  # a saved event goes with its port
    for gfn in range(0x803, 0x806):
        fifo.expand_array(d, gfn)
    assert not ev.is_pending(d, high)
    # Back on 2-level, the buckets grown under FIFO stay but are not handed out.
    with host.hv.event_lock:
        ev.bind_ipi(d, 0)
        ev.reset(d, host.hv.domains)
        assert len(d.events.channels) > 4096 and not d.events.valid(4096)
        assert [ev.alloc_unbound(d, d.domid) for _ in range(4095)] == list(range(1, 4096))
        assert _errno(ev.alloc_unbound, d, d.domid) == XenErrno.ENOSPC


def test_priority_queue_move_and_control_port_delivery(host: Host) -> None:
    d = _domain(host, vcpus=2)
    _switch(d)
    fifo.init_control(d, 1, CB_GFN, 64 + 128)
    with host.hv.event_lock:
        a = ev.bind_ipi(d, 0)
        ev.set_priority(d, a, 2)
        assert _errno(ev.set_priority, d, a, 16) == XenErrno.EINVAL
        assert _errno(ev.set_priority, d, 5000, 1) == XenErrno.EINVAL
        ev.send(d, a, host.hv.domains)
        assert _u32(d, CB_GFN, 64) == 1 << 2 and _u32(d, CB_GFN, 64 + 8 + 8) == a
    # dom0's services notify through control_ports -> event_channel.set_pending.
    local, _fd = host.hv.control_ports.bind(d.domid, STORE_EVTCHN)
    try:
        host.hv.control_ports.notify(local)
        assert ev.is_pending(d, STORE_EVTCHN)
        assert _u32(d, CB_GFN, 64) == (1 << 2) | (1 << 7)
        assert _u32(d, CB_GFN, 64 + 8 + 4 * 7) == STORE_EVTCHN
        # A global port re-bound to vCPU 1 is queued there next time.
        with host.hv.event_lock:
            ev.bind_vcpu(d, STORE_EVTCHN, 1)
        _guest_writes_word(d, STORE_EVTCHN, 0)  # the guest consumed it
        host.hv.control_ports.notify(local)
        assert _u32(d, CB_GFN, 64 + 128) == 1 << 7  # vCPU 1's READY
        assert _u32(d, CB_GFN, 64 + 128 + 8 + 4 * 7) == STORE_EVTCHN
    finally:
        host.hv.control_ports.unbind(local)


def test_init_control_argument_checks(host: Host) -> None:
    d = _domain(host)
    heap_gfn = 0xE0400
    d.map_heap_page(0, heap_gfn)  # shared_info, mapped by the guest: Xen accepts it too
    assert _errno(fifo.init_control, d, 1, CB_GFN, 0) == XenErrno.ENOENT
    assert _errno(fifo.init_control, d, 1, CB_GFN, 3) == XenErrno.ENOENT  # vCPU first
    for offset in (4, PAGE_SIZE - 72 + 8, PAGE_SIZE, 0xFFFF_FFF8):
        assert _errno(fifo.init_control, d, 0, CB_GFN, offset) == XenErrno.EINVAL
    for gfn in (0xE8000, 1 << 40, (1 << 64) - 1, d.max_gfn):
        assert _errno(fifo.init_control, d, 0, gfn, 0) == XenErrno.EINVAL
    assert d.evtchn_ops is ev.TWO_LEVEL and not d.grants.page_pins
    fifo.init_control(d, 0, heap_gfn, PAGE_SIZE - 72)
    assert _errno(fifo.init_control, d, 0, CB_GFN, 0) == XenErrno.EINVAL
    for _ in range(fifo.MAX_EVENT_ARRAY_PAGES):
        fifo.expand_array(d, ARRAY_GFN)
    assert _errno(fifo.expand_array, d, ARRAY_GFN) == XenErrno.ENOSPC
    assert _errno(fifo.expand_array, d, 0xE8000) == XenErrno.ENOSPC
    with host.hv.event_lock:
        ev.reset(d, host.hv.domains)
    assert not d.grants.page_pins
