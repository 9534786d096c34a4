"""blkif requests: decode and validate one ring slot, execute it on a disk image.

Design:

* :class:`Abi` is the frontend's ``protocol`` ("x86_64-abi" or
  "x86_32-abi"): it picks the ctypes layouts (``pyxen.abi.blkif`` and their
  ``compat_`` twins) used to read a slot and write a response.  Segments
  (and the segment lists of indirect pages) are the same in both.
* :func:`decode` turns the copy of one slot (:mod:`.ring` copies each slot
  exactly once) into a :class:`Request` or a :class:`Rejected` carrying
  the error response, never an exception: the guest is not trusted.  The
  ``id`` sits at the same offset in every request layout, so even a
  rejected request is answered with its own id.  Rules: READ and WRITE
  carry 1..11 segments, FLUSH_DISKCACHE and WRITE_BARRIER 0..11; each
  segment has ``first_sect <= last_sect <= 7`` (a 4 KiB page); the
  sectors, contiguous on disk from ``sector_number``, lie on the disk (a
  flush without segments ignores ``sector_number``);
  INDIRECT has ``indirect_op`` READ or WRITE and 1..``max_indirect_segments``
  segments listed in ``ceil(n / 512)`` granted pages (read through the
  :class:`PageAccess`; a bad ref there is an error response too); DISCARD
  is only served when enabled (else EOPNOTSUPP) and must lie on the disk.
  RESERVED_1 and unknown operations get BLKIF_RSP_EOPNOTSUPP, other
  violations BLKIF_RSP_ERROR.  A response echoes the request's operation,
  except that an indirect request is answered with its ``indirect_op`` (the
  operation frontends match responses against).
* :class:`Backend` executes requests one at a time, in ring order, so every
  request completes before the next starts; a barrier therefore finds the
  preceding writes drained, and its flush makes them durable.  READ:
  one image read of the whole range, then the pieces are copied into the
  guest's pages.  WRITE: every segment is copied from the guest first (a
  bad grant fails the request before the image is touched), then one
  image write.  WRITE_BARRIER: its data is written, then the image is
  flushed.  FLUSH_DISKCACHE: its data (if any) is written, then the image
  is flushed.  DISCARD: the image's discard.  For a raw :class:`DiskImage`
  these are ``pread``, ``pwrite``, ``fsync`` and
  ``fallocate(PUNCH_HOLE | KEEP_SIZE)`` (or zeroes written where the file
  system cannot punch holes).  A read-only disk answers every operation but
  READ with BLKIF_RSP_ERROR.  An ``OSError`` from the image is
  BLKIF_RSP_ERROR, never a crash.
* :class:`Image` is what a :class:`Backend` executes requests on: a raw
  file (:class:`DiskImage`) or any qemu format served by qemu-nbd
  (:class:`pyxen.services.blkback.nbd.NbdImage`); :func:`open_image`
  picks one from the disk's xl ``format`` (raw or qcow2; the others xl
  names are refused).  Every image gives the same guarantees:
  a completed write is visible to every later read, a completed flush made
  every completed write durable, a discarded range reads as zeroes.
* :class:`PageAccess` is how guest pages are reached by grant reference:
  batched copies in and out (one batch per request, so the real
  implementation, over the hypervisor's control socket, pays one round
  trip).  It raises :class:`GrantError` for a ref the guest did not grant
  (or granted read-only, for a copy into the page).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from pyxen.abi._types import struct_of
from pyxen.abi.blkif import (
    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
    BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_SECTOR_SIZE,
    BLKIF_SECTORS_PER_PAGE,
    BLKIF_SEGMENTS_PER_INDIRECT_PAGE,
    BlkifOp,
    BlkifRsp,
    blkif_request,
    blkif_request_discard,
    blkif_request_indirect,
    blkif_request_segment,
    blkif_response,
    blkif_sring_entry,
    compat_blkif_request,
    compat_blkif_request_discard,
    compat_blkif_request_indirect,
    compat_blkif_response,
    compat_blkif_sring_entry,
)
from pyxen.control.vbd import FORMATS as IMAGE_FORMATS
from pyxen.services.blkback.nbd import open_nbd_image

# What pyxen advertises in feature-max-indirect-segments (Linux's default).
MAX_INDIRECT_SEGMENTS = 256
_SEGMENT = struct_of(blkif_request_segment)


class Abi(Enum):
    """The frontend's ``protocol`` node and the layouts it selects."""

    X86_64 = "x86_64-abi"
    X86_32 = "x86_32-abi"

    @property
    def entry_size(self) -> int:
        """Bytes per ring slot (112 or 108)."""
        return ctypes.sizeof(blkif_sring_entry if self is Abi.X86_64
                             else compat_blkif_sring_entry)


