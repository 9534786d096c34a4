"""The PV console backend of ``pyxen create -F`` when no daemon runs.

``xl create -F`` always has xenconsoled behind it; a standalone ``pyxen
create -F`` has no consoled, so this module is its console backend, inside
the hypervisor process.  It does what consoled does for one domain (see
``pyxen.services.consoled``): map the ring through grant 0 as xenconsoled
does (or the CONSOLE_PFN frame if the guest broke grant 0), bind dom0's end
of the console event channel (``hv.control_ports``: an eventfd the guest's
sends signal), move output from the ring to the terminal and input from the
terminal to the ring, and notify the guest after either.  The bytes shown
are the ring's bytes, unchanged, exactly as ``pyxen console`` shows them
under a daemon.

Terminal (``pyxen.toolstack.terminal``, shared with ``pyxen console``):
output goes to stdout as it comes; input comes from stdin if there is any.
With ``-c`` on a terminal, input is character at a time (Ctrl-C goes to the
guest, as with ``xl console``) and Ctrl-] gives the terminal back while the
domain keeps running (Ctrl-C then destroys it).  Without ``-c`` a terminal
stays in line mode and Ctrl-C destroys the domain.

Threads: ``run`` is called by the main thread and returns when the domain
has shut down (``Domain.on_shutdown`` writes to a wake-up pipe), after a
last drain of the ring so nothing the guest wrote before dying is lost.
Everything here runs in that one thread; vCPU threads only signal the
eventfd.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import sys
from typing import TYPE_CHECKING

from pyxen.abi.grant_table import GNTTAB_RESERVED_CONSOLE
from pyxen.abi.hvm import HvmParam
from pyxen.abi.xen import CONTROL_DOMID
from pyxen.hv.errors import HypercallError
from pyxen.hv.grant_table import GrantError, map_grant, unmap_grant
from pyxen.memory import Gfn, PageKind
from pyxen.services.consoled.ring import ConsoleRing
from pyxen.toolstack.terminal import ConsoleTerminal, write_all

if TYPE_CHECKING:
    from pyxen.hv.domain import Domain
    from pyxen.hv.grant_table import GrantMapping

MAX_PENDING_INPUT = 64 * 1024


class ForegroundConsole:
    """One domain at a time: its PV console on this process's terminal."""

    def __init__(self, interactive: bool) -> None:
        self.term = ConsoleTerminal(interactive)
        self._pending_input = bytearray()
        # Written by Domain.on_shutdown in a vCPU thread, possibly after run()
        # returned: it lives as long as this object so it is never a stale fd.
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def close(self) -> None:
        """Give the terminal back as it was."""
        self.term.restore()
        if self._wake_r >= 0:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    def run(self, domain: Domain) -> None:
        """Serve ``domain``'s console until it has shut down."""
        wake_w = self._wake_w
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)  # a poke left by the previous domain
        domain.on_shutdown.append(lambda _d: _poke(wake_w))
        link = _RingLink.attach(domain)
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self._wake_r, selectors.EVENT_READ)
                if link is not None:
                    sel.register(link.eventfd, selectors.EVENT_READ)
                self._queue_input(self.term.watch(sel))
                if link is not None:
                    self._pump(link)
                while domain.shutdown_reason is None:
                    for key, _ in sel.select():
                        if key.fd == self.term.stdin:
                            self._read_input(sel)
                    if link is not None:
                        self._pump(link)
        finally:
            if link is not None:
                self._pump(link)  # what the guest wrote just before it stopped
                link.detach()

    def _read_input(self, sel: selectors.BaseSelector) -> None:
        data, detached = self.term.read(sel)
        self._queue_input(data)
        if detached:
            self.term.restore()
            sys.stderr.write("\npyxen: console detached; the domain keeps running "
                             "(Ctrl-C destroys it)\n")
            sys.stderr.flush()

    def _queue_input(self, data: bytes) -> None:
        if len(self._pending_input) + len(data) <= MAX_PENDING_INPUT:
            self._pending_input += data

    def _pump(self, link: _RingLink) -> None:
        """Ring output to stdout, queued input to the ring; notify the guest if either moved."""
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(link.eventfd)
        data = link.ring.read_output()
        if data:
            write_all(sys.stdout.fileno(), data)
        moved = bool(data)
        if self._pending_input:
            done = link.ring.write_input(bytes(self._pending_input))
            del self._pending_input[:done]
            moved = moved or done > 0
        if moved:
            link.notify()


class _RingLink:
    """The mapped ring page and dom0's end of the console event channel."""

    def __init__(self, domain: Domain, view: memoryview, mapping: GrantMapping | None,
                 local_port: int, eventfd: int) -> None:
        self.domain = domain
        self.view = view
        self.ring = ConsoleRing(view)
        self.mapping = mapping
        self.local_port = local_port
        self.eventfd = eventfd

    @classmethod
    def attach(cls, domain: Domain) -> _RingLink | None:
        """Map the ring and bind the port; None (logged) if the guest broke either."""
        mapping: GrantMapping | None = None
        try:
            mapping = map_grant(domain, GNTTAB_RESERVED_CONSOLE, CONTROL_DOMID, False)
            pool_page = mapping.pool_page
        except GrantError:
            found = domain.memory.lookup(Gfn(domain.params[HvmParam.CONSOLE_PFN]))
            if found is None or found[1] is not PageKind.RAM:
                domain.log("no PV console: its ring page is gone")
                return None
            pool_page = found[0]
        try:
            local, eventfd = domain.hv.control_ports.bind(
                domain.domid, domain.params[HvmParam.CONSOLE_EVTCHN])
        except HypercallError:
            domain.log("no PV console: its event channel is not offered to domain 0")
            if mapping is not None:
                unmap_grant(mapping)
            return None
        return cls(domain, domain.memory.pool_view(pool_page), mapping, local, eventfd)

    def notify(self) -> None:
        with contextlib.suppress(HypercallError):
            self.domain.hv.control_ports.notify(self.local_port)

    def detach(self) -> None:
        with contextlib.suppress(HypercallError):
            self.domain.hv.control_ports.unbind(self.local_port)
        self.view.release()
        if self.mapping is not None:
            unmap_grant(self.mapping)


def _poke(fd: int) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        os.write(fd, b"x")
