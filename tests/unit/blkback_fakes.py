"""Test helpers for blkback: granted pages as a dict of bytearrays (a fake
PageAccess) and builders of request slots of either ABI."""

from __future__ import annotations

import ctypes
import random
from collections.abc import Sequence

from pyxen.abi.blkif import (
    BLKIF_SEGMENTS_PER_INDIRECT_PAGE,
    BlkifOp,
    blkif_request,
    blkif_request_discard,
    blkif_request_indirect,
    blkif_response,
    compat_blkif_request,
    compat_blkif_request_discard,
    compat_blkif_request_indirect,
    compat_blkif_response,
)
from pyxen.services.blkback.requests import Abi, GrantError
from pyxen.services.ring import PAGE_SIZE

ID = 0xDEADBEEF_CAFEF00D


class FakePages:
    """Granted pages by ref; ``read_only`` refs refuse copies into them."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}
        self.read_only: set[int] = set()
        self.calls = 0

    def grant(self, gref: int, data: bytes = b"", *, read_only: bool = False) -> bytearray:
        page = bytearray(data.ljust(PAGE_SIZE, b"\0"))
        self.pages[gref] = page
        if read_only:
            self.read_only.add(gref)
        return page

    def _page(self, gref: int, offset: int, length: int) -> bytearray:
        if gref not in self.pages:
            raise GrantError(gref)
        assert offset >= 0 and offset + length <= PAGE_SIZE
        return self.pages[gref]

    def copy_from_guest(self, chunks: Sequence[tuple[int, int, int]]) -> list[bytes]:
        self.calls += 1
        return [bytes(self._page(g, o, n)[o : o + n]) for g, o, n in chunks]

    def copy_to_guest(self, chunks: Sequence[tuple[int, int, bytes]]) -> None:
        self.calls += 1
        for g, o, data in chunks:
            page = self._page(g, o, len(data))
            if g in self.read_only:
                raise GrantError(g, "granted read-only")
            page[o : o + len(data)] = data


LAYOUTS = {
    Abi.X86_64: (blkif_request, blkif_request_indirect, blkif_request_discard, blkif_response),
    Abi.X86_32: (compat_blkif_request, compat_blkif_request_indirect,
                 compat_blkif_request_discard, compat_blkif_response),
}


def rw(abi: Abi, op: int, sector: int, segs: Sequence[tuple[int, int, int]],
       nr: int | None = None, req_id: int = ID) -> bytes:
    req = LAYOUTS[abi][0]()
    req.operation, req.id, req.sector_number, req.handle = op, req_id, sector, 0xCA00
    req.nr_segments = len(segs) if nr is None else nr
    for i, (g, f, last) in enumerate(segs):
        req.seg[i].gref, req.seg[i].first_sect, req.seg[i].last_sect = g, f, last
    return bytes(req)


def indirect(abi: Abi, op: int, sector: int, nr: int, grefs: Sequence[int]) -> bytes:
    req = LAYOUTS[abi][1]()
    req.operation, req.indirect_op, req.nr_segments = BlkifOp.INDIRECT, op, nr
    req.id, req.sector_number = ID, sector
    for i, g in enumerate(grefs):
        req.indirect_grefs[i] = g
    return bytes(req)


def discard(abi: Abi, sector: int, count: int) -> bytes:
    req = LAYOUTS[abi][2]()
    req.operation, req.id, req.sector_number, req.nr_sectors = BlkifOp.DISCARD, ID, sector, count
    return bytes(req)


def response(abi: Abi, raw: bytes) -> tuple[int, int, int]:
    rsp = LAYOUTS[abi][3].from_buffer_copy(raw.ljust(ctypes.sizeof(LAYOUTS[abi][3]), b"\0"))
    return int(rsp.id), int(rsp.operation), int(rsp.status)


def pattern(seed: int, length: int) -> bytes:
    return random.Random(seed).randbytes(length)


def indirect_pages(pages: FakePages, segs: Sequence[tuple[int, int, int]],
                    first_ref: int) -> list[int]:
    refs: list[int] = []
    for i in range(0, len(segs), BLKIF_SEGMENTS_PER_INDIRECT_PAGE):
        blob = b"".join(g.to_bytes(4, "little") + bytes([f, last, 0, 0])
                        for g, f, last in segs[i : i + BLKIF_SEGMENTS_PER_INDIRECT_PAGE])
        ref = first_ref + len(refs)
        pages.grant(ref, blob, read_only=True)
        refs.append(ref)
    return refs
