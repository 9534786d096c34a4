"""Primitive C types shared by the ``pyxen.abi`` modules.

Xen's public headers build every structure from a handful of typedefs.  This
module names them once, in both ABIs a guest may use:

* the native x86_64 ABI, where ``unsigned long``, ``xen_ulong_t``,
  ``xen_pfn_t`` and guest handles are 8 bytes;
* the 32-bit "compat" (i386) ABI, where those are 4 bytes and ``uint64_t``
  members are only 4-byte aligned inside structures.  Compat structures
  therefore set ``_pack_ = 4`` and use the ``compat_*`` types below.

Everything is little-endian, so structures derive from
:class:`XenStruct` / :class:`XenUnion` rather than the native ctypes bases.
"""

from __future__ import annotations

import ctypes
import struct

uint8_t = ctypes.c_uint8
uint16_t = ctypes.c_uint16
uint32_t = ctypes.c_uint32
uint64_t = ctypes.c_uint64
int8_t = ctypes.c_int8
int16_t = ctypes.c_int16
int32_t = ctypes.c_int32
int64_t = ctypes.c_int64
char = ctypes.c_char

# Fixed-width Xen typedefs (identical in both ABIs).
domid_t = ctypes.c_uint16
evtchn_port_t = ctypes.c_uint32
grant_ref_t = ctypes.c_uint32
grant_handle_t = ctypes.c_uint32

# Native (x86_64) word-sized types.
xen_ulong_t = ctypes.c_uint64
xen_pfn_t = ctypes.c_uint64
xen_guest_handle_t = ctypes.c_uint64  # XEN_GUEST_HANDLE(...): a guest linear address

# Compat (i386) word-sized types.
compat_ulong_t = ctypes.c_uint32
compat_pfn_t = ctypes.c_uint32
compat_handle_t = ctypes.c_uint32

# Alignment of uint64_t inside i386 structures; use as ``_pack_``.
COMPAT_PACK = 4


class XenStruct(ctypes.LittleEndianStructure):
    """Base for every Xen ABI structure (little-endian, natural alignment)."""


class XenUnion(ctypes.LittleEndianUnion):
    """Base for every Xen ABI union."""


class CompatStruct(XenStruct):
    """Base for i386 (compat) structures: ``uint64_t`` is 4-byte aligned."""

    _pack_ = COMPAT_PACK


class CompatUnion(XenUnion):
    """Base for i386 (compat) unions."""

    _pack_ = COMPAT_PACK


def struct_of(ctype: type[ctypes.Structure]) -> struct.Struct:
    """A :class:`struct.Struct` that packs the same bytes as ``ctype``, a structure of
    integer fields only, for paths where a ctypes object per message costs too much.

    The format is derived from ``ctype``'s fields, so the ctypes definition stays
    the only one.  Raises TypeError for a field that is not a plain integer.
    """
    fmt = "<"
    end = 0
    for name, ftype, *bits in ctype._fields_:
        size = ctypes.sizeof(ftype)
        if bits or size not in _INT_FORMATS or not issubclass(ftype, ctypes._SimpleCData):
            raise TypeError(f"{ctype.__name__}.{name} is not a plain integer field")
        offset = getattr(ctype, name).offset
        fmt += "x" * (offset - end)
        signed = ftype(-1).value == -1
        fmt += _INT_FORMATS[size].lower() if signed else _INT_FORMATS[size]
        end = offset + size
    fmt += "x" * (ctypes.sizeof(ctype) - end)
    return struct.Struct(fmt)


_INT_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}
