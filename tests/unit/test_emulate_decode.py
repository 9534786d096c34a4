"""Decoding, effective addresses, segmentation and page faults of the instruction
fallback (no KVM)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from emulate_harness import ABSENT, CODE, DATA, RO_PAGE, USER_PAGE, Machine, state32, state64
from iced_x86 import Decoder, Register

from pyxen.hv.emulate.address import LinearMemory, effective_address, linear_address
from pyxen.hv.emulate.decode import decode, reported_bytes
from pyxen.hv.emulate.faults import GuestException, Unsupported
from pyxen.hv.emulate.faults import Vector as V
from pyxen.hv.emulate.state import CR0_PG, RBX, CpuState, Segment
from pyxen.memory import Gfn


@pytest.fixture
def m() -> Iterator[Machine]:
    machine = Machine()
    yield machine
    machine.close()


def data_words(raw: bytes, flags: int = 1) -> tuple[int, ...]:
    """An emulation failure's exit data: flags, then insn_size and the bytes."""
    blob = bytes([len(raw)]) + raw.ljust(15, b"\0")
    return flags, int.from_bytes(blob[:8], "little"), int.from_bytes(blob[8:], "little"), 0


def test_reported_bytes() -> None:
    raw = bytes.fromhex("0fae14254ab01000")
    assert reported_bytes(data_words(raw)) == raw
    assert reported_bytes(data_words(raw, flags=0)) is None
    assert reported_bytes(data_words(b"")) is None
    assert reported_bytes((1,)) is None
    assert reported_bytes((1, 0xFF, 0)) is not None  # size clamped to 15


def test_decode_prefers_the_reported_bytes(m: Machine) -> None:
    st = state64()
    mem = LinearMemory(m.memory, st)
    m.put(CODE, bytes.fromhex("90" * 8))
    d = decode(bytes.fromhex("0f5800"), mem, st)
    assert (d.text, d.raw, d.bitness) == ("addps xmm0,[rax]", bytes.fromhex("0f5800"), 64)
    assert "0f 58 00" in d.describe()
    # Truncated report: fetched from guest memory instead.
    m.put(CODE, bytes.fromhex("f2480f2ac8"))
    d = decode(bytes.fromhex("f248"), mem, st)
    assert d.raw == bytes.fromhex("f2480f2ac8")


def test_decode_in_each_mode(m: Machine) -> None:
    code = bytes.fromhex("0fae15f0ffffff")
    m.put(CODE, code)
    d64 = decode(None, LinearMemory(m.memory, state64()), state64())
    assert d64.instr.memory_base == Register.RIP
    d32 = decode(None, LinearMemory(m.memory, state32()), state32())
    assert d32.bitness == 32 and d32.instr.memory_base == Register.NONE
    st16 = state32()
    st16.cs = Segment(selector=0x18, type=0xB, db=False)
    d16 = decode(None, LinearMemory(m.memory, st16), st16)
    assert d16.bitness == 16 and d16.instr.memory_base == Register.DI


def test_fetch_faults_only_where_the_instruction_needs_the_page(m: Machine) -> None:
    st = state64()
    st.rip = ABSENT - 3
    m.put(ABSENT - 3, bytes.fromhex("0f5800"))  # fits before the missing page
    assert decode(None, LinearMemory(m.memory, st), st).raw == bytes.fromhex("0f5800")
    m.put(ABSENT - 2, bytes.fromhex("0f58"))  # needs the missing page
    st.rip = ABSENT - 2
    with pytest.raises(GuestException) as exc:
        decode(None, LinearMemory(m.memory, st), st)
    assert (exc.value.vector, exc.value.cr2) == (V.PF, ABSENT)


def test_invalid_bytes_are_ud(m: Machine) -> None:
    m.put(CODE, bytes.fromhex("0f0b"))  # ud2 is an instruction; 0xd6 (SALC) is not in 64-bit
    st = state64()
    assert decode(None, LinearMemory(m.memory, st), st).text == "ud2"
    m.put(CODE, bytes.fromhex("d6"))
    with pytest.raises(GuestException) as exc:
        decode(None, LinearMemory(m.memory, st), st)
    assert exc.value.vector == V.UD


def instr(code: str, bitness: int = 64, ip: int = CODE):  # type: ignore[no-untyped-def]
    return Decoder(bitness, bytes.fromhex(code), ip=ip).decode()


def test_effective_addresses() -> None:
    st = state64(rax=0x1000, rbx=0x20)
    assert effective_address(instr("0f58449808"), st) == 0x1000 + 0x20 * 4 + 8  # [rax+rbx*4+8]
    assert effective_address(instr("0f580510000000"), st) == CODE + 7 + 0x10  # [rip+0x10]
    st.gprs[0] = 0xFFFF_FFF0
    assert effective_address(instr("670f584010"), st) == 0  # [eax+0x10] wraps at 4 GiB
    st16 = state32(rbx=0xFFF0, rsi=0x20)
    assert effective_address(instr("0f5800", 16), st16) == 0x10  # [bx+si] wraps at 64 KiB
    st.gprs[RBX] = -8 & (2**64 - 1)
    assert effective_address(instr("0f5803"), st) == 2**64 - 8


