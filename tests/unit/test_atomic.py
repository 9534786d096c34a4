"""The machine-code atomic routines: bytes match their assembly, semantics match Xen's."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pyxen.hv import atomic


def test_code_matches_the_assembly(tmp_path: Path) -> None:
    gas = shutil.which("as")
    objcopy = shutil.which("objcopy")
    if gas is None or objcopy is None:
        pytest.skip("GNU as/objcopy are not installed")
    src = tmp_path / "atomic.S"
    src.write_text(".intel_syntax noprefix\n.text\n" + atomic.ASSEMBLY)
    obj = tmp_path / "atomic.o"
    binary = tmp_path / "atomic.bin"
    subprocess.run([gas, "--64", "-o", str(obj), str(src)], check=True)
    subprocess.run([objcopy, "-O", "binary", "-j", ".text", str(obj), str(binary)], check=True)
    assert binary.read_bytes() == atomic.CODE
    labels = [line.split(":")[0] for line in atomic.ASSEMBLY.splitlines()
              if line and not line[0].isspace() and not line.startswith("#")
              and not re.match(r"\d+:", line)]
    assert labels == list(atomic.ENTRY_POINTS)


class Page:
    """A fake shared_info-like area: pending at 0, mask at 512, selector at 1024, upcall at 1040."""

    def __init__(self) -> None:
        self.buf = (ctypes.c_uint64 * 132)()
        self.base = ctypes.addressof(self.buf)

    def set_pending(self, port: int) -> int:
        return int(atomic.set_pending(self.base, self.base + 512, self.base + 1024,
                                      self.base + 1040, port, port // 64))

    def unmask(self, port: int) -> int:
        return int(atomic.unmask(self.base, self.base + 512, self.base + 1024,
                                 self.base + 1040, port, port // 64))

    def word(self, offset: int) -> int:
        return int(self.buf[offset // 8])


def test_set_pending_follows_the_2_level_rule() -> None:
    p = Page()
    assert p.set_pending(70) == atomic.RAISE_UPCALL
    assert p.word(8) == 1 << 6  # pending bit 70
    assert p.word(1024) == 1 << 1  # selector bit 1
    assert p.word(1040) & 0xFF == 1  # upcall_pending
    assert p.set_pending(70) == atomic.NO_CHANGE  # no new edge
    assert p.set_pending(71) == atomic.NO_UPCALL  # selector already set


def test_masked_port_becomes_pending_without_upcall_until_unmasked() -> None:
    p = Page()
    p.buf[64 + 0] = 1 << 5  # mask port 5
    assert p.set_pending(5) == atomic.NO_UPCALL
    assert p.word(1024) == 0 and p.word(1040) == 0
    assert p.unmask(5) == atomic.RAISE_UPCALL
    assert p.word(512) == 0 and p.word(1024) == 1 and p.word(1040) == 1
    assert p.unmask(5) == atomic.NO_CHANGE  # not masked any more


def test_bit_helpers_and_tsc() -> None:
    buf = (ctypes.c_uint64 * 4)()
    base = ctypes.addressof(buf)
    assert atomic.test_and_set_bit(base, 130) == 0
    assert atomic.test_and_set_bit(base, 130) == 1
    assert buf[2] == 1 << 2
    assert atomic.test_and_clear_bit(base, 130) == 1
    assert atomic.test_and_clear_bit(base, 130) == 0
    a, b = atomic.read_tsc(), atomic.read_tsc()
    assert b >= a > 0


def test_cmpxchg32_stores_only_on_a_match() -> None:
    word = (ctypes.c_uint32 * 2)(0x0001_0009, 0xDEAD_BEEF)
    base = ctypes.addressof(word)
    assert atomic.cmpxchg32(base, 0x0001_0009, 0x0001_0019) == 0x0001_0009
    assert word[0] == 0x0001_0019
    # A mismatch returns what is there and leaves it alone.
    assert atomic.cmpxchg32(base, 0x0001_0009, 0) == 0x0001_0019
    assert word[0] == 0x0001_0019
    assert word[1] == 0xDEAD_BEEF  # a 32-bit access only


def test_fetch_or16_and_fetch_and16_touch_one_16_bit_word() -> None:
    words = (ctypes.c_uint16 * 3)(0xAAAA, 0x0001, 0x5555)
    base = ctypes.addressof(words)
    assert atomic.fetch_or16(base + 2, 0x0018) == 0x0001
    assert words[1] == 0x0019
    assert atomic.fetch_and16(base + 2, 0xFFFF & ~0x0008) == 0x0019
    assert words[1] == 0x0011
    assert (words[0], words[2]) == (0xAAAA, 0x5555)
    # The last 16-bit word of a page: nothing beyond it is touched.
    page = (ctypes.c_uint16 * 2048)()
    last = ctypes.addressof(page) + 4094
    assert atomic.fetch_or16(last, 0x8000) == 0
    assert page[2047] == 0x8000


def test_cmpxchg64_and_cmpxchg128() -> None:
    words = (ctypes.c_uint64 * 4)(5, 6, 7, 8)
    base = ctypes.addressof(words)
    assert atomic.cmpxchg64(base, 5, 50) == 5
    assert atomic.cmpxchg64(base, 5, 60) == 50  # no match: left alone
    assert list(words) == [50, 6, 7, 8]
    aligned = (base + 15) & ~15
    index = (aligned - base) // 8
    words[index], words[index + 1] = 1, 2
    stored, found = atomic.cmpxchg128(aligned, 1 | 2 << 64, 3 | 4 << 64)
    assert (stored, found) == (True, 1 | 2 << 64)
    assert (words[index], words[index + 1]) == (3, 4)
    stored, found = atomic.cmpxchg128(aligned, 0, 9)
    assert (stored, found) == (False, 3 | 4 << 64)
    with pytest.raises(ValueError):
        atomic.cmpxchg128(aligned + 8, 0, 0)
