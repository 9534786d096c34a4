"""A client of xenstored: a socket client (always domain 0) or a guest ring.

The :class:`Connection` holds what C xenstored keeps per connection: the
caller's identity, its watches, its open transactions and the queue of
encoded messages waiting to be sent.  Transports (:mod:`.server` for
sockets, :mod:`.guest` for rings) subclass it and implement :meth:`flush`.
"""

from __future__ import annotations

from collections import deque

from .paths import domain_path
from .permissions import Caller
from .transactions import Transaction
from .watches import Watch

#: Stop reading requests from a connection while this much output waits
#: (back-pressure on a client that does not read its replies).
OUTPUT_HIGH_WATER = 256 * 1024


class Connection:
    """Per-client state; the base class has no transport (output is kept)."""

    def __init__(self, caller: Caller, label: str) -> None:
        self.caller = caller
        self.label = label
        self.watches: list[Watch] = []
        self.transactions: dict[int, Transaction] = {}
        self._next_tx_id = 1
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
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
        """Queue an encoded message."""
        if self.closed or self.ignored:
            return
        self._out.append(data)
        self._out_bytes += len(data)

    @property
    def output_pending(self) -> int:
        return self._out_bytes

    def take_output(self) -> bytes:
        """Everything queued, removed from the queue."""
        data = b"".join(self._out)
        self._out.clear()
        self._out_bytes = 0
        return data

    def unread_output(self, data: bytes) -> None:
        """Put back the part of :meth:`take_output` that could not be sent."""
        if data:
            self._out.appendleft(data)
            self._out_bytes += len(data)

    def flush(self) -> None:
        """Send queued output as far as the transport allows."""

    @property
    def wants_input(self) -> bool:
        return not (self.closed or self.ignored) and self._out_bytes < OUTPUT_HIGH_WATER

    # -- state ------------------------------------------------------------
    def new_transaction_id(self) -> int:
        """A transaction id not in use: non-zero, wrapping at 2^32."""
        while True:
            tx_id = self._next_tx_id
            self._next_tx_id = (tx_id % 0xFFFFFFFF) + 1
            if tx_id not in self.transactions:
                return tx_id

    def drop_state(self) -> None:
        """Forget watches and transactions (RESET_WATCHES, reconnection)."""
        self.watches.clear()
        self.transactions.clear()

    def drop_output(self) -> None:
        self._out.clear()
        self._out_bytes = 0
