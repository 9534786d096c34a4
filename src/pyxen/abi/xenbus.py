"""Xenbus device states: mirrors ``xen/include/public/io/xenbus.h`` (Xen 4.12).

Each end publishes its state as a decimal string in its ``state`` node.
"""

from __future__ import annotations

from enum import IntEnum


class XenbusState(IntEnum):
    """``enum xenbus_state`` (``XenbusState*`` without the prefix)."""

    Unknown = 0
    Initialising = 1
    InitWait = 2
    Initialised = 3
    Connected = 4
    Closing = 5
    Closed = 6
    Reconfiguring = 7
    Reconfigured = 8