def test_linear_addresses_and_segment_checks() -> None:
    st = state64()
    st.fs.base = 0x7000_0000
    assert linear_address(st, Register.FS, 0x10, 16, False) == 0x7000_0010
    assert linear_address(st, Register.DS, 0x10, 16, False) == 0x10  # DS base ignored
    for seg, vector in ((Register.DS, V.GP), (Register.SS, V.SS)):
        with pytest.raises(GuestException) as exc:
            linear_address(st, seg, 1 << 63, 16, False)
        assert (exc.value.vector, exc.value.error_code) == (vector, 0)
    with pytest.raises(GuestException):
        linear_address(st, Register.DS, 0x7FFF_FFFF_FFF8, 16, False)  # last byte non-canonical
    pm = state32()
    pm.efer = 0
    pm.ds = Segment(selector=0x10, base=0x1000, limit=0xFFF, type=3)
    assert linear_address(pm, Register.DS, 0xFF0, 16, True) == 0x1FF0
    with pytest.raises(GuestException):
        linear_address(pm, Register.DS, 0xFF1, 16, False)  # past the limit
    pm.ds.type = 1  # read-only data
    with pytest.raises(GuestException):
        linear_address(pm, Register.DS, 0, 4, True)
    pm.ds = Segment(selector=0x10, base=0, limit=0xFFF, type=7)  # expand-down
    assert linear_address(pm, Register.DS, 0x1000, 4, True) == 0x1000
    with pytest.raises(GuestException):
        linear_address(pm, Register.DS, 0xFFE, 4, True)
    pm.ss = Segment(unusable=True, present=False)
    with pytest.raises(GuestException) as exc:
        linear_address(pm, Register.SS, 0, 4, False)
    assert exc.value.vector == V.SS


def pf(fn, *args) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with pytest.raises(GuestException) as exc:
        fn(*args)
    assert exc.value.vector == V.PF
    return exc.value.error_code or 0, exc.value.cr2 or 0


def test_page_fault_error_codes(m: Machine) -> None:
    mem = LinearMemory(m.memory, state64())
    assert pf(mem.read, ABSENT + 8, 4, False) == (0, ABSENT + 8)
    assert pf(mem.write, ABSENT, b"x", False) == (2, ABSENT)
    assert pf(mem.write, RO_PAGE + 1, b"x", False) == (3, RO_PAGE + 1)
    assert pf(mem.read, DATA, 4, True) == (5, DATA)  # user read of a supervisor page
    assert pf(mem.write, DATA, b"x", True) == (7, DATA)
    assert pf(mem.read, ABSENT, 4, True) == (4, ABSENT)
    assert mem.read(USER_PAGE, 4, True) == bytes(4)


def test_writes_are_all_or_nothing(m: Machine) -> None:
    mem = LinearMemory(m.memory, state64())
    m.put(ABSENT - 4, b"\x11" * 4)
    assert pf(mem.write, ABSENT - 4, b"\x22" * 8, False) == (2, ABSENT)
    assert m.get(ABSENT - 4, 4) == b"\x11" * 4


def test_memory_holes_are_not_emulated(m: Machine) -> None:
    m.memory.unmap(Gfn(DATA >> 12))
    mem = LinearMemory(m.memory, state64())
    with pytest.raises(Unsupported):
        mem.read(DATA, 4, False)


def test_host_address_points_into_the_pool(m: Machine) -> None:
    import ctypes
    mem = LinearMemory(m.memory, state64())
    host = mem.host_address(DATA + 0x10, 16, False)
    ctypes.memmove(host, b"hello", 5)
    assert m.get(DATA + 0x10, 5) == b"hello"


def test_paging_off_is_identity(m: Machine) -> None:
    st: CpuState = state32()
    st.efer = 0
    st.cr0 &= ~CR0_PG
    assert LinearMemory(m.memory, st).read(ABSENT, 4, False) == bytes(4)


def test_state_from_kvm_sregs_bytes() -> None:
    from pyxen.kvm import structs as s
    sr = s.kvm_sregs()
    sr.cs.selector, sr.cs.l, sr.cs.base = 0x08, 1, 0x1000
    sr.ss.dpl, sr.tr.base, sr.ldt.unusable = 3, 0x999, 1
    sr.cr0, sr.cr4, sr.efer = 0x8000_0011, 0x20, 0x500
    sr.gdt.base, sr.gdt.limit, sr.idt.base, sr.idt.limit = 0x5000, 0x37, 0x1234, 0xFFF
    st = CpuState.from_kvm(tuple(range(18)), bytes(sr))
    assert (st.cs.selector, st.cs.l, st.cs.base, st.ss.dpl, st.cpl) == (0x08, 1, 0x1000, 3, 3)
    assert (st.tr.base, st.ldt.unusable, st.bitness) == (0x999, 1, 64)
    assert (st.cr0, st.cr4, st.efer) == (0x8000_0011, 0x20, 0x500)
    assert (st.gdt_base, st.gdt_limit, st.idt_base, st.idt_limit) == (0x5000, 0x37, 0x1234,
                                                                      0xFFF)
    assert (st.gprs, st.rip, st.rflags) == (list(range(16)), 16, 17)