_LAYOUTS: dict[Abi, tuple[type[ctypes.Structure], ...]] = {
    Abi.X86_64: (blkif_request, blkif_request_indirect, blkif_request_discard,
                 blkif_response),
    Abi.X86_32: (compat_blkif_request, compat_blkif_request_indirect,
                 compat_blkif_request_discard, compat_blkif_response),
}
_RESPONSES = {abi: struct_of(layout[3]) for abi, layout in _LAYOUTS.items()}


class GrantError(Exception):
    """A grant reference the frontend did not grant (or not for this access)."""

    def __init__(self, gref: int, why: str = "not granted") -> None:
        super().__init__(f"grant ref {gref}: {why}")
        self.gref = gref


class PageAccess(Protocol):
    """The frontend's granted pages, by grant reference (4 KiB each)."""

    def copy_from_guest(self, chunks: Sequence[tuple[int, int, int]]) -> list[bytes]:
        """The bytes of each (gref, offset, length); GrantError if any ref is bad."""
        ...

    def copy_to_guest(self, chunks: Sequence[tuple[int, int, bytes]]) -> None:
        """Store each (gref, offset, data); GrantError if any ref is bad or read-only."""
        ...


@dataclass(frozen=True)
class Segment:
    gref: int
    first_sect: int
    last_sect: int

    @property
    def offset(self) -> int:
        return self.first_sect * BLKIF_SECTOR_SIZE

    @property
    def length(self) -> int:
        return (self.last_sect - self.first_sect + 1) * BLKIF_SECTOR_SIZE


@dataclass(frozen=True)
class Request:
    """A validated request: ``operation`` is the one to carry out (an indirect
    request's ``indirect_op``), ``nr_sectors`` the disk range's length."""

    id: int
    operation: BlkifOp
    sector_number: int
    nr_sectors: int
    segments: tuple[Segment, ...] = ()
    indirect: bool = False


@dataclass(frozen=True)
class Rejected:
    """A request answered without touching the disk."""

    id: int
    operation: int
    status: BlkifRsp
    why: str


def encode_response(abi: Abi, req_id: int, operation: int, status: int) -> bytes:
    """The response slot contents for ``abi``."""
    return _RESPONSES[abi].pack(req_id & (1 << 64) - 1, operation & 0xFF, status)


def _segments(raw: Sequence[tuple[int, int, int]], sector_number: int,
              disk_sectors: int) -> tuple[tuple[Segment, ...], int] | str:
    """Validated segments and their sector count, or why they are invalid."""
    segs = []
    total = 0
    for i, (gref, first, last) in enumerate(raw):
        if first > last or last >= BLKIF_SECTORS_PER_PAGE:
            return f"segment {i}: sectors {first}..{last} are not within a page"
        segs.append(Segment(gref, first, last))
        total += last - first + 1
    if total and sector_number + total > disk_sectors:  # a bare flush names no range
        return (f"sectors {sector_number}..{sector_number + total - 1} are beyond "
                f"the disk's {disk_sectors}")
    return tuple(segs), total


