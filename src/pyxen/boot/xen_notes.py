"""Xen ELF notes: the metadata a kernel image gives its loader.

Mirrors ``xen/include/public/elfnote.h`` as summarised in the guest-ABI fact
sheet §3.1.  A note is a 12-byte header (``namesz``, ``descsz``, ``type``,
all u32 little-endian) followed by the name and the descriptor, each padded
to the note alignment (4 bytes; 8 when the containing segment or section is
8-aligned, as some 64-bit toolchains emit).  Xen's notes carry the name
``"Xen"`` (``namesz`` 4, including the NUL); any other note (GNU build-id,
Linux notes) is skipped.

Decoding follows libelf 4.12:

* numeric notes are little-endian integers whose width is the descriptor
  size (1, 2, 4 or 8 bytes); ``PHYS32_ENTRY`` must be 4 or 8 bytes and fit
  in 32 bits; ``SUPPORTED_FEATURES`` is an array of u32 submaps, submap *i*
  landing in bits ``32*i ..`` of :attr:`XenNotes.supported_features`;
* string notes are ASCII up to the first NUL (a missing NUL is tolerated);
* ``INFO`` (0), ``L1_MFN_VALID`` (13) and unknown types are kept only in
  :attr:`XenNotes.raw`.

When a type appears twice the later note wins, as in libelf.  Offsets such as
``VIRT_BASE`` and ``PADDR_OFFSET`` are reported, not applied: a PVH image is
loaded at its ELF physical addresses.

Invariant: the functions here raise nothing but :class:`BootError`, however
the note bytes are corrupted.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pyxen.abi.elfnote import NUMERIC_NOTES, STRING_NOTES, XEN_ELFNOTE_NAME, XenElfNote
from pyxen.boot.errors import BootError

_NOTE_HEADER = struct.Struct("<III")
_XEN_NAMES = (XEN_ELFNOTE_NAME, XEN_ELFNOTE_NAME.rstrip(b"\0"))


@dataclass(frozen=True)
class XenNotes:
    """The Xen notes of one image; ``None`` where the note is absent."""

    phys32_entry: int | None = None
    entry: int | None = None
    hypercall_page: int | None = None
    virt_base: int | None = None
    paddr_offset: int | None = None
    xen_version: str | None = None
    guest_os: str | None = None
    guest_version: str | None = None
    loader: str | None = None
    pae_mode: str | None = None
    features: str | None = None
    supported_features: int = 0
    raw: Mapping[int, bytes] = field(default_factory=dict, hash=False)
    """Every Xen note by type, descriptor bytes as found in the image."""

    @property
    def is_pvh(self) -> bool:
        """True when the image has a PVH entry point (a PHYS32_ENTRY note)."""
        return self.phys32_entry is not None


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def iter_notes(blob: bytes, align: int, where: str) -> Iterator[tuple[bytes, int, bytes]]:
    """Yield ``(name, type, descriptor)`` for each note in ``blob``.

    ``where`` prefixes error messages (e.g. ``"vmlinux: PT_NOTE program
    header 4"``).  Up to 11 trailing zero bytes are accepted as padding.
    """
    offset = 0
    while len(blob) - offset >= _NOTE_HEADER.size:
        namesz, descsz, ntype = _NOTE_HEADER.unpack_from(blob, offset)
        name_at = offset + _NOTE_HEADER.size
        desc_at = name_at + _round_up(namesz, align)
        if desc_at + descsz > len(blob):
            raise BootError(
                f"{where}: note at offset {offset:#x} (namesz {namesz}, descsz {descsz}) "
                f"runs past the end of its {len(blob)}-byte area; the image is corrupt"
            )
        yield blob[name_at : name_at + namesz], ntype, blob[desc_at : desc_at + descsz]
        offset = desc_at + _round_up(descsz, align)
    if any(blob[offset:]):
        raise BootError(
            f"{where}: {len(blob) - offset} stray bytes after the last note; the image is corrupt"
        )


def collect_xen_notes(blob: bytes, align: int, where: str, into: dict[int, bytes]) -> None:
    """Add the Xen notes found in ``blob`` to ``into`` (type -> descriptor)."""
    for name, ntype, desc in iter_notes(blob, align, where):
        if name in _XEN_NAMES:
            into[ntype] = desc


def _numeric(ntype: int, desc: bytes, where: str) -> int:
    if len(desc) not in (1, 2, 4, 8):
        raise BootError(
            f"{where}: Xen note {ntype} has a {len(desc)}-byte value; numeric notes must be "
            "1, 2, 4 or 8 bytes; the image is corrupt"
        )
    return int.from_bytes(desc, "little")


def _string(ntype: int, desc: bytes, where: str) -> str:
    text = desc.split(b"\0", 1)[0]
    try:
        return text.decode("ascii")
    except UnicodeDecodeError:
        raise BootError(
            f"{where}: Xen note {ntype} is not an ASCII string ({text[:32]!r}); "
            "the image is corrupt"
        ) from None


def _phys32_entry(desc: bytes, where: str) -> int:
    if len(desc) not in (4, 8):
        raise BootError(
            f"{where}: XEN_ELFNOTE_PHYS32_ENTRY has a {len(desc)}-byte value, expected 4 "
            "(or 8); the image is corrupt"
        )
    value = int.from_bytes(desc, "little")
    if value > 0xFFFF_FFFF:
        raise BootError(
            f"{where}: XEN_ELFNOTE_PHYS32_ENTRY {value:#x} is above 4 GiB; a PVH entry point "
            "must be a 32-bit physical address"
        )
    return value


def _feature_words(desc: bytes, where: str) -> int:
    if not desc or len(desc) % 4:
        raise BootError(
            f"{where}: XEN_ELFNOTE_SUPPORTED_FEATURES has a {len(desc)}-byte value; it must be "
            "an array of 32-bit words; the image is corrupt"
        )
    value = 0
    for index in range(len(desc) // 4):
        word = int.from_bytes(desc[4 * index : 4 * index + 4], "little")
        value |= word << (32 * index)
    return value


def decode_xen_notes(raw: Mapping[int, bytes], where: str) -> XenNotes:
    """Decode the notes collected by :func:`collect_xen_notes`."""
    numbers: dict[int, int] = {}
    strings: dict[int, str] = {}
    for ntype, desc in raw.items():
        if ntype == XenElfNote.PHYS32_ENTRY:
            numbers[ntype] = _phys32_entry(desc, where)
        elif ntype == XenElfNote.SUPPORTED_FEATURES:
            numbers[ntype] = _feature_words(desc, where)
        elif ntype in NUMERIC_NOTES:
            numbers[ntype] = _numeric(ntype, desc, where)
        elif ntype in STRING_NOTES:
            strings[ntype] = _string(ntype, desc, where)
    return XenNotes(
        phys32_entry=numbers.get(XenElfNote.PHYS32_ENTRY),
        entry=numbers.get(XenElfNote.ENTRY),
        hypercall_page=numbers.get(XenElfNote.HYPERCALL_PAGE),
        virt_base=numbers.get(XenElfNote.VIRT_BASE),
        paddr_offset=numbers.get(XenElfNote.PADDR_OFFSET),
        xen_version=strings.get(XenElfNote.XEN_VERSION),
        guest_os=strings.get(XenElfNote.GUEST_OS),
        guest_version=strings.get(XenElfNote.GUEST_VERSION),
        loader=strings.get(XenElfNote.LOADER),
        pae_mode=strings.get(XenElfNote.PAE_MODE),
        features=strings.get(XenElfNote.FEATURES),
        supported_features=numbers.get(XenElfNote.SUPPORTED_FEATURES, 0),
        raw=dict(raw),
    )
