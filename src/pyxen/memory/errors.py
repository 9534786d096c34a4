"""Errors of the guest-memory layer.

They describe a bad guest address; the hypervisor turns them into -EFAULT
(or a count of extents done) and never lets them escape to a vCPU loop.
"""

from __future__ import annotations


class MemoryFault(Exception):
    """A guest-physical access touched a frame that is not populated."""

    def __init__(self, gpa: int) -> None:
        super().__init__(f"guest-physical address {gpa:#x} is not populated")
        self.gpa = gpa


class PageFault(Exception):
    """A guest linear address did not translate (not present, protection, non-canonical)."""

    def __init__(self, gla: int, reason: str) -> None:
        super().__init__(f"guest linear address {gla:#x}: {reason}")
        self.gla = gla
        self.reason = reason


GuestFault = (MemoryFault, PageFault)


class SlotsExhausted(Exception):
    """A p2m change would need more KVM memory slots than its budget allows.

    Raised before anything changed.  Xen's p2m fails the same way when it
    cannot allocate a page-table page: the hypercall gets -ENOMEM, or a
    reservation op stops with the extents done so far."""

    def __init__(self, needed: int, budget: int) -> None:
        super().__init__(f"the p2m would need {needed} KVM memory slots; "
                         f"its budget is {budget}")
        self.needed = needed
        self.budget = budget