def decode(abi: Abi, slot: bytes, disk_sectors: int, pages: PageAccess, *,
           discard: bool = False,
           max_indirect_segments: int = MAX_INDIRECT_SEGMENTS) -> Request | Rejected:
    """Decode and validate one request slot (a copy, at least one entry long)."""
    req_t, indirect_t, discard_t, _ = _LAYOUTS[abi]
    data = bytes(slot[: ctypes.sizeof(req_t)]).ljust(ctypes.sizeof(req_t), b"\0")
    req = req_t.from_buffer_copy(data)
    req_id, op = int(req.id), int(req.operation)

    def reject(why: str, status: BlkifRsp = BlkifRsp.ERROR, echo: int = op) -> Rejected:
        return Rejected(req_id, echo, status, why)

    if op in (BlkifOp.READ, BlkifOp.WRITE, BlkifOp.WRITE_BARRIER, BlkifOp.FLUSH_DISKCACHE):
        nr = int(req.nr_segments)
        least = 1 if op in (BlkifOp.READ, BlkifOp.WRITE) else 0
        if not least <= nr <= BLKIF_MAX_SEGMENTS_PER_REQUEST:
            return reject(f"{nr} segments (allowed {least}..{BLKIF_MAX_SEGMENTS_PER_REQUEST})")
        sector = int(req.sector_number)
        raw = [(int(s.gref), int(s.first_sect), int(s.last_sect)) for s in req.seg[:nr]]
        checked = _segments(raw, sector, disk_sectors)
        if isinstance(checked, str):
            return reject(checked)
        segs, total = checked
        return Request(req_id, BlkifOp(op), sector, total, segs)
    if op == BlkifOp.INDIRECT:
        ind = indirect_t.from_buffer_copy(data[: ctypes.sizeof(indirect_t)])
        inner = int(ind.indirect_op)
        if inner not in (BlkifOp.READ, BlkifOp.WRITE):
            return reject(f"indirect operation {inner}", echo=inner)
        nr = int(ind.nr_segments)
        limit = min(max_indirect_segments,
                    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * BLKIF_SEGMENTS_PER_INDIRECT_PAGE)
        if not 1 <= nr <= limit:
            return reject(f"{nr} indirect segments (allowed 1..{limit})", echo=inner)
        npages = -(-nr // BLKIF_SEGMENTS_PER_INDIRECT_PAGE)
        chunks = []
        for i in range(npages):
            count = min(nr - i * BLKIF_SEGMENTS_PER_INDIRECT_PAGE,
                        BLKIF_SEGMENTS_PER_INDIRECT_PAGE)
            chunks.append((int(ind.indirect_grefs[i]), 0, count * _SEGMENT.size))
        try:
            lists = pages.copy_from_guest(chunks)
        except GrantError as e:
            return reject(f"indirect page: {e}", echo=inner)
        raw = [(int(g), int(f), int(la)) for blob in lists
               for g, f, la in _SEGMENT.iter_unpack(blob)]
        sector = int(ind.sector_number)
        checked = _segments(raw, sector, disk_sectors)
        if isinstance(checked, str):
            return reject(checked, echo=inner)
        segs, total = checked
        return Request(req_id, BlkifOp(inner), sector, total, segs, indirect=True)
    if op == BlkifOp.DISCARD:
        if not discard:
            return reject("discard is not enabled", BlkifRsp.EOPNOTSUPP)
        dis = discard_t.from_buffer_copy(data[: ctypes.sizeof(discard_t)])
        sector, count = int(dis.sector_number), int(dis.nr_sectors)
        if sector + count > disk_sectors:
            return reject(f"discard of {count} sectors from {sector} is beyond "
                          f"the disk's {disk_sectors}")
        return Request(req_id, BlkifOp.DISCARD, sector, count)
    return reject(f"operation {op} is not supported", BlkifRsp.EOPNOTSUPP)


# --- the disk image ------------------------------------------------------------


class Image(Protocol):
    """A disk a :class:`Backend` serves: ``sectors`` 512-byte sectors.

    Offsets and lengths are in bytes and lie on the disk (:func:`decode`
    checks them before anything reaches the image).  Every method raises
    ``OSError`` on failure; the Backend turns that into BLKIF_RSP_ERROR.
    """

    @property
    def read_only(self) -> bool:
        """Writes, flushes and discards are refused (the Backend refuses them first)."""
        ...

    @property
    def sectors(self) -> int:
        """The disk's length in 512-byte sectors."""
        ...

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset``."""
        ...

    def write(self, offset: int, data: bytes) -> None:
        """Store ``data`` at ``offset`` (durable once a later flush completes)."""
        ...

    def flush(self) -> None:
        """Make every write completed so far durable."""
        ...

    def discard(self, offset: int, length: int) -> None:
        """Deallocate where possible; the range then reads as zeroes."""
        ...

    def close(self) -> None:
        """Release the image (idempotent)."""
        ...


FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int


class DiskImage:
    """A raw image file: ``sectors`` 512-byte sectors (a partial tail is unused)."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        self.fd = os.open(path, flags)
        self.read_only = read_only
        self.sectors = os.fstat(self.fd).st_size // BLKIF_SECTOR_SIZE
        self.punch_holes = _fallocate is not None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> DiskImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            got = os.pread(self.fd, length - len(out), offset + len(out))
            if not got:
                raise OSError(errno.EIO, f"short read at {offset + len(out)}")
            out += got
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        done = 0
        while done < len(view):
            wrote = os.pwrite(self.fd, view[done:], offset + done)
            if wrote <= 0:
                raise OSError(errno.EIO, f"short write at {offset + done}")
            done += wrote

    def flush(self) -> None:
        os.fsync(self.fd)

    def discard(self, offset: int, length: int) -> None:
        """Deallocate (the range then reads as zeroes)."""
        if length == 0:
            return
        if self.punch_holes and _fallocate is not None:
            mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
            if _fallocate(self.fd, mode, offset, length) == 0:
                return
            err = ctypes.get_errno()
            if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise OSError(err, os.strerror(err))
            self.punch_holes = False
        zeroes = bytes(min(length, 1 << 20))
        done = 0
        while done < length:
            chunk = min(len(zeroes), length - done)
            self.write(offset + done, zeroes[:chunk])
            done += chunk




def open_image(path: str | os.PathLike[str], format: str = "raw", *,
               read_only: bool = False) -> Image:
    """The disk ``path`` in xl's ``format``: raw is a :class:`DiskImage`, qcow2
    an :class:`~pyxen.services.blkback.nbd.NbdImage` on a new qemu-nbd."""
    if format == "raw":
        return DiskImage(path, read_only=read_only)
    if format == "qcow2":
        return open_nbd_image(path, "qcow2", read_only=read_only)
    raise ValueError(f"disk format {format!r} is not supported: pyxen serves "
                     f"{' and '.join(IMAGE_FORMATS)} images")


# --- execution ------------------------------------------------------------------

_WRITES = (BlkifOp.WRITE, BlkifOp.WRITE_BARRIER, BlkifOp.FLUSH_DISKCACHE)


class Backend:
    """One disk served to one frontend: slot in, response slot out."""

    def __init__(self, disk: Image, pages: PageAccess, abi: Abi, *,
                 discard: bool = True,
                 max_indirect_segments: int = MAX_INDIRECT_SEGMENTS) -> None:
        self.disk = disk
        self.pages = pages
        self.abi = abi
        self.discard = discard and not disk.read_only
        self.max_indirect_segments = max_indirect_segments
        self.last_error = ""  # why the last request failed, for the log

    def handle(self, slot: bytes) -> bytes:
        """Serve one request slot; the response slot to put on the ring."""
        req = decode(self.abi, slot, self.disk.sectors, self.pages, discard=self.discard,
                     max_indirect_segments=self.max_indirect_segments)
        if isinstance(req, Rejected):
            self.last_error = req.why
            return encode_response(self.abi, req.id, req.operation, req.status)
        status = self.execute(req)
        return encode_response(self.abi, req.id, req.operation, status)

    def execute(self, req: Request) -> BlkifRsp:
        """Carry out a validated request."""
        if self.disk.read_only and req.operation != BlkifOp.READ:
            self.last_error = "the disk is read-only"
            return BlkifRsp.ERROR
        offset = req.sector_number * BLKIF_SECTOR_SIZE
        try:
            if req.operation == BlkifOp.READ:
                data = self.disk.read(offset, req.nr_sectors * BLKIF_SECTOR_SIZE)
                chunks, at = [], 0
                for seg in req.segments:
                    chunks.append((seg.gref, seg.offset, data[at : at + seg.length]))
                    at += seg.length
                self.pages.copy_to_guest(chunks)
            elif req.operation in _WRITES:
                if req.segments:
                    parts = self.pages.copy_from_guest(
                        [(s.gref, s.offset, s.length) for s in req.segments])
                    self.disk.write(offset, b"".join(parts))
                if req.operation != BlkifOp.WRITE:
                    self.disk.flush()
            elif req.operation == BlkifOp.DISCARD:
                self.disk.discard(offset, req.nr_sectors * BLKIF_SECTOR_SIZE)
        except (GrantError, OSError) as e:
            self.last_error = str(e)
            return BlkifRsp.ERROR
        return BlkifRsp.OKAY

