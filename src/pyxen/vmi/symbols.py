"""Addresses of a guest image's symbols, for tools that break or watch by name."""

from __future__ import annotations

import subprocess
from pathlib import Path


def elf_symbol(elf: Path, name: str) -> int:
    """The value of symbol ``name`` in ``elf`` (read with binutils' nm); LookupError
    if the image has no such symbol."""
    out = subprocess.run(["nm", str(elf)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise LookupError(f"no symbol {name!r} in {elf}")
