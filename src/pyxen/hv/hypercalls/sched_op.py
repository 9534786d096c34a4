"""sched_op (hypercall 29): shutdown, shutdown_code, yield (§8.2).

block, poll, remote_shutdown, watchdog and pin_override come with event
channels and the scheduler; until then they return -ENOSYS (logged once).
"""

from __future__ import annotations

import os

from pyxen.abi.errno import XenErrno
from pyxen.abi.sched import SchedOp, sched_shutdown
from pyxen.hv.dispatch import Call, report_missing_subop, signed32


def do_sched_op(call: Call, cmd: int, arg: int, *_: int) -> int:
    cmd = signed32(cmd)  # int cmd in Xen's prototype
    if cmd == SchedOp.yield_:
        os.sched_yield()
        return 0
    if cmd == SchedOp.shutdown:
        reason = call.guest.read_struct(arg, sched_shutdown).reason & 0xFF
        call.domain.shutdown(reason)
        return 0
    if cmd == SchedOp.shutdown_code:
        reason = call.guest.read_struct(arg, sched_shutdown).reason & 0xFF
        with call.domain.lock:
            if call.domain.shutdown_code is None:
                call.domain.shutdown_code = reason
        return 0
    try:
        name = SchedOp(cmd).name
    except ValueError:
        return -XenErrno.ENOSYS
    return report_missing_subop(call, "sched_op", cmd, name)
