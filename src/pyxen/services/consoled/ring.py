"""The PV console ring (``struct xencons_interface``, §10) seen from the backend.

The guest produces ``out`` (2048 bytes) and consumes ``in`` (1024 bytes);
the backend does the reverse.  Indices are free-running u32; the byte for
index i is at ``i & (size - 1)``.  The guest owns out_prod and in_cons, so
the backend never trusts them beyond one ring's worth: a producer index more
than a ring ahead of the consumer is a broken or hostile guest, and the
backend then takes only one ring of data (and resynchronises).
"""

from __future__ import annotations

from pyxen.shared_words import load_u32, store_u32

IN_OFFSET, IN_SIZE = 0, 1024
OUT_OFFSET, OUT_SIZE = 1024, 2048
IN_CONS, IN_PROD, OUT_CONS, OUT_PROD = 3072, 3076, 3080, 3084
_M32 = 0xFFFF_FFFF


class ConsoleRing:
    def __init__(self, page: memoryview) -> None:
        if len(page) < 4096:
            raise ValueError("a console ring needs a whole page")
        self.page = page

    def _get(self, offset: int) -> int:
        return load_u32(self.page, offset)

    def _set(self, offset: int, value: int) -> None:
        store_u32(self.page, offset, value)  # one store: pack_into zeroes first

    def read_output(self) -> bytes:
        """Take what the guest wrote (advances out_cons)."""
        cons, prod = self._get(OUT_CONS), self._get(OUT_PROD)
        pending = (prod - cons) & _M32
        if pending == 0:
            return b""
        if pending > OUT_SIZE:  # the guest broke the protocol: take one ring's worth
            cons = (prod - OUT_SIZE) & _M32
            pending = OUT_SIZE
        out = bytearray()
        while pending:
            start = cons & (OUT_SIZE - 1)
            chunk = min(pending, OUT_SIZE - start)
            out += self.page[OUT_OFFSET + start : OUT_OFFSET + start + chunk]
            cons = (cons + chunk) & _M32
            pending -= chunk
        self._set(OUT_CONS, cons)
        return bytes(out)

    def write_input(self, data: bytes) -> int:
        """Give the guest keyboard input; returns how many bytes fitted."""
        cons, prod = self._get(IN_CONS), self._get(IN_PROD)
        used = (prod - cons) & _M32
        if used > IN_SIZE:  # hostile in_cons: treat the ring as full
            return 0
        room = IN_SIZE - used
        done = 0
        while done < len(data) and room:
            start = prod & (IN_SIZE - 1)
            chunk = min(room, IN_SIZE - start, len(data) - done)
            self.page[IN_OFFSET + start : IN_OFFSET + start + chunk] = data[done : done + chunk]
            prod = (prod + chunk) & _M32
            done += chunk
            room -= chunk
        self._set(IN_PROD, prod)
        return done
