"""sched_op (hypercall 29) and set_timer_op (hypercall 15), §8.2-8.3.

block and poll sleep in the calling vCPU's thread (``VcpuRunner.block``),
which uses no CPU until an upcall, a poll match, the timeout, a pause or a
stop wakes it.  poll arms its wake-up (``begin_block``) and joins the
domain's pollers before it checks the ports, as Xen's do_poll sets the poll
mask and _VPF_blocked first: a port becoming pending after the check wakes
the coming sleep instead of being lost.  yield gives the host CPU away once.  The watchdog uses the
hypervisor's timer service.  pin_override is the hardware domain's only
(-EPERM here: there is no hardware domain guest).
"""

from __future__ import annotations

import os
from functools import partial

from pyxen.abi.errno import XenErrno
from pyxen.abi.sched import (
    NR_DOMAIN_WATCHDOG_TIMERS,
    SCHEDOP_POLL_MAX_PORTS,
    SchedOp,
    compat_sched_poll,
    sched_poll,
    sched_remote_shutdown,
    sched_shutdown,
    sched_watchdog,
)
from pyxen.abi.vcpu import RunstateState
from pyxen.abi.xen import ShutdownReason
from pyxen.hv.dispatch import Call, signed32
from pyxen.hv.domain import Domain
from pyxen.hv.event_channel import is_pending
from pyxen.hv.shared_info import UPCALL_MASK

# set_timer_op: a deadline this far ahead (or negative) is taken as a bug in
# the guest and replaced by now + 100 ms, as Xen does.
TIMER_MAX_AHEAD_NS = 1 << 50
TIMER_FALLBACK_NS = 100_000_000


def do_sched_op(call: Call, cmd: int, arg: int, *_: int) -> int:
    cmd = signed32(cmd)  # int cmd in Xen's prototype
    if cmd == SchedOp.yield_:
        vcpu = call.vcpu
        if vcpu.dispatcher is not None:
            vcpu.dispatcher.yielded(vcpu)  # the loop waits for a pCPU if it lost its own
            return 0
        vcpu.time.set_runstate(RunstateState.runnable)
        os.sched_yield()
        vcpu.time.set_runstate(RunstateState.running)
        return 0
    if cmd == SchedOp.block:
        vcpu = call.vcpu
        vcpu.vcpu_info_view[UPCALL_MASK] = 0  # local_event_delivery_enable
        vcpu.block()
        return 0
    if cmd == SchedOp.shutdown:
        reason = call.guest.read_struct(arg, sched_shutdown).reason & 0xFF
        call.domain.shutdown(reason)
        return 0
    if cmd == SchedOp.poll:
        return _poll(call, arg)
    if cmd == SchedOp.remote_shutdown:
        return _remote_shutdown(call, arg)
    if cmd == SchedOp.shutdown_code:
        reason = call.guest.read_struct(arg, sched_shutdown).reason & 0xFF
        with call.domain.lock:
            if call.domain.shutdown_code is None:
                call.domain.shutdown_code = reason
        return 0
    if cmd == SchedOp.watchdog:
        w = call.guest.read_struct(arg, sched_watchdog)
        return _watchdog(call, int(w.id), int(w.timeout))
    if cmd == SchedOp.pin_override:
        return -XenErrno.EPERM
    return -XenErrno.ENOSYS


def _poll(call: Call, arg: int) -> int:
    p = call.guest.read_struct(arg, compat_sched_poll if call.compat else sched_poll)
    nr_ports = int(p.nr_ports)
    if nr_ports > SCHEDOP_POLL_MAX_PORTS:
        return -XenErrno.EINVAL
    vcpu = call.vcpu
    domain = call.domain
    # As Xen's do_poll: the vCPU is marked blocked and polling *before* the
    # ports are checked, so a send between the check and the sleep wakes it.
    vcpu.begin_block()
    vcpu.poll_port = -1
    domain.pollers.add(vcpu)
    try:
        if vcpu.upcall_deliverable():
            return 0
        port = 0
        limit = domain.events.limit()  # Xen: d->max_evtchns of the ABI in use
        for i in range(nr_ports):
            port = call.guest.read_u32(p.ports + 4 * i)
            if port >= limit:
                return -XenErrno.EINVAL
            if is_pending(domain, port):
                return 0
        if nr_ports == 1:
            vcpu.poll_port = port
        vcpu.block(int(p.timeout) or None, until_deliverable=True, prepared=True)
        return 0
    finally:
        domain.pollers.discard(vcpu)
        vcpu.poll_port = None


def _remote_shutdown(call: Call, arg: int) -> int:
    a = call.guest.read_struct(arg, sched_remote_shutdown)
    hv = call.domain.hv
    if not hv.domain_exists(a.domain_id):
        return -XenErrno.ESRCH
    target = hv.domains.get(a.domain_id)
    if not call.domain.privileged or target is None:
        return -XenErrno.EPERM
    target.shutdown(a.reason & 0xFF)
    return 0


def _watchdog(call: Call, wid: int, timeout_s: int) -> int:
    domain = call.domain
    if wid > NR_DOMAIN_WATCHDOG_TIMERS:
        return -XenErrno.EINVAL
    now = domain.hv.system_time_ns()
    with domain.lock:
        timers = domain.watchdogs
        if wid == 0:
            for i in range(NR_DOMAIN_WATCHDOG_TIMERS):
                if timers[i] is None:
                    timer = domain.hv.timers.timer(partial(_watchdog_fired, domain, i + 1))
                    timers[i] = timer
                    timer.arm(now + timeout_s * 1_000_000_000)
                    return i + 1
            return -XenErrno.ENOSPC
        existing = timers[wid - 1]
        if existing is None:
            return -XenErrno.EINVAL
        if timeout_s == 0:
            existing.cancel()
            timers[wid - 1] = None
        else:
            existing.arm(now + timeout_s * 1_000_000_000)
    return 0


def _watchdog_fired(domain: Domain, wid: int) -> None:
    domain.log(f"watchdog timer {wid} fired")
    domain.shutdown(ShutdownReason.watchdog)


def do_set_timer_op(call: Call, a1: int, a2: int, *_: int) -> int:
    """Arm (or with 0 cancel) the calling vCPU's single-shot timer."""
    # A 32-bit caller passes the 64-bit deadline in EBX (low) and ECX (high).
    timeout = (a1 & 0xFFFF_FFFF) | ((a2 & 0xFFFF_FFFF) << 32) if call.compat else a1
    if timeout & (1 << 63):
        timeout -= 1 << 64
    vcpu = call.vcpu
    if timeout == 0:
        vcpu.time.singleshot.cancel()
        return 0
    now = call.domain.hv.system_time_ns()
    if timeout < 0 or timeout > now + TIMER_MAX_AHEAD_NS:
        timeout = now + TIMER_FALLBACK_NS
    vcpu.time.singleshot.arm(timeout)
    return 0

