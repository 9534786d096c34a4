"""Linux's CPU-list syntax ("0-3,6"), shared by the hypervisor and the toolstack.

A leaf module on purpose: client commands parse CPU lists in xl.cfg files
without importing the schedulers.
"""

from __future__ import annotations


def parse_cpu_list(text: str) -> list[int]:
    """'0-3,6' -> [0, 1, 2, 3, 6]; ValueError with the reason on bad input."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"empty item in CPU list '{text}'")
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"'{part}' is not a CPU number or range (like 0-3)")
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise ValueError(f"range '{part}' ends before it starts")
        cpus.update(range(first, last + 1))
    return sorted(cpus)
