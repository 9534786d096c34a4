"""The stealth breakpoint counter against a guest that checksums its own code.

guests/tests/selfsum.c keeps ``bp_target`` alone on its code page, reads
that page as data before every call and fails if it ever changes or if
bp_target's first byte reads as 0xCC.  pyxen.vmi.stealth puts an int3 at
bp_target in a shadow frame of an altp2m view: every call must be counted,
and the guest must checksum the original bytes (the ELF's), never the
shadow's.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pyxen.abi.xen import ShutdownReason
from pyxen.boot.elf import parse_elf
from pyxen.vmi import Vmi
from pyxen.vmi.stealth import StealthBreakpoints
from pyxen.vmi.symbols import elf_symbol

from .domains import GUEST_BUILD, Host

ELF = GUEST_BUILD / "selfsum.elf"
TIMEOUT = 120
M64 = (1 << 64) - 1


def page_csum(page: bytes) -> int:
    """selfsum.c's page checksum (defined at the top of guests/tests/selfsum.c)."""
    h = 0xCBF29CE484222325
    for k in range(0, len(page), 8):
        h = ((h ^ int.from_bytes(page[k:k + 8], "little")) * 0x100000001B3) & M64
        h ^= h >> 29
    return h


def elf_page(address: int) -> bytes:
    """The 4 KiB page at ``address`` as the ELF file has it."""
    for seg in parse_elf(ELF.read_bytes()).segments:
        if seg.vaddr <= address and address + 4096 <= seg.vaddr + len(seg.data):
            off = address - seg.vaddr
            return seg.data[off:off + 4096]
    raise LookupError(hex(address))


def bp_target() -> int:
    return elf_symbol(ELF, "bp_target")


@pytest.fixture
def host() -> Iterator[Host]:
    if not ELF.exists():
        pytest.skip("guests/build/selfsum.elf not built (make -C guests)")
    h = Host()
    yield h
    h.close()


def _summary(text: str) -> dict[str, int]:
    m = re.search(r"selfsum: n=(\d+) calls=(\d+) sum=(\d+) csum=0x([0-9a-f]+) "
                  r"first=0x([0-9a-f]+) changed=(\d+)", text)
    assert m is not None, text
    n, calls, total, csum, first, changed = m.groups()
    return {"n": int(n), "calls": int(calls), "sum": int(total), "csum": int(csum, 16),
            "first": int(first, 16), "changed": int(changed)}


@pytest.mark.kvm
def test_the_guest_counts_every_hit_and_sees_its_own_code(host: Host) -> None:
    n = 20
    target = bp_target()
    assert target & 0xFFF == 0  # the guest's layout: bp_target opens its page
    d = host.build("selfsum", f"n={n}", altp2m=2)
    with Vmi(d) as vmi:
        bps = StealthBreakpoints(vmi)
        gpa = bps.add(target)
        shadow = vmi.read_pa(bps._shadows[gpa >> 12].frame << 12, 4096)
        assert shadow[0] == 0xCC  # the int3 is there, in the frame the view executes
        d.start()
        assert d.wait(TIMEOUT) == ShutdownReason.poweroff, host.describe()
        assert bps.hits == {gpa: n}, host.describe()
        bps.close()
    assert host.result(d.domid, "selfsum") == "PASS", host.describe()
    got = _summary(host.output())
    assert (got["n"], got["calls"], got["changed"]) == (n, n, 0)
    original = elf_page(target)
    assert got["first"] == original[0] != 0xCC
    assert got["csum"] == page_csum(original) != page_csum(shadow)


@pytest.mark.kvm
def test_without_the_tool_the_checksum_is_the_elf_page(host: Host) -> None:
    """The control: the same guest alone reports the same checksum (so the check
    above would fail if the shadow frame ever showed through)."""
    d = host.build("selfsum", "n=2")
    d.start()
    assert d.wait(TIMEOUT) == ShutdownReason.poweroff, host.describe()
    assert host.result(d.domid, "selfsum") == "PASS", host.describe()
    assert _summary(host.output())["csum"] == page_csum(elf_page(bp_target()))


@pytest.mark.kvm
def test_command_line_tool() -> None:
    if not ELF.exists():
        pytest.skip("guests/build/selfsum.elf not built (make -C guests)")
    r = subprocess.run([sys.executable, "-m", "pyxen.vmi.stealth", str(ELF),
                        "--symbol", "bp_target", "--cmdline", "n=3", "--timeout", "100"],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stealth: bp_target hit 3 times" in r.stdout, r.stdout + r.stderr
    assert "RESULT selfsum: PASS" in r.stdout, r.stdout + r.stderr
