"""Server side of the xenstore ring page (``struct xenstore_domain_interface``).

Layout (``xs_wire.h``, spec section 9.1): ``req[1024]`` (guest -> server),
``rsp[1024]`` (server -> guest), then the u32 indices ``req_cons``,
``req_prod``, ``rsp_cons``, ``rsp_prod``, ``server_features`` and
``connection``.  Indices are free-running u32 counters; byte ``x`` of a
stream sits at ``x & 1023``.  The server produces ``rsp`` and consumes
``req``.

Rules kept here:

* Each index is read once per operation, into a local, and checked:
  ``prod - cons`` (mod 2^32) above 1024 means a corrupt (hostile) ring and
  raises :class:`RingError`; the caller then stops serving the guest.
* Data is copied before the index that publishes it is written, and
  ``notify()`` is called after every index update.  Python performs the
  stores in program order and x86 keeps stores ordered (TSO), which is the
  barrier the C code gets from ``xen_mb()``.
* Each index is loaded and stored whole (:class:`~pyxen.shared_words.SharedWords`),
  never with ``struct.pack_into``, whose zeroing of the destination first
  let the guest see ``req_cons`` or ``rsp_prod`` at 0 for an instant (a
  "broken ring" to it, and a reconnection that lost its watches).
* Reconnection (``XENSTORE_SERVER_FEATURE_RECONNECTION``): the guest sets
  ``connection`` to ``XENSTORE_RECONNECT`` and signals; :meth:`reset`
  zeroes the four indices, sets ``connection`` back to
  ``XENSTORE_CONNECTED`` and signals.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from pyxen.abi.xs_wire import (
    XENSTORE_CONNECTED,
    XENSTORE_RECONNECT,
    XENSTORE_RING_SIZE,
    XENSTORE_SERVER_FEATURE_RECONNECTION,
    xenstore_domain_interface,
)
from pyxen.shared_words import SharedWords

from .errors import ProtocolError

_MASK = XENSTORE_RING_SIZE - 1
REQ = xenstore_domain_interface.req.offset
RSP = xenstore_domain_interface.rsp.offset
REQ_CONS = xenstore_domain_interface.req_cons.offset
REQ_PROD = xenstore_domain_interface.req_prod.offset
RSP_CONS = xenstore_domain_interface.rsp_cons.offset
RSP_PROD = xenstore_domain_interface.rsp_prod.offset
SERVER_FEATURES = xenstore_domain_interface.server_features.offset
CONNECTION = xenstore_domain_interface.connection.offset
INTERFACE_SIZE = xenstore_domain_interface.connection.offset + 4


#: Index updates remembered by :meth:`XenstoreRing.history`.
HISTORY = 16


class RingError(ProtocolError):
    """The guest left inconsistent indices in its ring page."""


class XenstoreRing:
    """The server's view of one guest's ring page.

    ``page`` is a writable byte memoryview of at least 2072 bytes (the
    mapped page); ``notify`` signals the guest's event channel.
    """

    def __init__(self, page: memoryview, notify: Callable[[], None]) -> None:
        if page.readonly:
            raise ValueError("the ring page must be writable")
        page = page.cast("B")  # our own view, released by release()
        if page.nbytes < INTERFACE_SIZE:
            raise ValueError(f"ring page of {page.nbytes} bytes, need {INTERFACE_SIZE}")
        self._page = page
        self._words = SharedWords(page, REQ_CONS, (INTERFACE_SIZE - REQ_CONS) // 4)
        self._notify = notify
        #: the last index updates made here, for the log when the guest
        #: reconnects or the ring is found broken (see :meth:`history`)
        #: (what, index before, index after) per update: formatted only when logged
        self._history: deque[tuple[str, int, int]] = deque(maxlen=HISTORY)

    def release(self) -> None:
        """Stop using the page (the view made here is released; the
        caller's memoryview stays the caller's to release)."""
        self._words.release()
        self._page.release()

    def _get(self, offset: int) -> int:
        return self._words[(offset - REQ_CONS) // 4]

    def _set(self, offset: int, value: int) -> None:
        """One whole store (see the module docstring)."""
        self._words[(offset - REQ_CONS) // 4] = value

    def advertise_features(self) -> None:
        """Set ``server_features`` (the reconnection feature)."""
        features = self._get(SERVER_FEATURES) | XENSTORE_SERVER_FEATURE_RECONNECTION
        self._set(SERVER_FEATURES, features)

    @property
    def reconnect_requested(self) -> bool:
        return self._get(CONNECTION) == XENSTORE_RECONNECT

    def history(self) -> str:
        """The last index updates, oldest first, and the indices now (for the log)."""
        now = " ".join(f"{name}={self._get(off):#x}" for name, off in (
            ("req_cons", REQ_CONS), ("req_prod", REQ_PROD), ("rsp_cons", RSP_CONS),
            ("rsp_prod", RSP_PROD), ("connection", CONNECTION)))
        steps = [f"{what} {old:#x}->{new:#x}" for what, old, new in self._history]
        return "; ".join([*steps, f"now {now}"])

    def reset(self) -> None:
        """Empty both rings and acknowledge a reconnection."""
        self._history.append(("reset", 0, 0))
        for offset in (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD):
            self._set(offset, 0)
        self._set(CONNECTION, XENSTORE_CONNECTED)
        self._notify()

    def read(self) -> bytes:
        """Consume every request byte available (at most 1024)."""
        cons = self._get(REQ_CONS)
        prod = self._get(REQ_PROD)
        avail = (prod - cons) & 0xFFFFFFFF
        if avail > XENSTORE_RING_SIZE:
            raise RingError(f"request ring indices cons={cons:#x} prod={prod:#x}")
        if avail == 0:
            return b""
        start = cons & _MASK
        first = min(avail, XENSTORE_RING_SIZE - start)
        data = bytes(self._page[REQ + start:REQ + start + first])
        if first < avail:
            data += bytes(self._page[REQ:REQ + avail - first])
        self._set(REQ_CONS, cons + avail)
        self._history.append(("req_cons", cons, prod))
        self._notify()
        return data

    def _used(self) -> tuple[int, int]:
        """(rsp_prod, bytes in the response ring), checked."""
        cons = self._get(RSP_CONS)
        prod = self._get(RSP_PROD)
        used = (prod - cons) & 0xFFFFFFFF
        if used > XENSTORE_RING_SIZE:
            raise RingError(f"response ring indices cons={cons:#x} prod={prod:#x}")
        return prod, used

    def write_space(self) -> int:
        """Bytes the response ring can take now."""
        return XENSTORE_RING_SIZE - self._used()[1]

    def write(self, data: bytes) -> int:
        """Produce as much of ``data`` as fits; returns the bytes written."""
        prod, used = self._used()
        n = min(len(data), XENSTORE_RING_SIZE - used)
        if n == 0:
            return 0
        start = prod & _MASK
        first = min(n, XENSTORE_RING_SIZE - start)
        self._page[RSP + start:RSP + start + first] = data[:first]
        if first < n:
            self._page[RSP:RSP + n - first] = data[first:n]
        self._set(RSP_PROD, prod + n)
        self._history.append(("rsp_prod", prod, prod + n))
        self._notify()
        return n
