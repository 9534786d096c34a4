"""XSAVE areas: the layout of the vCPU's extended state and the XSAVE-family
instructions' view of it (Intel SDM vol. 1 chapter 13, vol. 2 FXSAVE/XSAVE*).

The vCPU's state comes from KVM_GET_XSAVE as an XSAVE area in the *standard*
format (the 512-byte legacy region in the FXSAVE64 layout, the 64-byte
header whose XSTATE_BV says which components are not in their initial
configuration, then each extended component at the offset CPUID leaf 0xD
gives).  KVM passes leaf 0xD through to the guest, so the host's layout is
also the guest's.

Legacy region: FCW 0, FSW 2, abridged FTW 4, FOP 6, FIP 8, FDP 16, MXCSR
24, MXCSR_MASK 28, ST0-7 at 32 (16 bytes each), XMM0-15 at 160.  In the
32-bit FXSAVE format bytes 8-23 hold FIP, FCS, FDP and FDS instead of the
64-bit FIP and FDP; pyxen keeps those 16 bytes as they are in both
directions, so a save/restore pair in one format is exact (the hidden
FCS/FDS split is not modelled).

Outside 64-bit mode only XMM0-7 (and YMM0-7, ZMM0-7 upper parts) exist:
saves write, and restores load, only those.

XINUSE (which components are not in their initial configuration) is taken
from XSTATE_BV of KVM's area.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pyxen.hv.emulate.hostcode import host_cpuid

X87 = 0
SSE = 1
YMM = 2
OPMASK = 5
ZMM_HI256 = 6
HI16_ZMM = 7
PKRU = 9
XFEATURE_X87 = 1 << X87
XFEATURE_SSE = 1 << SSE
XFEATURE_YMM = 1 << YMM
XFEATURES_AVX512 = (1 << OPMASK) | (1 << ZMM_HI256) | (1 << HI16_ZMM)

FCW, FSW, FTW, FOP, FIP, FDP = 0, 2, 4, 6, 8, 16
MXCSR, MXCSR_MASK = 24, 28
ST0 = 32
XMM0 = 160
LEGACY_SIZE = 512
HEADER = 512
XSTATE_BV = HEADER
XCOMP_BV = HEADER + 8
HEADER_SIZE = 64
EXTENDED = HEADER + HEADER_SIZE
XCOMP_COMPACTED = 1 << 63

MXCSR_INIT = 0x1F80
FCW_INIT = 0x037F
MXCSR_FLAGS = 0x3F  # IE DE ZE OE UE PE
MXCSR_MASKS_SHIFT = 7
MXCSR_MM = 1 << 17  # AMD misaligned-exception mask: unaligned SSE accesses allowed

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


Readable = bytes | bytearray | memoryview
Writable = bytearray | memoryview


def u16(area: Readable, off: int) -> int:
    return int(_U16.unpack_from(area, off)[0])


def u32(area: Readable, off: int) -> int:
    return int(_U32.unpack_from(area, off)[0])


def u64(area: Readable, off: int) -> int:
    return int(_U64.unpack_from(area, off)[0])


def put16(area: Writable, off: int, value: int) -> None:
    _U16.pack_into(area, off, value & 0xFFFF)


def put32(area: Writable, off: int, value: int) -> None:
    _U32.pack_into(area, off, value & 0xFFFF_FFFF)


def put64(area: Writable, off: int, value: int) -> None:
    _U64.pack_into(area, off, value & 0xFFFF_FFFF_FFFF_FFFF)


@dataclass(frozen=True, slots=True)
class Component:
    offset: int  # in the standard format
    size: int
    align64: bool  # in the compacted format


@dataclass(frozen=True, slots=True)
class Layout:
    """CPUID leaf 0xD: where each user state component lives, and the XSAVE features."""

    components: dict[int, Component]
    xsaveopt: bool
    xsavec: bool
    xgetbv1: bool
    xsaves: bool

    @classmethod
    def from_host(cls) -> Layout:
        if host_cpuid(0)[0] < 0xD:
            return cls({}, False, False, False, False)
        supported = host_cpuid(0xD, 0)[0] | host_cpuid(0xD, 0)[3] << 32
        comps = {}
        for i in range(2, 63):
            if supported >> i & 1:
                size, offset, ecx, _ = host_cpuid(0xD, i)
                if size and not ecx & 1:  # supervisor components have no standard offset
                    comps[i] = Component(offset, size, bool(ecx & 2))
        flags = host_cpuid(0xD, 1)[0]
        return cls(comps, bool(flags & 1), bool(flags & 2), bool(flags & 4), bool(flags & 8))

    def standard_size(self, rfbm: int) -> int:
        """Bytes an XSAVE of ``rfbm`` in the standard format spans."""
        end = EXTENDED
        for i, comp in self.components.items():
            if rfbm >> i & 1:
                end = max(end, comp.offset + comp.size)
        return end

    def compacted_offsets(self, xcomp_bv: int) -> dict[int, int]:
        """Offset of each extended component in a compacted area with ``xcomp_bv``."""
        out = {}
        off = EXTENDED
        for i in sorted(self.components):
            if xcomp_bv >> i & 1:
                comp = self.components[i]
                if comp.align64:
                    off = (off + 63) & ~63
                out[i] = off
                off += comp.size
        return out

    def compacted_size(self, xcomp_bv: int) -> int:
        offsets = self.compacted_offsets(xcomp_bv)
        return max((off + self.components[i].size for i, off in offsets.items()),
                   default=EXTENDED)


def registers_in_mode(component: int, size: int, mode64: bool) -> int:
    """How many bytes of an extended component exist outside 64-bit mode."""
    if mode64:
        return size
    if component == YMM:
        return 8 * 16
    if component == ZMM_HI256:
        return 8 * 32
    if component == HI16_ZMM:
        return 0
    return size


def xmm_bytes(mode64: bool) -> int:
    return (16 if mode64 else 8) * 16


def init_x87(area: bytearray) -> None:
    """The x87 state's initial configuration (FNINIT-like, and ST0-7 = 0)."""
    area[0:24] = bytes(24)
    area[ST0 : ST0 + 128] = bytes(128)
    put16(area, FCW, FCW_INIT)


def init_component(area: bytearray, layout: Layout, i: int, mode64: bool) -> None:
    """Initial configuration of component ``i`` (x87 and SSE in the legacy region)."""
    if i == X87:
        init_x87(area)
    elif i == SSE:
        area[XMM0 : XMM0 + xmm_bytes(mode64)] = bytes(xmm_bytes(mode64))
    elif i in layout.components:
        comp = layout.components[i]
        n = registers_in_mode(i, comp.size, mode64)
        area[comp.offset : comp.offset + n] = bytes(n)
