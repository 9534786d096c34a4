"""A client of xenstored: a socket client (always domain 0) or a guest ring.

The :class:`Connection` holds what C xenstored keeps per connection: the
caller's identity, its watches, its open transactions and the queue of
encoded messages waiting to be sent (:class:`~.output.OutputQueue`, which
bounds the watch events queued for a client that does not read them).
Transports (:mod:`.server` for sockets, :mod:`.guest` for rings) subclass it
and implement :meth:`flush`.
"""

from __future__ import annotations

import logging

from pyxen.abi.xs_wire import XENSTORE_PAYLOAD_MAX

from .output import OUTPUT_HIGH_WATER, OutputQueue
from .paths import domain_path
from .permissions import Caller
from .transactions import Transaction
from .watches import Watch
from .wire import HEADER_SIZE, watch_event

log = logging.getLogger("pyxen.xenstored")

__all__ = ["OUTPUT_HIGH_WATER", "Connection"]


class Connection:
    """Per-client state; the base class has no transport (output is kept)."""

    def __init__(self, caller: Caller, label: str) -> None:
        self.caller = caller
        self.label = label
        self.watches: list[Watch] = []
        self.transactions: dict[int, Transaction] = {}
        self._next_tx_id = 1
        self.output = OutputQueue()
        #: the store's set of connections with output to send (set by
        #: Xenstore.add_connection): the server flushes those, not every client
        self.outbox: set[Connection] | None = None
        #: the store's index of connections that have watches (set by
        #: Xenstore.add_connection): a change looks only at those
        self.watching: dict[Connection, None] | None = None
        self._dropping_since = -1  # output.dropped_over_quota when dropping began
        #: set after a protocol violation: no more requests are read and no
        #: output is sent until the client reconnects (C ``ignore_connection``)
        self.ignored = False
        self.closed = False

    @property
    def domid(self) -> int:
        return self.caller.domid

    @property
    def home(self) -> str:
        """Where relative paths point: /local/domain/<domid> (a socket
        connection is domain 0)."""
        return domain_path(self.caller.domid)

    # -- output -----------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue an encoded reply."""
        if self.closed or self.ignored:
            return
        self.output.push_reply(data)
        if self.outbox is not None:
            self.outbox.add(self)

    def send_event(self, path: bytes, token: bytes) -> None:
        """Queue an ``XS_WATCH_EVENT`` (payload path\\0token\\0), unless the
        output queue's rules drop it (a duplicate, or over the quota)."""
        if self.closed or self.ignored:
            return
        if len(path) + len(token) + 2 > XENSTORE_PAYLOAD_MAX:
            return  # C xenstored drops over-long events too
        data = watch_event(path, token)
        payload = data[HEADER_SIZE:]
        out = self.output
        over_quota = out.dropped_over_quota
        if out.push_event(data, payload, special=path.startswith(b"@")):
            if self.outbox is not None:
                self.outbox.add(self)
            if self._dropping_since >= 0:
                log.warning("%s: read its events again; %d were dropped meanwhile",
                            self.label, out.dropped_over_quota - self._dropping_since)
                self._dropping_since = -1
        elif out.dropped_over_quota != over_quota and self._dropping_since < 0:
            self._dropping_since = over_quota
            log.warning("%s: %d watch events queued unread: dropping its further events "
                        "until it reads them (XSA-326)", self.label, out.events_queued)

    @property
    def output_pending(self) -> int:
        return self.output.bytes

    def take_output(self) -> bytes:
        """Everything queued, removed from the queue."""
        return self.output.take_all()

    def flush(self) -> None:
        """Send queued output as far as the transport allows."""

    @property
    def wants_input(self) -> bool:
        return not (self.closed or self.ignored) and self.output.bytes < OUTPUT_HIGH_WATER

    # -- state ------------------------------------------------------------
    def new_transaction_id(self) -> int:
        """A transaction id not in use: non-zero, wrapping at 2^32."""
        while True:
            tx_id = self._next_tx_id
            self._next_tx_id = (tx_id % 0xFFFFFFFF) + 1
            if tx_id not in self.transactions:
                return tx_id

    def end_transaction(self, tx_id: int) -> None:
        """Forget transaction ``tx_id`` (its end, or the connection's)."""
        self.transactions.pop(tx_id).close()

    # -- watches (changed only here, so that the store's index stays true) --
    def add_watch(self, watch: Watch) -> None:
        self.watches.append(watch)
        if self.watching is not None:
            self.watching[self] = None

    def remove_watch(self, index: int) -> None:
        del self.watches[index]
        if not self.watches and self.watching is not None:
            self.watching.pop(self, None)

    def drop_state(self) -> None:
        """Forget watches and transactions (RESET_WATCHES, reconnection)."""
        self.watches.clear()
        if self.watching is not None:
            self.watching.pop(self, None)
        for tx_id in list(self.transactions):
            self.end_transaction(tx_id)

    def drop_output(self) -> None:
        self.output.clear()
        self._dropping_since = -1
