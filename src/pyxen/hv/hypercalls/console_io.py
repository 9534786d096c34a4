"""console_io (hypercall 18): guest writes to the hypervisor console (§8.5).

Xen's prototype is ``do_console_io(int cmd, int count, buffer)``: both are
32-bit signed, so a "count" of 0xFFFFFFFF is -1 and writes nothing.  The
dummy XSM policy lets an unprivileged domain use ``CONSOLEIO_write`` only
(Xen debug builds; pyxen behaves like one); every other cmd is -EPERM for
it.  Writes are copied in chunks of 127 bytes, each printed before the next
is copied, exactly as Xen does, so a fault returns -EFAULT after the chunks
before it were printed.  Between two chunks the write is a preemption point:
it is continued as Xen's guest_console_write continues it, with the count
left and the buffer advanced (dispatch.Continuation).  pyxen has no serial
input ring, so a privileged read returns 0 bytes.
"""

from __future__ import annotations

from pyxen.abi.console import ConsoleIo
from pyxen.abi.errno import XenErrno
from pyxen.hv.dispatch import Call, Continuation, signed32
from pyxen.hv.errors import HypercallError

# Xen copies through a 128-byte buffer, one byte kept for the terminator.
CHUNK = 127


def do_console_io(call: Call, cmd: int, count: int, buffer: int, *_: int) -> int:
    cmd = signed32(cmd)
    if cmd != ConsoleIo.write and not call.domain.privileged:
        raise HypercallError(XenErrno.EPERM)
    if cmd == ConsoleIo.write:
        remaining = signed32(count)
        console = call.domain.hv.console
        while remaining > 0:
            if remaining != signed32(count) and call.preempted():
                raise Continuation(ConsoleIo.write, remaining, buffer & call.ulong_mask)
            n = min(remaining, CHUNK)
            console.guest_write(call.domain.domid, call.guest.read(buffer, n))
            buffer += n
            remaining -= n
        return 0
    if cmd == ConsoleIo.read:
        return 0
    return -XenErrno.ENOSYS
