"""Tests for pyxen.hv.hypercall_page: the 128 stubs that exit to pyxen through port 0xEA."""

from __future__ import annotations

import pytest

from pyxen.hv.hypercall_page import HYPERCALL_PORT, NR_STUBS, STUB_SIZE, fill_page, stub

PAGE = 4096
FILL = 0xCC


def filled_page() -> bytearray:
    page = bytearray([FILL]) * PAGE
    fill_page(memoryview(page))
    return page


def test_constants() -> None:
    assert HYPERCALL_PORT == 0xEA
    assert STUB_SIZE == 32
    assert NR_STUBS == 128
    assert NR_STUBS * STUB_SIZE == PAGE


@pytest.mark.parametrize(("nr", "expect"), [
    (0, "b8 00000000 e7 ea c3"),
    (1, "b8 01000000 e7 ea c3"),
    (17, "b8 11000000 e7 ea c3"),  # xen_version
    (22, "b8 16000000 e7 ea c3"),
    (24, "b8 18000000 e7 ea c3"),  # vcpu_op: right after iret
    (29, "b8 1d000000 e7 ea c3"),
    (127, "b8 7f000000 e7 ea c3"),
])
def test_stub_bytes(nr: int, expect: str) -> None:
    code = bytes.fromhex(expect.replace(" ", ""))
    assert stub(nr) == code
    page = filled_page()
    start = nr * STUB_SIZE
    assert page[start : start + 8] == code
    assert page[start + 8 : start + STUB_SIZE] == bytes([FILL]) * (STUB_SIZE - 8)


def test_iret_stub_is_ud2() -> None:
    assert stub(23) == b"\x0f\x0b"
    page = filled_page()
    assert page[23 * STUB_SIZE : 24 * STUB_SIZE] == b"\x0f\x0b" + bytes([FILL]) * 30


def test_all_stubs_and_nothing_else() -> None:
    page = filled_page()
    assert len(page) == PAGE
    for nr in range(NR_STUBS):
        slot = page[nr * STUB_SIZE : (nr + 1) * STUB_SIZE]
        code = b"\x0f\x0b" if nr == 23 else b"\xb8" + bytes([nr, 0, 0, 0]) + b"\xe7\xea\xc3"
        assert slot == code + bytes([FILL]) * (STUB_SIZE - len(code)), nr


def test_fill_page_leaves_tails_as_they_were() -> None:
    # Any prior content of the tails survives, not only 0xCC.
    page = bytearray(range(256)) * 16
    before = bytes(page)
    fill_page(memoryview(page))
    for nr in range(NR_STUBS):
        n = 2 if nr == 23 else 8
        s = nr * STUB_SIZE
        assert page[s + n : s + STUB_SIZE] == before[s + n : s + STUB_SIZE]


def test_disassemble_one_stub() -> None:
    # Stub 17 (xen_version), decoded by hand:
    #   B8 id        mov eax, imm32     (opcode B8+rd, rd = 0 = eax; imm32 little-endian)
    #   E7 ib        out imm8, eax      (32-bit OUT to the port in the immediate)
    #   C3           ret (near)
    code = stub(17)
    assert len(code) == 8
    assert code[0] == 0xB8  # mov eax, imm32
    assert int.from_bytes(code[1:5], "little") == 17  # the hypercall number
    assert code[5] == 0xE7  # out imm8, eax
    assert code[6] == 0xEA  # port 0xEA
    assert code[7] == 0xC3  # ret
