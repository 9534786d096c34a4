"""Typed guest addresses.

``Gpa`` (guest-physical address), ``Gfn`` (guest frame number) and ``Gla``
(guest linear address) are distinct types for mypy and plain ints at run
time, so the hot path pays nothing for them.
"""

from __future__ import annotations

from typing import NewType

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = PAGE_SIZE - 1

Gpa = NewType("Gpa", int)
Gfn = NewType("Gfn", int)
Gla = NewType("Gla", int)


def gfn_of(gpa: Gpa) -> Gfn:
    return Gfn(gpa >> PAGE_SHIFT)


def gpa_of(gfn: Gfn, offset: int = 0) -> Gpa:
    return Gpa((gfn << PAGE_SHIFT) | offset)
