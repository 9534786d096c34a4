"""Consoles: mirrors ``xen/include/public/io/console.h`` and the
``CONSOLEIO_*`` part of ``xen/include/public/xen.h`` (Xen 4.12).
"""

from __future__ import annotations

from enum import IntEnum

from pyxen.abi._types import XenStruct, char, uint32_t


class ConsoleIo(IntEnum):
    """``CONSOLEIO_*`` sub-commands of hypercall 18."""

    write = 0
    read = 1


# Bytes written to this I/O port go to the Xen console ("port E9 hack").
XEN_HVM_DEBUGCONS_IOPORT = 0xE9

XENCONS_IN_SIZE = 1024
XENCONS_OUT_SIZE = 2048

XENCONS_RING_IDX = uint32_t


class xencons_interface(XenStruct):
    """PV console ring (3088 bytes at the start of the page)."""

    _fields_ = [
        ("in", char * XENCONS_IN_SIZE),  # backend -> guest
        ("out", char * XENCONS_OUT_SIZE),  # guest -> backend
        ("in_cons", XENCONS_RING_IDX),
        ("in_prod", XENCONS_RING_IDX),
        ("out_cons", XENCONS_RING_IDX),
        ("out_prod", XENCONS_RING_IDX),
    ]


def MASK_XENCONS_IDX(idx: int, ring_size: int) -> int:
    """Array index of free-running counter ``idx`` in a ring of ``ring_size``."""
    return idx & (ring_size - 1)
