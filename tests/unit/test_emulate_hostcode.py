"""The machine code of the emulator (host probes, stub frame) matches its assembly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pyxen.hv.emulate import hostcode


def test_code_matches_the_assembly(tmp_path: Path) -> None:
    gas, objcopy = shutil.which("as"), shutil.which("objcopy")
    if gas is None or objcopy is None:
        pytest.skip("GNU as/objcopy are not installed")
    src = tmp_path / "host.S"
    src.write_text(".intel_syntax noprefix\n.text\n" + hostcode.ASSEMBLY)
    obj, binary = tmp_path / "host.o", tmp_path / "host.bin"
    subprocess.run([gas, "--64", "-o", str(obj), str(src)], check=True)
    subprocess.run([objcopy, "-O", "binary", "-j", ".text", str(obj), str(binary)], check=True)
    assert binary.read_bytes() == hostcode.CODE
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True)
    labels = {}
    consts = {}
    for line in symbols.stdout.splitlines():
        value, kind, name = line.split()
        (labels if kind == "t" else consts)[name] = int(value, 16)
    assert labels == hostcode.ENTRY_POINTS
    assert consts == {"CTX_RFLAGS": hostcode.CTX_RFLAGS, "CTX_RFBM": hostcode.CTX_RFBM,
                      "CTX_GUEST": hostcode.CTX_GUEST, "CTX_HOST": hostcode.CTX_HOST}


def test_layout_of_the_context_block() -> None:
    assert hostcode.CTX_GUEST % 64 == 0 and hostcode.CTX_HOST % 64 == 0
    assert hostcode.CTX_SCRATCH + hostcode.SCRATCH_SIZE <= hostcode.CTX_GUEST
    assert hostcode.CTX_GUEST + hostcode.AREA_SIZE <= hostcode.CTX_HOST
    assert len(hostcode.STUB_ENTER) + 15 + len(hostcode.STUB_LEAVE) <= hostcode.StubArena.SLOT


def test_probes() -> None:
    _eax, ebx, ecx, edx = hostcode.host_cpuid(0)
    vendor = (ebx.to_bytes(4, "little") + edx.to_bytes(4, "little")
              + ecx.to_bytes(4, "little"))
    assert vendor in (b"GenuineIntel", b"AuthenticAMD", b"HygonGenuine")
    assert hostcode.host_xcr0() & 3 in (0, 3)
    assert hostcode.host_mxcsr_mask() & 0xFFBF == 0xFFBF
    assert len(hostcode.host_fxsave()) == 512


def test_code_page_is_not_writable_outside_install() -> None:
    arena = hostcode.StubArena()
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start <= arena.code.base < end:
                assert line.split()[1].startswith("r-x")
                break
        else:
            pytest.fail("the stub page is not mapped")
