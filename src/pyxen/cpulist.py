"""Linux's CPU-list syntax ("0-3,6"), shared by the hypervisor and the toolstack.

A leaf module on purpose: client commands parse CPU lists in xl.cfg files
without importing the schedulers.
"""

from __future__ import annotations

import os

#: CPU numbers are below this (Linux's largest NR_CPUS on x86 is 8192; the control
#: protocol takes CPUs 0..4095).  Checked before a range is expanded, so
#: "0-4000000000" is an error at once rather than four billion set entries.
MAX_CPUS = 4096


def parse_cpu_list(text: str, all_cpus: int | None = None) -> list[int]:
    """'0-3,6' -> [0, 1, 2, 3, 6]; ValueError with the reason on bad input.

    As in xl.cfg, "all" stands for CPUs 0..all_cpus-1 (the host's CPUs by
    default) and an item prefixed with "^" is taken out: "all,^1", "0-3,^2".
    """
    cpus: set[int] = set()
    excluded: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"empty item in CPU list '{text}'")
        if part == "all":
            cpus.update(range(all_cpus or os.cpu_count() or 1))
            continue
        target = cpus
        if part.startswith("^"):
            target, part = excluded, part[1:]
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"'{part}' is not a CPU number or range (like 0-3)")
        first, last = int(low), int(high) if sep else int(low)
        if last >= MAX_CPUS:
            raise ValueError(f"CPU {last} in '{part}' is beyond the last CPU number pyxen "
                             f"takes ({MAX_CPUS - 1})")
        if last < first:
            raise ValueError(f"range '{part}' ends before it starts")
        target.update(range(first, last + 1))
    chosen = sorted(cpus - excluded)
    if not chosen:
        raise ValueError(f"CPU list '{text}' leaves no CPU")
    return chosen
