"""The generic Xen shared ring (``io/ring.h``, spec section 12.1), pure Python.

Layout of the ring area (one or more granted pages, page 0 first):

* a 64-byte header: u32 ``req_prod``, ``req_event``, ``rsp_prod``,
  ``rsp_event`` at offsets 0, 4, 8, 12, then ``pvt`` and padding;
* from offset 64, ``n`` slots of ``entry_size`` bytes (the size of the union
  of request and response), ``n`` the largest power of two that fits.  Slot
  of free-running index ``i`` is ``i & (n - 1)``; requests and responses
  share the slots (a response goes into the slot of the request it answers,
  in order).

Multi-page rings: the pages a frontend grants need not be contiguous where
the backend maps them, so the area is a sequence of page-sized memoryviews
(or one memoryview, split here); a slot may straddle two pages and is then
copied piecewise.

:class:`BackRing` is the backend's side:

* :meth:`BackRing.take_requests` copies each request slot out of shared
  memory exactly once (the guest may rewrite the slot at any time; the copy
  is what gets validated and executed) and advances the private
  ``req_cons``.
* Hostile input: ``req_prod`` is read once per call into a local, and if it
  is more than ``n`` ahead of the responses produced (``req_prod -
  rsp_prod_pvt > n``, mod 2^32) the frontend broke flow control:
  :class:`RingError`, and the caller stops serving that ring; so is a
  ``req_prod`` that went back behind ``req_cons``.  Otherwise
  one call takes at most ``n`` requests, so a loop over the ring is
  bounded by the guest's requests, never by a counter it controls.
* :meth:`BackRing.final_check_for_requests` is
  ``RING_FINAL_CHECK_FOR_REQUESTS``: with no work, publish ``req_event =
  req_cons + 1``, full barrier, look again, so a request published
  concurrently is either seen now or followed by an event.
* :meth:`BackRing.push_responses` is ``RING_PUSH_RESPONSES_AND_CHECK_NOTIFY``:
  publish ``rsp_prod`` after the slots are written, full barrier, then
  notify iff ``rsp_event`` lies in (old, new] (``new - event < new - old``
  mod 2^32).

Ordering: Python performs the stores in program order and x86 keeps stores
ordered with stores and loads with loads (TSO), which is the write/read
barrier the C macros use.  The store-then-load cases (event index written,
producer index re-read) need a full barrier; :func:`full_barrier` is a
locked instruction from pyxen's atomic extension.

:class:`FrontRing` is the frontend's side, for tests and tools that drive a
backend (it trusts the backend).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

from pyxen.hv import _atomic
from pyxen.shared_words import load_u32, store_u32

PAGE_SIZE = 4096
HEADER_SIZE = 64
REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT = 0, 4, 8, 12
_M32 = 0xFFFF_FFFF

_fence_word = ctypes.c_uint16(0)
_fence_addr = ctypes.addressof(_fence_word)


def full_barrier() -> None:
    """A full memory barrier (a locked read-modify-write of a private word)."""
    _atomic.fetch_or16(_fence_addr, 0)


class RingError(Exception):
    """The other end left indices that break the ring protocol."""


def ring_size(area_size: int, entry_size: int) -> int:
    """Slots in a ring of ``area_size`` bytes: the largest power of two that fits."""
    if entry_size <= 0:
        raise ValueError("entry size must be positive")
    fit = (area_size - HEADER_SIZE) // entry_size
    if fit < 1:
        raise ValueError(f"a {area_size}-byte area holds no {entry_size}-byte entry")
    return 1 << (fit.bit_length() - 1)


def _split(area: memoryview | Sequence[memoryview]) -> list[memoryview]:
    if isinstance(area, memoryview):
        if len(area) == 0 or len(area) % PAGE_SIZE:
            raise ValueError("a ring area is a whole number of pages")
        flat = area.cast("B")
        return [flat[i : i + PAGE_SIZE] for i in range(0, len(flat), PAGE_SIZE)]
    pages = [p.cast("B") for p in area]
    if not pages or any(len(p) != PAGE_SIZE for p in pages):
        raise ValueError("a ring area is a non-empty list of whole pages")
    return pages


class _Ring:
    """What both ends share: the pages, the slot geometry, index access."""

    def __init__(self, area: memoryview | Sequence[memoryview], entry_size: int,
                 fence: Callable[[], None]) -> None:
        self.pages = _split(area)
        self.entry_size = entry_size
        self.size = ring_size(len(self.pages) * PAGE_SIZE, entry_size)
        self._fence = fence

    def _get(self, offset: int) -> int:
        return load_u32(self.pages[0], offset)

    def _set(self, offset: int, value: int) -> None:
        store_u32(self.pages[0], offset, value)  # one store: pack_into zeroes first

    def _slot_offset(self, index: int) -> int:
        return HEADER_SIZE + (index & (self.size - 1)) * self.entry_size

    def read_slot(self, index: int) -> bytes:
        """A copy of the slot of free-running index ``index``."""
        offset, left = self._slot_offset(index), self.entry_size
        out = bytearray()
        while left:
            page, start = divmod(offset, PAGE_SIZE)
            chunk = min(left, PAGE_SIZE - start)
            out += self.pages[page][start : start + chunk]
            offset, left = offset + chunk, left - chunk
        return bytes(out)

    def write_slot(self, index: int, data: bytes) -> None:
        """Write ``data`` (at most one entry) at the start of slot ``index``."""
        if len(data) > self.entry_size:
            raise ValueError(f"{len(data)} bytes do not fit a {self.entry_size}-byte slot")
        offset, done = self._slot_offset(index), 0
        while done < len(data):
            page, start = divmod(offset, PAGE_SIZE)
            chunk = min(len(data) - done, PAGE_SIZE - start)
            self.pages[page][start : start + chunk] = data[done : done + chunk]
            offset, done = offset + chunk, done + chunk


class BackRing(_Ring):
    """The backend's end: consumes requests, produces responses.

    ``req_cons`` and ``rsp_prod_pvt`` start at ``start`` (0 for a fresh
    ring, which the frontend initialised).
    """

    def __init__(self, area: memoryview | Sequence[memoryview], entry_size: int, *,
                 start: int = 0, fence: Callable[[], None] = full_barrier) -> None:
        super().__init__(area, entry_size, fence)
        self.req_cons = start & _M32
        self.rsp_prod_pvt = start & _M32
        self._rsp_pushed = start & _M32

    def unconsumed_requests(self) -> int:
        """Requests published and not yet taken (RingError if req_prod is hostile)."""
        prod = self._get(REQ_PROD)
        ahead = (prod - self.rsp_prod_pvt) & _M32
        taken = (self.req_cons - self.rsp_prod_pvt) & _M32
        if ahead > self.size:
            raise RingError(f"req_prod {prod} is more than {self.size} requests ahead of "
                            f"the responses ({self.rsp_prod_pvt})")
        if ahead < taken:
            raise RingError(f"req_prod {prod} went back behind req_cons {self.req_cons}")
        return ahead - taken

    def take_requests(self, limit: int | None = None) -> list[bytes]:
        """Copy out and consume the requests published now (at most ``size``, and
        at most ``limit``)."""
        count = self.unconsumed_requests()
        if limit is not None:
            count = min(count, limit)
        out = [self.read_slot(self.req_cons + i) for i in range(count)]
        self.req_cons = (self.req_cons + count) & _M32
        return out

    def final_check_for_requests(self) -> bool:
        """True if requests are waiting; else arm ``req_event`` and look again."""
        if self.unconsumed_requests():
            return True
        self._set(REQ_EVENT, self.req_cons + 1)
        self._fence()
        return self.unconsumed_requests() > 0

    def put_response(self, data: bytes) -> None:
        """Write the next response (one per consumed request, in any order of ids)."""
        if self.rsp_prod_pvt == self.req_cons:
            raise ValueError("no consumed request is waiting for a response")
        self.write_slot(self.rsp_prod_pvt, data)
        self.rsp_prod_pvt = (self.rsp_prod_pvt + 1) & _M32

    def push_responses(self) -> bool:
        """Publish the responses written; True if the frontend must be notified."""
        old, new = self._rsp_pushed, self.rsp_prod_pvt
        self._set(RSP_PROD, new)  # slots are written: stores stay ordered (TSO)
        self._rsp_pushed = new
        self._fence()
        event = self._get(RSP_EVENT)
        return (new - event) & _M32 < (new - old) & _M32


class FrontRing(_Ring):
    """The frontend's end (initialises the shared header)."""

    def __init__(self, area: memoryview | Sequence[memoryview], entry_size: int, *,
                 fence: Callable[[], None] = full_barrier) -> None:
        super().__init__(area, entry_size, fence)
        self.pages[0][:HEADER_SIZE] = bytes(HEADER_SIZE)
        self._set(REQ_EVENT, 1)
        self._set(RSP_EVENT, 1)
        self.req_prod_pvt = 0
        self.rsp_cons = 0
        self._req_pushed = 0

    def free_requests(self) -> int:
        return self.size - ((self.req_prod_pvt - self.rsp_cons) & _M32)

    def put_request(self, data: bytes) -> None:
        if self.free_requests() <= 0:
            raise ValueError("the ring is full")
        self.write_slot(self.req_prod_pvt, data)
        self.req_prod_pvt = (self.req_prod_pvt + 1) & _M32

    def push_requests(self) -> bool:
        """Publish the requests written; True if the backend must be notified."""
        old, new = self._req_pushed, self.req_prod_pvt
        self._set(REQ_PROD, new)
        self._req_pushed = new
        self._fence()
        event = self._get(REQ_EVENT)
        return (new - event) & _M32 < (new - old) & _M32

    def take_responses(self) -> list[bytes]:
        prod = self._get(RSP_PROD)
        count = (prod - self.rsp_cons) & _M32
        if count > (self.req_prod_pvt - self.rsp_cons) & _M32:
            raise RingError(f"rsp_prod {prod} is ahead of the requests")
        out = [self.read_slot(self.rsp_cons + i) for i in range(count)]
        self.rsp_cons = (self.rsp_cons + count) & _M32
        return out

    def final_check_for_responses(self) -> bool:
        if (self._get(RSP_PROD) - self.rsp_cons) & _M32:
            return True
        self._set(RSP_EVENT, self.rsp_cons + 1)
        self._fence()
        return (self._get(RSP_PROD) - self.rsp_cons) & _M32 > 0
