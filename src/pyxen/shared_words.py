"""u32 words in memory another CPU reads while we write it (ring indices).

A ring index in a page shared with a running guest (or another process)
must change with one store: the other side may load it at any instant.
``struct.Struct.pack_into`` does not do that: CPython's ``s_pack_internal``
first ``memset``s the destination to zero (for the padding bytes) and only
then stores the value, so a reader on another CPU can see a transient 0.
For a xenstore ring that is ``req_cons`` or ``rsp_prod`` jumping back to 0
(prod - cons above the ring size: the guest declared the ring broken,
reconnected and lost its watches; a rare CI flake until this was found).

:class:`SharedWords` goes through a memoryview cast to the native ``"I"``
format instead: CPython stores one element with a fixed-size ``memcpy`` of
an ``unsigned int`` (one aligned 4-byte move, atomic on x86), and loads one
the same way.  Native order is little-endian on every host pyxen runs on
(KVM on x86-64), which the module checks when imported.
"""

from __future__ import annotations

import struct
import sys

if struct.calcsize("I") != 4 or sys.byteorder != "little":  # pragma: no cover - x86-64 only
    raise ImportError("pyxen.shared_words needs a little-endian host with a 4-byte unsigned int")

_M32 = 0xFFFF_FFFF


class SharedWords:
    """``count`` u32 words at byte ``offset`` (4-aligned) of a byte memoryview,
    each read and written whole.  Index by word number."""

    def __init__(self, view: memoryview, offset: int, count: int) -> None:
        if offset % 4 or offset < 0 or count <= 0 or offset + 4 * count > view.nbytes:
            raise ValueError(f"{count} words at offset {offset} do not fit a "
                             f"{view.nbytes}-byte view 4-aligned")
        self._words = view.cast("B")[offset:offset + 4 * count].cast("I")

    def __getitem__(self, index: int) -> int:
        value: int = self._words[index]
        return value

    def __setitem__(self, index: int, value: int) -> None:
        self._words[index] = value & _M32

    def release(self) -> None:
        """Drop the view (the underlying buffer can then be closed)."""
        self._words.release()


def load_u32(view: memoryview, offset: int) -> int:
    """The u32 at byte ``offset`` (4-aligned) of a byte memoryview, in one load."""
    value: int = view[offset:offset + 4].cast("I")[0]
    return value


def store_u32(view: memoryview, offset: int, value: int) -> None:
    """Store the u32 at byte ``offset`` (4-aligned) of a byte memoryview in one
    store.  The temporary views are gone when this returns (no export is
    left on the buffer)."""
    view[offset:offset + 4].cast("I")[0] = value & _M32
