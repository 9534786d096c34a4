"""ELF kernel images: headers, loadable segments and Xen notes.

Reads the little-endian x86 ELF images a PVH guest is booted from, 32- or
64-bit (``EM_386`` or ``EM_X86_64``; 32-bit files tagged ``EM_X86_64``, as
Xen's test framework and some boot loaders produce, are accepted).  Field
names follow the ELF specification (``e_phoff``, ``p_filesz``, ``SHT_NOTE``).

Design: the file is parsed once, from a ``bytes`` object, into frozen
records.  Every offset, size and count is checked against the file before it
is used, so no input makes the parser raise anything but
:class:`~pyxen.boot.errors.BootError` (the unit tests fuzz this).

Invariants of a returned :class:`ElfImage`:

* ``segments`` holds the ``PT_LOAD`` program headers with ``p_memsz > 0``,
  in file order; each has ``len(data) == p_filesz <= memsz``;
* no two segments overlap in ``[paddr, paddr + memsz)``, and no range wraps
  past 2**64 (2**32 for ELF32), physical or virtual;
* there is at least one segment.

Xen notes are read from ``PT_NOTE`` segments; if none of them holds a Xen
note, from ``SHT_NOTE`` sections instead (as libelf does).  Section headers
are only read, and validated, in that fallback.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, field

from pyxen.boot.errors import BootError
from pyxen.boot.xen_notes import XenNotes, collect_xen_notes, decode_xen_notes

ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_EXEC = 2
ET_DYN = 3
EM_386 = 3
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
SHT_NOTE = 7

_MAGIC = b"\x7fELF"
_IDENT_SIZE = 16
# After e_ident: e_type, e_machine, e_version, e_entry, e_phoff, e_shoff,
# e_flags, e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx.
_EHDR = {ELFCLASS32: struct.Struct("<HHIIIIIHHHHHH"), ELFCLASS64: struct.Struct("<HHIQQQIHHHHHH")}
# p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align (ELF32 order).
_PHDR32 = struct.Struct("<IIIIIIII")
# p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align.
_PHDR64 = struct.Struct("<IIQQQQQQ")
# sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info,
# sh_addralign, sh_entsize.
_SHDR = {ELFCLASS32: struct.Struct("<IIIIIIIIII"), ELFCLASS64: struct.Struct("<IIQQQQIIQQ")}


@dataclass(frozen=True)
class Segment:
    """One loadable segment: ``data`` goes at ``paddr``, then zeros up to ``memsz``."""

    paddr: int
    vaddr: int
    data: bytes = field(repr=False)
    memsz: int

    @property
    def end(self) -> int:
        """The first physical address after the segment (``paddr + memsz``)."""
        return self.paddr + self.memsz


@dataclass(frozen=True)
class ElfImage:
    """A parsed kernel image (see the module docstring for its invariants)."""

    elf_class: int
    machine: int
    entry: int
    segments: tuple[Segment, ...]
    notes: XenNotes


@dataclass(frozen=True)
class _Phdr:
    index: int
    p_type: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_align: int


def _span(start: int, end: int) -> str:
    return f"[{start:#x}-{end:#x})"


def _file_range(name: str, what: str, offset: int, size: int, file_size: int) -> None:
    if size and offset + size > file_size:
        raise BootError(
            f"{name}: {what} at file offset {offset:#x} size {size:#x} runs past the end of "
            f"the {file_size:#x}-byte file; the file is truncated or corrupt"
        )


def _read_phdrs(
    data: bytes, name: str, bits: int, phoff: int, entsize: int, num: int
) -> list[_Phdr]:
    layout = _PHDR64 if bits == 64 else _PHDR32
    if num and entsize < layout.size:
        raise BootError(
            f"{name}: e_phentsize is {entsize}, expected at least {layout.size} for ELF{bits}; "
            "the image is corrupt"
        )
    _file_range(name, f"program header table ({num} entries)", phoff, num * entsize, len(data))
    phdrs = []
    for index in range(num):
        fields = layout.unpack_from(data, phoff + index * entsize)
        if bits == 64:
            p_type, _flags, offset, vaddr, paddr, filesz, memsz, align = fields
        else:
            p_type, offset, vaddr, paddr, filesz, memsz, _flags, align = fields
        phdrs.append(_Phdr(index, p_type, offset, vaddr, paddr, filesz, memsz, align))
    return phdrs


def _check_load(name: str, bits: int, ph: _Phdr, file_size: int) -> None:
    what = f"program header {ph.index} (PT_LOAD)"
    _file_range(name, what, ph.p_offset, ph.p_filesz, file_size)
    if ph.p_filesz > ph.p_memsz:
        raise BootError(
            f"{name}: {what} has p_filesz {ph.p_filesz:#x} > p_memsz {ph.p_memsz:#x}; "
            "the image is corrupt"
        )
    for label, addr in (("p_paddr", ph.p_paddr), ("p_vaddr", ph.p_vaddr)):
        if addr + ph.p_memsz > 1 << bits:
            raise BootError(
                f"{name}: {what} {label} {addr:#x} + p_memsz {ph.p_memsz:#x} wraps past the "
                f"{bits}-bit address space; the image is corrupt"
            )


def _check_overlaps(name: str, loads: list[_Phdr]) -> None:
    ordered = sorted((ph for ph in loads if ph.p_memsz), key=lambda ph: ph.p_paddr)
    for low, high in itertools.pairwise(ordered):
        if high.p_paddr < low.p_paddr + low.p_memsz:
            first, second = sorted((low, high), key=lambda ph: ph.index)
            raise BootError(
                f"{name}: program header {second.index} "
                f"{_span(second.p_paddr, second.p_paddr + second.p_memsz)} overlaps program "
                f"header {first.index} {_span(first.p_paddr, first.p_paddr + first.p_memsz)}; "
                "the image is corrupt"
            )


def _note_align(align: int) -> int:
    return 8 if align == 8 else 4


def _section_notes(data: bytes, name: str, bits: int, header: tuple[int, ...]) -> dict[int, bytes]:
    shoff, shentsize, shnum = header[5], header[10], header[11]
    raw: dict[int, bytes] = {}
    if shoff == 0 or shnum == 0:
        return raw
    layout = _SHDR[ELFCLASS64 if bits == 64 else ELFCLASS32]
    if shentsize < layout.size:
        raise BootError(
            f"{name}: e_shentsize is {shentsize}, expected at least {layout.size} for "
            f"ELF{bits}; the image is corrupt"
        )
    table = f"section header table ({shnum} entries)"
    _file_range(name, table, shoff, shnum * shentsize, len(data))
    for index in range(shnum):
        fields = layout.unpack_from(data, shoff + index * shentsize)
        sh_type, offset, size, addralign = fields[1], fields[4], fields[5], fields[8]
        if sh_type != SHT_NOTE:
            continue
        what = f"section {index} (SHT_NOTE)"
        _file_range(name, what, offset, size, len(data))
        blob = data[offset : offset + size]
        collect_xen_notes(blob, _note_align(addralign), f"{name}: {what}", raw)
    return raw


def parse_elf(data: bytes, name: str = "kernel") -> ElfImage:
    """Parse and validate a kernel image; ``name`` (usually the file name) prefixes errors."""
    if len(data) < _IDENT_SIZE or data[:4] != _MAGIC:
        raise BootError(f"{name}: not an ELF file (bad magic); give the path of a kernel image")
    ei_class, ei_data, ei_version = data[4], data[5], data[6]
    if ei_class not in _EHDR:
        raise BootError(f"{name}: unknown ELF class {ei_class}; expected ELF32 or ELF64")
    if ei_data != ELFDATA2LSB:
        raise BootError(f"{name}: ELF file is not little-endian; it is not an x86 kernel")
    if ei_version != EV_CURRENT:
        raise BootError(f"{name}: unknown ELF version {ei_version}; the image is corrupt")
    bits = 64 if ei_class == ELFCLASS64 else 32
    layout = _EHDR[ei_class]
    if len(data) < _IDENT_SIZE + layout.size:
        raise BootError(
            f"{name}: ELF header is truncated ({len(data)} bytes); the file is cut short"
        )
    header = layout.unpack_from(data, _IDENT_SIZE)
    e_type, e_machine, _e_version, e_entry, e_phoff = header[:5]
    e_phentsize, e_phnum = header[8], header[9]
    if e_type not in (ET_EXEC, ET_DYN):
        raise BootError(f"{name}: ELF type {e_type} is not an executable; give a linked kernel")
    if e_machine not in (EM_386, EM_X86_64):
        raise BootError(
            f"{name}: ELF machine {e_machine} is not x86 (EM_386 or EM_X86_64); "
            "give a kernel built for x86"
        )

    phdrs = _read_phdrs(data, name, bits, e_phoff, e_phentsize, e_phnum)
    loads = [ph for ph in phdrs if ph.p_type == PT_LOAD]
    for ph in loads:
        _check_load(name, bits, ph, len(data))
    _check_overlaps(name, loads)
    segments = tuple(
        Segment(ph.p_paddr, ph.p_vaddr, data[ph.p_offset : ph.p_offset + ph.p_filesz], ph.p_memsz)
        for ph in loads
        if ph.p_memsz
    )
    if not segments:
        raise BootError(f"{name}: no loadable (PT_LOAD) segment; there is nothing to boot")

    raw: dict[int, bytes] = {}
    for ph in phdrs:
        if ph.p_type != PT_NOTE:
            continue
        what = f"program header {ph.index} (PT_NOTE)"
        _file_range(name, what, ph.p_offset, ph.p_filesz, len(data))
        blob = data[ph.p_offset : ph.p_offset + ph.p_filesz]
        collect_xen_notes(blob, _note_align(ph.p_align), f"{name}: {what}", raw)
    where = f"{name}: PT_NOTE"
    if not raw:
        raw = _section_notes(data, name, bits, header)
        where = f"{name}: SHT_NOTE"
    notes = decode_xen_notes(raw, where)
    return ElfImage(bits, e_machine, e_entry, segments, notes)
