"""Build small x86 ELF images for the boot tests, with ``struct`` only.

Layout of a generated file: ELF header, program headers (the PT_LOADs in
order, then one PT_NOTE when notes go in program headers), the note area,
the segment data (each 16-byte aligned), then the section headers (a null
section and one SHT_NOTE section) when notes go in sections.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

PT_LOAD = 1
PT_NOTE = 4
SHT_NOTE = 7

EHDR_FIELDS = {
    32: {"e_type": (16, "H"), "e_machine": (18, "H"), "e_version": (20, "I"),
         "e_entry": (24, "I"), "e_phoff": (28, "I"), "e_shoff": (32, "I"),
         "e_phentsize": (42, "H"), "e_phnum": (44, "H"), "e_shentsize": (46, "H"),
         "e_shnum": (48, "H")},
    64: {"e_type": (16, "H"), "e_machine": (18, "H"), "e_version": (20, "I"),
         "e_entry": (24, "Q"), "e_phoff": (32, "Q"), "e_shoff": (40, "Q"),
         "e_phentsize": (54, "H"), "e_phnum": (56, "H"), "e_shentsize": (58, "H"),
         "e_shnum": (60, "H")},
}  # fmt: skip
PHDR_FIELDS = {
    32: {"p_type": (0, "I"), "p_offset": (4, "I"), "p_vaddr": (8, "I"), "p_paddr": (12, "I"),
         "p_filesz": (16, "I"), "p_memsz": (20, "I"), "p_align": (28, "I")},
    64: {"p_type": (0, "I"), "p_offset": (8, "Q"), "p_vaddr": (16, "Q"), "p_paddr": (24, "Q"),
         "p_filesz": (32, "Q"), "p_memsz": (40, "Q"), "p_align": (48, "Q")},
}  # fmt: skip
SHDR_FIELDS = {
    32: {"sh_type": (4, "I"), "sh_offset": (16, "I"), "sh_size": (20, "I")},
    64: {"sh_type": (4, "I"), "sh_offset": (24, "Q"), "sh_size": (32, "Q")},
}
EHDR_SIZE = {32: 52, 64: 64}
PHDR_SIZE = {32: 32, 64: 56}
SHDR_SIZE = {32: 40, 64: 64}


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """One ELF note with 4-byte padding; ``name`` includes its NUL."""
    pad = bytes(-len(name) % 4)
    return (
        struct.pack("<III", len(name), len(desc), ntype) + name + pad + desc + bytes(-len(desc) % 4)
    )


def _align(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def make_elf(
    cls: int = 64,
    machine: int = 62,
    segments: Sequence[tuple[int, bytes, int]] = ((0x100000, b"\xf4" * 64, 0x3000),),
    notes: Sequence[tuple[int, bytes]] = (),
    notes_in: str = "phdr",
    entry: int = 0x100000,
    other_notes: Sequence[tuple[bytes, int, bytes]] = (),
) -> bytes:
    """An ELF image with ``segments`` as ``(paddr, data, memsz)`` and Xen ``notes``."""
    word = "I" if cls == 32 else "Q"
    blob = b"".join(note(n, t, d) for n, t, d in other_notes)
    blob += b"".join(note(b"Xen\0", t, d) for t, d in notes)
    in_phdr = notes_in in ("phdr", "both") and bool(blob)
    in_shdr = notes_in in ("shdr", "both") and bool(blob)
    phnum = len(segments) + int(in_phdr)
    note_off = EHDR_SIZE[cls] + phnum * PHDR_SIZE[cls]
    body = bytearray(blob)
    placed = []
    for paddr, data, memsz in segments:
        offset = _align(note_off + len(body), 16)
        body += bytes(offset - note_off - len(body)) + data
        placed.append((offset, paddr, data, memsz))
    shoff = _align(note_off + len(body), 8) if in_shdr else 0
    if in_shdr:
        body += bytes(shoff - note_off - len(body))

    phdrs = bytearray()
    for offset, paddr, data, memsz in placed:
        phdrs += _phdr(cls, PT_LOAD, offset, paddr, len(data), memsz, 0x1000)
    if in_phdr:
        phdrs += _phdr(cls, PT_NOTE, note_off, 0, len(blob), len(blob), 4)
    shdrs = bytearray()
    if in_shdr:
        shdrs += bytes(SHDR_SIZE[cls])
        shdrs += struct.pack(
            f"<II{word}{word}{word}{word}II{word}{word}",
            0, SHT_NOTE, 2, 0, note_off, len(blob), 0, 0, 4, 0,
        )  # fmt: skip
    ehdr = b"\x7fELF" + bytes([1 if cls == 32 else 2, 1, 1]) + bytes(9)
    ehdr += struct.pack(
        f"<HHI{word}{word}{word}IHHHHHH",
        2, machine, 1, entry, EHDR_SIZE[cls], shoff, 0, EHDR_SIZE[cls],
        PHDR_SIZE[cls], phnum, SHDR_SIZE[cls], 2 if in_shdr else 0, 0,
    )  # fmt: skip
    return bytes(ehdr + phdrs + body + shdrs)


def _phdr(
    cls: int, p_type: int, offset: int, paddr: int, filesz: int, memsz: int, align: int
) -> bytes:
    if cls == 64:
        return struct.pack("<IIQQQQQQ", p_type, 7, offset, paddr, paddr, filesz, memsz, align)
    return struct.pack("<IIIIIIII", p_type, offset, paddr, paddr, filesz, memsz, 7, align)


def _patch(data: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<" + fmt, out, at, value)
    return bytes(out)


def read_ehdr(data: bytes, cls: int, field: str) -> int:
    at, fmt = EHDR_FIELDS[cls][field]
    value: int = struct.unpack_from("<" + fmt, data, at)[0]
    return value


def patch_ehdr(data: bytes, cls: int, field: str, value: int) -> bytes:
    at, fmt = EHDR_FIELDS[cls][field]
    return _patch(data, at, fmt, value)


def patch_phdr(data: bytes, cls: int, index: int, field: str, value: int) -> bytes:
    at, fmt = PHDR_FIELDS[cls][field]
    base = read_ehdr(data, cls, "e_phoff") + index * PHDR_SIZE[cls]
    return _patch(data, base + at, fmt, value)


def patch_shdr(data: bytes, cls: int, index: int, field: str, value: int) -> bytes:
    at, fmt = SHDR_FIELDS[cls][field]
    base = read_ehdr(data, cls, "e_shoff") + index * SHDR_SIZE[cls]
    return _patch(data, base + at, fmt, value)
