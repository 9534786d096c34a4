"""Planning where a PVH kernel and its boot data go in guest RAM.

This module only decides and checks; it writes no guest memory.  The caller
(the domain builder) copies each planned segment's ``data`` to ``paddr`` and
zeroes up to ``memsz``, then places modules and the start info with
:func:`place_after`, starting from :func:`image_end`.

Checks, all against the guest's populated RAM ranges (see
:mod:`pyxen.boot.e820`):

* the image is a PVH kernel (it has a ``XEN_ELFNOTE_PHYS32_ENTRY`` note);
* each segment ``[paddr, paddr + memsz)`` lies inside a single RAM range
  (a segment straddling the VGA or MMIO hole cannot be loaded);
* the PVH entry point lies in the file-backed part of a segment, so the
  first instruction executed comes from the image rather than from BSS.

``ram`` arguments are sequences of ``[start, end)`` pairs, as returned by
:func:`pyxen.boot.e820.guest_ram_ranges`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyxen.boot.elf import ElfImage, Segment
from pyxen.boot.errors import BootError

PAGE_SIZE = 4096


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def _describe(ram: Sequence[tuple[int, int]]) -> str:
    return " ".join(f"[{start:#x}-{end:#x})" for start, end in ram) or "(none)"


def _ram_top(ram: Sequence[tuple[int, int]]) -> int:
    return max((end for _start, end in ram), default=0)


def plan_load(image: ElfImage, ram: Sequence[tuple[int, int]], name: str) -> list[Segment]:
    """Check that ``image`` can boot as PVH in ``ram`` and return its segments in order."""
    entry = image.notes.phys32_entry
    if entry is None:
        raise BootError(f"{name} is not a PVH kernel: it has no XEN_ELFNOTE_PHYS32_ENTRY note")
    return plan_segments(image, ram, name, entry, "PVH entry point")


def plan_segments(image: ElfImage, ram: Sequence[tuple[int, int]], name: str, entry: int,
                  what: str = "entry point") -> list[Segment]:
    """Check that every segment of ``image`` lies in ``ram`` and ``entry`` in its data."""
    for index, segment in enumerate(image.segments):
        if any(start <= segment.paddr and segment.end <= end for start, end in ram):
            continue
        if segment.end > _ram_top(ram):
            hint = "raise `memory` in the config"
        else:
            hint = "it falls in a hole of the guest memory map; relink the kernel"
        raise BootError(
            f"{name}: segment {index} at [{segment.paddr:#x}, {segment.end:#x}) does not fit "
            f"in guest RAM {_describe(ram)}; {hint}"
        )
    if not any(s.paddr <= entry < s.paddr + len(s.data) for s in image.segments):
        raise BootError(
            f"{name}: {what} {entry:#x} is not inside the file data of any loaded "
            "segment; the image is corrupt"
        )
    return list(image.segments)


def image_end(image: ElfImage) -> int:
    """The first page-aligned address above every segment of ``image``."""
    return _round_up(max(segment.end for segment in image.segments), PAGE_SIZE)


def place_after(end: int, size: int, ram: Sequence[tuple[int, int]], align: int = PAGE_SIZE) -> int:
    """The lowest ``align``-aligned address ``>= end`` where ``size`` bytes fit in one RAM range."""
    if align <= 0 or align & (align - 1):
        raise BootError(f"alignment {align} is not a power of two")
    if end < 0 or size < 0:
        raise BootError(f"cannot place {size:#x} bytes at {end:#x}: negative address or size")
    for start, stop in sorted(ram):
        addr = _round_up(max(end, start), align)
        if addr + size <= stop:
            return addr
    raise BootError(
        f"no room for {size:#x} bytes at or above {end:#x} in guest RAM {_describe(ram)}; "
        "raise `memory` in the config"
    )
