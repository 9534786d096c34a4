"""The failing instruction: its bytes, decoded with iced-x86 in the guest's mode.

KVM reports the bytes its emulator fetched (KVM_INTERNAL_ERROR_EMULATION_FLAG_
INSTRUCTION_BYTES: ``data[1..2]`` hold insn_size and up to 15 bytes).  They
are used when present and decode to a whole instruction; otherwise the bytes
are fetched from CS.base + RIP through the guest's page tables (a fetch that
faults in the middle of the instruction is the guest's #PF, as on hardware).
Bytes that are no instruction in the guest's mode are the guest's #UD.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from iced_x86 import Decoder, DecoderError, Formatter, FormatterSyntax, Instruction

from pyxen.hv.emulate.address import LinearMemory
from pyxen.hv.emulate.faults import PF_FETCH, GuestException
from pyxen.hv.emulate.faults import Vector as V
from pyxen.hv.emulate.state import EFER_NXE, CpuState
from pyxen.kvm.ioctls import KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES

MAX_INSN_LEN = 15
_formatter = Formatter(FormatterSyntax.INTEL)


def reported_bytes(data: tuple[int, ...]) -> bytes | None:
    """The instruction bytes in an emulation failure's exit data, if KVM gave them."""
    if len(data) < 3 or not data[0] & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES:
        return None
    raw = data[1].to_bytes(8, "little") + data[2].to_bytes(8, "little")
    size = min(raw[0], MAX_INSN_LEN)
    return raw[1 : 1 + size] if size else None


@dataclass(slots=True, frozen=True)
class Decoded:
    instr: Instruction
    raw: bytes  # exactly the instruction's bytes
    bitness: int

    @property
    def text(self) -> str:
        return _formatter.format(self.instr)

    def describe(self) -> str:
        return f"`{self.text}` ({self.raw.hex(' ')}, {self.bitness}-bit)"


def _decode(raw: bytes, bitness: int, rip: int) -> Instruction | None:
    """The instruction at the start of ``raw``; None if ``raw`` ends inside it."""
    decoder = Decoder(bitness, raw, ip=rip)
    instr = decoder.decode()
    if decoder.last_error == DecoderError.NO_MORE_BYTES:
        return None
    return instr


def fetch(mem: LinearMemory, state: CpuState) -> bytes:
    """Up to 15 bytes at CS:RIP, stopping before the first page that does not translate."""
    la = (state.cs.base + state.rip) & mem.wrap
    user = state.cpl == 3
    first = min(MAX_INSN_LEN, 0x1000 - (la & 0xFFF))
    out = mem.read(la, first, user)  # a fault on the first byte is the guest's
    if first < MAX_INSN_LEN:
        with contextlib.suppress(GuestException):  # a fault only if the instruction
            out += mem.read((la + first) & mem.wrap, MAX_INSN_LEN - first, user)  # needs it
    return out


def decode(reported: bytes | None, mem: LinearMemory, state: CpuState) -> Decoded:
    bitness = state.bitness
    rip = state.rip & state.ip_mask
    instr = _decode(reported, bitness, rip) if reported else None
    if instr is None:
        raw = fetch(mem, state)
        instr = _decode(raw, bitness, rip)
        if instr is None:  # the instruction runs into a page that does not translate
            la = (state.cs.base + rip + len(raw)) & mem.wrap
            try:
                mem.read(la, 1, state.cpl == 3)
            except GuestException as exc:
                fetch_bit = PF_FETCH if state.efer & EFER_NXE else 0
                raise GuestException(V.PF, (exc.error_code or 0) | fetch_bit, cr2=la,
                                     why="instruction fetch") from None
            raise GuestException(V.UD, why="instruction longer than 15 bytes")
    else:
        raw = reported or b""
    raw = raw[: instr.len]
    if instr.is_invalid:
        # Not an instruction in this mode (e.g. a LOCK prefix where none is
        # allowed, INTO in 64-bit mode): the processor raises #UD.
        raise GuestException(V.UD, why=f"invalid instruction bytes {raw.hex(' ')} "
                             f"({bitness}-bit)")
    return Decoded(instr, raw, bitness)
