"""console_io (hypercall 18): guest writes to the hypervisor console (§8.5).

Writes are read from the guest in page-sized chunks, so a huge count costs
nothing until the guest's memory runs out (then -EFAULT, as Xen returns
when its copy faults).  Reads are refused to unprivileged domains (dummy
XSM), and pyxen has no serial input ring to offer privileged ones yet.
"""

from __future__ import annotations

from pyxen.abi.console import ConsoleIo
from pyxen.abi.errno import XenErrno
from pyxen.hv.dispatch import Call
from pyxen.hv.errors import HypercallError

CHUNK = 4096


def do_console_io(call: Call, cmd: int, count: int, buffer: int, *_: int) -> int:
    count &= 0xFFFF_FFFF  # unsigned int in Xen's prototype
    if cmd == ConsoleIo.write:
        console = call.domain.hv.console
        done = 0
        while done < count:
            n = min(CHUNK - ((buffer + done) & (CHUNK - 1)), count - done)
            data = call.guest.read(buffer + done, n)
            console.guest_write(call.domain.domid, data)
            done += n
        return 0
    if cmd == ConsoleIo.read:
        if not call.domain.privileged:
            raise HypercallError(XenErrno.EPERM)
        return 0
    return -XenErrno.ENOSYS
