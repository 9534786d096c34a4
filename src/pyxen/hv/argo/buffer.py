"""The memory behind one Argo ring, as host addresses the hypervisor copies into.

A ring's pages are fixed when it is registered: for a guest, the pool pages
behind the gfns it named, each pinned (``GrantTable.hold_page``, Xen's
get_page) so that the guest can balloon a page out or map something over
its frame without the page being reused while the ring holds it (the ring
then goes on writing into a page the guest no longer sees, as in Xen); for
domain 0 (``pyxen.argo``), a shared memory file mapped both here and in the
client.  Either way a ``RingBuffer`` is a list of *runs*: (ring byte
offset, host address, length), adjacent pages merged, so a copy into a
16 MiB ring of contiguous pages is one memmove.

Copies go through ``ctypes.memmove``, which releases the GIL: a large copy
into one ring does not hold up other threads.  Addresses stay valid while
the owner's memory is mapped; the owner's teardown removes its rings under
each ring's lock before its memory goes (see core.py).
"""

from __future__ import annotations

import ctypes
from bisect import bisect_right
from collections.abc import Sequence

from pyxen.hv.argo.ring import PAGE_SIZE, RING_HEADER

_memmove = ctypes.memmove


class RingBuffer:
    """Ring memory: ``pages`` host addresses of 4 KiB pages, in ring order."""

    __slots__ = ("_addrs", "_lens", "_starts", "header")

    def __init__(self, pages: Sequence[int]) -> None:
        starts: list[int] = []
        addrs: list[int] = []
        lens: list[int] = []
        for i, addr in enumerate(pages):
            if addrs and addrs[-1] + lens[-1] == addr:
                lens[-1] += PAGE_SIZE
            else:
                starts.append(i * PAGE_SIZE)
                addrs.append(addr)
                lens.append(PAGE_SIZE)
        self._starts = starts  # buffer offset where each run begins
        self._addrs = addrs
        self._lens = lens
        self.header = pages[0]  # the xen_argo_ring header

    @property
    def rx_ptr(self) -> int:
        """The receiver's read pointer, as it is now (untrusted)."""
        return ctypes.c_uint32.from_address(self.header).value

    @property
    def tx_ptr(self) -> int:
        return ctypes.c_uint32.from_address(self.header + 4).value

    @tx_ptr.setter
    def tx_ptr(self, value: int) -> None:
        ctypes.c_uint32.from_address(self.header + 4).value = value

    def write(self, ring_offset: int, src: int, size: int) -> None:
        """Copy ``size`` bytes from host address ``src`` to data byte ``ring_offset``
        (which the caller has checked lies inside the ring, with ``size``)."""
        off = RING_HEADER + ring_offset
        i = bisect_right(self._starts, off) - 1
        while size > 0:
            within = off - self._starts[i]
            n = min(size, self._lens[i] - within)
            _memmove(self._addrs[i] + within, src, n)
            src += n
            off += n
            size -= n
            i += 1

    def write_bytes(self, ring_offset: int, data: bytes) -> None:
        """Write ``data`` (a message header: it never crosses a page) at ``ring_offset``."""
        off = RING_HEADER + ring_offset
        i = bisect_right(self._starts, off) - 1
        _memmove(self._addrs[i] + off - self._starts[i], data, len(data))

    def read(self, ring_offset: int, size: int) -> bytes:
        """``size`` data bytes from ``ring_offset`` (for tests and the host endpoint)."""
        out = bytearray(size)
        dst = (ctypes.c_char * size).from_buffer(out) if size else None
        off = RING_HEADER + ring_offset
        i = bisect_right(self._starts, off) - 1
        pos = 0
        while pos < size:
            within = off - self._starts[i]
            n = min(size - pos, self._lens[i] - within)
            _memmove(ctypes.addressof(dst) + pos, self._addrs[i] + within, n)  # type: ignore[arg-type]
            pos += n
            off += n
            i += 1
        del dst
        return bytes(out)
