"""Port 0x92, "system control port A": fast A20 and fast reset.

Bit 1 (A20 gate) is stored and reads back; it changes nothing (the guest's
memory has no 1 MiB wrap-around under KVM, as under Xen).  Bit 0 reads 0;
writing it as 1 resets the machine: ``reset()`` on the host (Xen hands the
port to the device model, whose reset request reboots the domain).  Other
bits are stored.  No locking: the ``Platform`` lock is held.
"""

from __future__ import annotations

from collections.abc import Callable

FAST_RESET = 1 << 0
A20 = 1 << 1


class Port92:
    def __init__(self, reset: Callable[[], None]) -> None:
        self._reset = reset
        self.value = A20  # A20 enabled, as firmware leaves it

    def read(self) -> int:
        return self.value & ~FAST_RESET

    def write(self, value: int) -> None:
        self.value = value & 0xFF & ~FAST_RESET
        if value & FAST_RESET:
            self._reset()
