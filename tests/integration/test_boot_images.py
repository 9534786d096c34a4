"""Kernel images with the layouts real guests have, booted on KVM.

Solo5's kernels carry a zero-size PT_LOAD at address 0; some kernels have
their Xen notes only in a SHT_NOTE section; some load data at physical 0.
The parser handles each (tests/unit/test_elf.py); these tests boot such
images end to end.  The image here is hand-assembled 32-bit code: it prints
the bytes it finds at physical address 0 on port 0xE9 and halts with
interrupts off (Xen powers the domain off).
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from unit.elfgen import make_elf  # tests/ is on sys.path: integration is a package there

from .conftest import _env

XEN_ELFNOTE_PHYS32_ENTRY = 18
ENTRY = 0x100000
MARKER = b"LOW0\n"
# xor ebx,ebx; 1: mov al,[ebx]; out 0xe9,al; inc ebx; cmp ebx,5; jne 1b; cli; hlt
CODE = bytes.fromhex("31db" "8a03" "e6e9" "43" "83fb05" "75f6" "fa" "f4")


def _boot(tmp_path: Path, image: bytes) -> subprocess.CompletedProcess[str]:
    kernel = tmp_path / "edge.elf"
    kernel.write_bytes(image)
    cfg = tmp_path / "edge.cfg"
    cfg.write_text(f'name = "edge"\ntype = "pvh"\nkernel = "{kernel}"\nmemory = 8\n')
    return subprocess.run([sys.executable, "-m", "pyxen", "create", "-F", str(cfg)],
                          capture_output=True, text=True, env=_env(), cwd=tmp_path,
                          stdin=subprocess.DEVNULL, timeout=120, check=False)


@pytest.mark.kvm
@pytest.mark.parametrize("notes_in", ["phdr", "shdr"])
def test_zero_size_load_at_0_data_at_physical_0_and_notes(tmp_path: Path, notes_in: str) -> None:
    image = make_elf(
        cls=32, machine=3,
        segments=[(0, b"", 0),                        # Solo5's empty PT_LOAD at 0
                  (0, MARKER, 0x1000),                # data at physical 0
                  (ENTRY, CODE, 0x1000)],
        notes=[(XEN_ELFNOTE_PHYS32_ENTRY, struct.pack("<I", ENTRY))],
        notes_in=notes_in, entry=ENTRY)
    r = _boot(tmp_path, image)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(d1) LOW0" in r.stdout, r.stdout + r.stderr
