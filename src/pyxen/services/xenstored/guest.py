"""A guest's connection over its ring page, driven by the event loop.

:class:`GuestConnection` ties a :class:`~.ring.XenstoreRing` to the request
handler.  The event loop calls :meth:`on_readable` when the guest's event
fd becomes readable and :meth:`service` again while it reports more work.
Requests act as the guest's domain: unprivileged (unless domain 0), quotas
apply, relative paths are under /local/domain/<domid>.

Hostile guests: a header announcing more than ``XENSTORE_PAYLOAD_MAX``
bytes or corrupt ring indices make the connection *ignored* (as C
xenstored's ``ignore_connection``): its watches, transactions and queued
output are dropped and its ring is no longer read, until the guest asks to
reconnect (``connection`` = ``XENSTORE_RECONNECT``) or the toolstack
introduces it again.  At most :data:`BUDGET` request bytes are taken per
:meth:`service` call, so a flooding guest cannot starve the others, and no
requests are read while too many replies wait (it must consume them).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable

from .connection import Connection
from .errors import ProtocolError
from .permissions import Caller
from .ring import XenstoreRing
from .wire import Message, MessageReader

log = logging.getLogger("pyxen.xenstored")

#: Request bytes consumed per :meth:`GuestConnection.service` call.
BUDGET = 16 * 1024

Handler = Callable[[Connection, Message], None]


class GuestConnection(Connection):
    """A domain's connection through its xenstore ring."""

    def __init__(self, domid: int, ring: XenstoreRing, fd: int, handler: Handler) -> None:
        super().__init__(Caller(domid, privileged=domid == 0), f"domain {domid}")
        self.ring = ring
        self.fd = fd
        self._handler = handler
        self._reader = MessageReader()
        ring.advertise_features()

    def on_readable(self) -> bool:
        """The guest signalled: clear the fd and serve the ring."""
        with contextlib.suppress(OSError):  # nothing to read, or not a counter
            os.read(self.fd, 4096)
        return self.service()

    def service(self) -> bool:
        """Handle a reconnection request, then up to :data:`BUDGET` request
        bytes.  Returns True when more requests may be waiting."""
        if self.closed:
            return False
        if self.ring.reconnect_requested:
            self.reconnect()
        taken = 0
        while self.wants_input and taken < BUDGET:
            try:
                data = self.ring.read()
                if not data:
                    return False
                taken += len(data)
                messages = self._reader.feed(data)
            except ProtocolError as err:
                self.ignore(str(err))
                return False
            for msg in messages:
                self._handler(self, msg)
                if self.ignored or self.closed:
                    return False
        return self.wants_input

    def flush(self) -> None:
        """Move queued output into the response ring, as much as it has room
        for; each chunk is built from the queue's front only (see
        :mod:`.output`)."""
        out = self.output
        while not (self.closed or self.ignored) and out.bytes:
            try:
                room = self.ring.write_space()
                if room == 0:
                    return
                sent = self.ring.write(out.peek(room))
            except ProtocolError as err:
                self.ignore(str(err))
                return
            out.consume(sent)

    def ignore(self, why: str) -> None:
        log.warning("domain %d: ignoring its ring until it reconnects: %s (ring: %s)",
                    self.domid, why, self.ring.history())
        self.drop_state()
        self.drop_output()
        self._reader.reset()
        self.ignored = True

    def reconnect(self) -> None:
        """Guest-requested reset: drop partial packets, queued output,
        watches and transactions; empty the rings; acknowledge."""
        log.info("domain %d: ring reconnection (ring: %s)", self.domid, self.ring.history())
        self.drop_state()
        self.drop_output()
        self._reader.reset()
        self.ignored = False
        self.ring.reset()
