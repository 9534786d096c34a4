"""Counters of calls the fuzz targets make into pyxen (reported by bench/fuzz.py)."""

from __future__ import annotations

from collections import Counter

CALLS: Counter[str] = Counter()


def count(target: str, n: int = 1) -> None:
    CALLS[target] += n
