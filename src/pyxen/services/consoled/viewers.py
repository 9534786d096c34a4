"""Console viewers: non-blocking sockets with a bounded backlog each.

Design: consoled is one thread, so a blocking send to a viewer that does
not read would stall every other viewer, the console log and, once the
ring fills, the guest.  Viewer sockets are therefore non-blocking.  Output
is sent at once as far as the socket takes it; the rest waits in the
viewer's own backlog, and the selector then also watches the socket for
writability (:meth:`Viewer.wants_write`) until the backlog is sent.

A viewer whose backlog would exceed :data:`VIEWER_BACKLOG_MAX` is
disconnected (after a best-effort note).  Dropping the viewer rather than
some of its data is deliberate: a viewer is a terminal stream, and a gap
cut silently into it (possibly inside an escape sequence) misleads; the
console log keeps everything, and ``pyxen console`` can simply attach
again.  Nothing is ever held back from the log or the guest on a viewer's
account.

Invariant: ``backlog`` is empty unless the socket last refused data, and
never longer than :data:`VIEWER_BACKLOG_MAX`.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field

#: Output kept for one viewer that is not reading (4 s of a 9600-baud
#: console is 4.8 KB; this is a generous multiple).
VIEWER_BACKLOG_MAX = 256 * 1024
#: The note a dropped viewer gets if its socket still takes it.
DROP_NOTE = b"\r\n[pyxen consoled: viewer too slow, disconnected; output is in the log]\r\n"


@dataclass(eq=False)
class Viewer:
    sock: socket.socket
    domid: int | None = None
    hello: bytearray = field(default_factory=bytearray)
    backlog: bytearray = field(default_factory=bytearray)

    def wants_write(self) -> bool:
        return bool(self.backlog)

    def send(self, data: bytes) -> bool:
        """Queue ``data`` and send what the socket takes now.  False if the
        viewer must be dropped (its socket failed, or it fell too far
        behind)."""
        if len(self.backlog) + len(data) > VIEWER_BACKLOG_MAX:
            self.backlog.clear()
            with contextlib.suppress(OSError):
                self.sock.send(DROP_NOTE)
            return False
        self.backlog += data
        return self.flush()

    def flush(self) -> bool:
        """Send as much of the backlog as the socket takes; False on error."""
        while self.backlog:
            try:
                sent = self.sock.send(self.backlog)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            del self.backlog[:sent]
        return True
