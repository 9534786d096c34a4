"""blkif request decoding and execution (pyxen.services.blkback.requests) without
KVM: granted pages are a dict of bytearrays, the disk a real file in tmp_path."""

from __future__ import annotations

import ctypes
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from blkback_fakes import (
    ID,
    LAYOUTS,
    FakePages,
    discard,
    indirect,
    indirect_pages,
    pattern,
    response,
    rw,
)

from pyxen.abi.blkif import BlkifOp, BlkifRsp
from pyxen.services.blkback.requests import (
    MAX_INDIRECT_SEGMENTS,
    Abi,
    Backend,
    DiskImage,
    Rejected,
    Request,
    decode,
    encode_response,
)
from pyxen.services.ring import PAGE_SIZE, BackRing, FrontRing

SECTORS = 2048  # a 1 MiB disk


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(pattern(0, SECTORS * 512))
    return path


@pytest.fixture(params=list(Abi), ids=lambda a: a.name)
def abi(request: pytest.FixtureRequest) -> Abi:
    value: Abi = request.param
    return value


@pytest.fixture
def disk(image: Path) -> Iterator[DiskImage]:
    with DiskImage(image) as d:
        yield d


def backend(disk: DiskImage, pages: FakePages, abi: Abi,
            max_indirect_segments: int = MAX_INDIRECT_SEGMENTS) -> Backend:
    return Backend(disk, pages, abi, max_indirect_segments=max_indirect_segments)


def test_layouts_and_protocol_names() -> None:
    assert Abi("x86_32-abi") is Abi.X86_32 and Abi("x86_64-abi") is Abi.X86_64
    assert (Abi.X86_64.entry_size, Abi.X86_32.entry_size) == (112, 108)
    assert len(encode_response(Abi.X86_64, 1, 0, 0)) == 16
    assert len(encode_response(Abi.X86_32, 1, 0, 0)) == 12
    assert response(Abi.X86_32, encode_response(Abi.X86_32, ID, 3, -2)) == (ID, 3, -2)


def test_write_then_read_back(disk: DiskImage, image: Path, abi: Abi) -> None:
    pages = FakePages()
    be = backend(disk, pages, abi)
    data = [pattern(i + 1, PAGE_SIZE) for i in range(3)]
    for i, d in enumerate(data):
        pages.grant(10 + i, d, read_only=True)  # a write's pages may be read-only
    rsp = be.handle(rw(abi, BlkifOp.WRITE, 100, [(10, 0, 7), (11, 0, 7), (12, 2, 5)]))
    assert response(abi, rsp) == (ID, BlkifOp.WRITE, BlkifRsp.OKAY)
    expected = data[0] + data[1] + data[2][2 * 512 : 6 * 512]
    assert image.read_bytes()[100 * 512 : 100 * 512 + len(expected)] == expected
    assert pages.calls == 1  # one batch per request

    for g in (20, 21):
        pages.grant(g)
    rsp = be.handle(rw(abi, BlkifOp.READ, 100, [(20, 0, 7), (21, 3, 7)], req_id=7))
    assert response(abi, rsp) == (7, BlkifOp.READ, BlkifRsp.OKAY)
    assert pages.pages[20] == data[0]
    assert pages.pages[21][3 * 512 :] == data[1][: 5 * 512]
    assert pages.pages[21][: 3 * 512] == bytes(3 * 512)  # untouched outside the segment


def test_read_of_the_last_sector(disk: DiskImage, image: Path, abi: Abi) -> None:
    pages = FakePages()
    pages.grant(1)
    rsp = backend(disk, pages, abi).handle(rw(abi, BlkifOp.READ, SECTORS - 1, [(1, 7, 7)]))
    assert response(abi, rsp)[2] == BlkifRsp.OKAY
    assert pages.pages[1][7 * 512 :] == image.read_bytes()[-512:]


def test_flush_and_barrier_fsync(disk: DiskImage, image: Path, abi: Abi,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[bytes] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(image.read_bytes()[:512])
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    pages = FakePages()
    pages.grant(5, b"B" * PAGE_SIZE)
    be = backend(disk, pages, abi)
    rsp = be.handle(rw(abi, BlkifOp.FLUSH_DISKCACHE, 0, []))
    assert response(abi, rsp) == (ID, BlkifOp.FLUSH_DISKCACHE, BlkifRsp.OKAY)
    assert len(synced) == 1
    rsp = be.handle(rw(abi, BlkifOp.FLUSH_DISKCACHE, (1 << 64) - 1, []))  # no range: no check
    assert response(abi, rsp)[2] == BlkifRsp.OKAY
    assert len(synced) == 2
    rsp = be.handle(rw(abi, BlkifOp.WRITE_BARRIER, 0, [(5, 0, 0)]))
    assert response(abi, rsp) == (ID, BlkifOp.WRITE_BARRIER, BlkifRsp.OKAY)
    assert synced[-1] == b"B" * 512  # the barrier's data was on the image when synced
    rsp = be.handle(rw(abi, BlkifOp.WRITE, 0, [(5, 0, 0)]))
    assert len(synced) == 3  # a plain write does not sync


def test_discard_punches_zeroes(disk: DiskImage, image: Path, abi: Abi) -> None:
    be = backend(disk, FakePages(), abi)
    rsp = be.handle(discard(abi, 8, 16))
    assert response(abi, rsp) == (ID, BlkifOp.DISCARD, BlkifRsp.OKAY)
    after = image.read_bytes()
    assert len(after) == SECTORS * 512
    assert after[8 * 512 : 24 * 512] == bytes(16 * 512)
    assert after[: 8 * 512] == pattern(0, SECTORS * 512)[: 8 * 512]
    assert after[24 * 512 :] == pattern(0, SECTORS * 512)[24 * 512 :]


def test_discard_without_hole_punching_writes_zeroes(disk: DiskImage, image: Path) -> None:
    disk.punch_holes = False
    rsp = backend(disk, FakePages(), Abi.X86_64).handle(discard(Abi.X86_64, 0, SECTORS))
    assert response(Abi.X86_64, rsp)[2] == BlkifRsp.OKAY
    assert image.read_bytes() == bytes(SECTORS * 512)


def test_discard_checks(disk: DiskImage, abi: Abi) -> None:
    rsp = backend(disk, FakePages(), abi).handle(discard(abi, SECTORS - 1, 2))
    assert response(abi, rsp) == (ID, BlkifOp.DISCARD, BlkifRsp.ERROR)
    off = Backend(disk, FakePages(), abi, discard=False)
    assert response(abi, off.handle(discard(abi, 0, 1)))[2] == BlkifRsp.EOPNOTSUPP


@pytest.mark.parametrize("nr", [1, 20, 600])
def test_indirect_write_then_read(disk: DiskImage, image: Path, abi: Abi, nr: int) -> None:
    pages = FakePages()
    be = backend(disk, pages, abi, max_indirect_segments=1024)
    data = pattern(nr, nr * 512)
    segs = []
    for i in range(nr):  # one sector per page, at a varying place in it
        s = i % 8
        page = bytearray(PAGE_SIZE)
        page[s * 512 : (s + 1) * 512] = data[i * 512 : (i + 1) * 512]
        pages.grant(1000 + i, bytes(page))
        segs.append((1000 + i, s, s))
    refs = indirect_pages(pages, segs, 5000)
    assert len(refs) == (2 if nr > 512 else 1)
    rsp = be.handle(indirect(abi, BlkifOp.WRITE, 10, nr, refs))
    assert response(abi, rsp) == (ID, BlkifOp.WRITE, BlkifRsp.OKAY)  # echoes indirect_op
    assert image.read_bytes()[10 * 512 : (10 + nr) * 512] == data

    read_segs = [(3000 + i, 0, 0) for i in range(nr)]
    for g, _, _ in read_segs:
        pages.grant(g)
    refs = indirect_pages(pages, read_segs, 6000)
    rsp = be.handle(indirect(abi, BlkifOp.READ, 10, nr, refs))
    assert response(abi, rsp) == (ID, BlkifOp.READ, BlkifRsp.OKAY)
    assert b"".join(bytes(pages.pages[3000 + i][:512]) for i in range(nr)) == data


def test_indirect_bad_requests(disk: DiskImage, abi: Abi) -> None:
    pages = FakePages()
    be = backend(disk, pages, abi)
    refs = indirect_pages(pages, [(1, 0, 7)] * 4, 50)
    pages.grant(1)
    ok = be.handle(indirect(abi, BlkifOp.READ, 0, 4, refs))
    assert response(abi, ok)[2] == BlkifRsp.OKAY
    for bad in (indirect(abi, BlkifOp.FLUSH_DISKCACHE, 0, 4, refs),  # not READ/WRITE
                indirect(abi, BlkifOp.READ, 0, 0, refs),  # no segments
                indirect(abi, BlkifOp.READ, 0, MAX_INDIRECT_SEGMENTS + 1, refs),
                indirect(abi, BlkifOp.READ, 0, 4, [999]),  # bad indirect page ref
                indirect(abi, BlkifOp.READ, SECTORS - 8, 4, refs)):  # beyond the disk
        assert response(abi, be.handle(bad))[2] == BlkifRsp.ERROR
    short = indirect_pages(pages, [(1, 0, 7)] * 2, 60)  # 4 segments, a page listing 2
    rsp = be.handle(indirect(abi, BlkifOp.READ, 0, 4, short))
    assert response(abi, rsp)[2] == BlkifRsp.ERROR  # the rest are gref 0, not granted
    bad_seg = indirect_pages(pages, [(1, 5, 4)], 70)
    assert response(abi, be.handle(indirect(abi, BlkifOp.READ, 0, 1, bad_seg)))[2] \
        == BlkifRsp.ERROR


@pytest.mark.parametrize(("case", "slot_args"), [
    ("no segments", (BlkifOp.READ, 0, [], None)),
    ("no segments (write)", (BlkifOp.WRITE, 0, [], None)),
    ("12 segments", (BlkifOp.READ, 0, [(1, 0, 0)] * 11, 12)),
    ("255 segments", (BlkifOp.WRITE, 0, [(1, 0, 0)] * 11, 255)),
    ("12 segments (flush)", (BlkifOp.FLUSH_DISKCACHE, 0, [(1, 0, 0)] * 11, 12)),
    ("first after last", (BlkifOp.READ, 0, [(1, 4, 3)], None)),
    ("beyond the page", (BlkifOp.READ, 0, [(1, 0, 8)], None)),
    ("beyond the disk", (BlkifOp.READ, SECTORS, [(1, 0, 0)], None)),
    ("straddling the end", (BlkifOp.WRITE, SECTORS - 4, [(1, 0, 7)], None)),
    ("huge sector", (BlkifOp.READ, (1 << 64) - 1, [(1, 0, 0)], None)),
    ("bad grant ref (read)", (BlkifOp.READ, 0, [(1, 0, 7), (77, 0, 7)], None)),
    ("bad grant ref (write)", (BlkifOp.WRITE, 0, [(1, 0, 7), (77, 0, 7)], None)),
    ("bad grant ref (barrier)", (BlkifOp.WRITE_BARRIER, 0, [(77, 0, 7)], None)),
    ("read into a read-only grant", (BlkifOp.READ, 0, [(2, 0, 7)], None)),
])
def test_bad_requests_get_error_responses(disk: DiskImage, image: Path, abi: Abi, case: str,
                                          slot_args: tuple[int, int, list[tuple[int, int, int]],
                                                           int | None]) -> None:
    pages = FakePages()
    pages.grant(1, b"\x55" * PAGE_SIZE)
    pages.grant(2, read_only=True)
    before = image.read_bytes()
    op, sector, segs, nr = slot_args
    rsp = backend(disk, pages, abi).handle(rw(abi, op, sector, segs, nr))
    assert response(abi, rsp) == (ID, op, BlkifRsp.ERROR), case
    assert image.read_bytes() == before  # a failed write touched nothing


@pytest.mark.parametrize("op", [BlkifOp.RESERVED_1, 7, 0x80, 0xFF])
def test_unknown_operations_are_not_supported(disk: DiskImage, abi: Abi, op: int) -> None:
    rsp = backend(disk, FakePages(), abi).handle(rw(abi, op, 0, [(1, 0, 0)]))
    assert response(abi, rsp) == (ID, op, BlkifRsp.EOPNOTSUPP)


def test_read_only_disk_refuses_writes(image: Path, abi: Abi) -> None:
    before = image.read_bytes()
    pages = FakePages()
    pages.grant(1, b"W" * PAGE_SIZE)
    with DiskImage(image, read_only=True) as ro:
        be = backend(ro, pages, abi)
        for slot in (rw(abi, BlkifOp.WRITE, 0, [(1, 0, 7)]),
                     rw(abi, BlkifOp.WRITE_BARRIER, 0, [(1, 0, 7)]),
                     rw(abi, BlkifOp.FLUSH_DISKCACHE, 0, []),
                     indirect(abi, BlkifOp.WRITE, 0, 1, indirect_pages(pages, [(1, 0, 7)], 9))):
            assert response(abi, be.handle(slot))[2] == BlkifRsp.ERROR
        assert response(abi, be.handle(discard(abi, 0, 8)))[2] == BlkifRsp.EOPNOTSUPP
        pages.grant(3)
        assert response(abi, be.handle(rw(abi, BlkifOp.READ, 0, [(3, 0, 7)])))[2] \
            == BlkifRsp.OKAY
        assert pages.pages[3] == before[:PAGE_SIZE]
    assert image.read_bytes() == before


def test_image_errors_become_error_responses(disk: DiskImage, abi: Abi,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args: object) -> None:
        raise OSError(5, "Input/output error")

    for name in ("pread", "pwrite", "fsync"):
        monkeypatch.setattr(os, name, fail)
    pages = FakePages()
    pages.grant(1)
    be = backend(disk, pages, abi)
    for slot in (rw(abi, BlkifOp.READ, 0, [(1, 0, 7)]), rw(abi, BlkifOp.WRITE, 0, [(1, 0, 7)]),
                 rw(abi, BlkifOp.FLUSH_DISKCACHE, 0, [])):
        assert response(abi, be.handle(slot))[2] == BlkifRsp.ERROR
    assert "Input/output error" in be.last_error


def test_decode_gives_requests(disk: DiskImage, abi: Abi) -> None:
    req = decode(abi, rw(abi, BlkifOp.WRITE, 3, [(9, 1, 2), (8, 0, 7)]), SECTORS, FakePages())
    assert isinstance(req, Request)
    assert (req.id, req.operation, req.sector_number, req.nr_sectors) == (ID, BlkifOp.WRITE, 3, 10)
    assert [(s.gref, s.offset, s.length) for s in req.segments] == [(9, 512, 1024),
                                                                     (8, 0, 4096)]
    short = decode(abi, b"\x01", SECTORS, FakePages())  # a truncated slot is zero-filled
    assert isinstance(short, Rejected)


def test_random_slots_never_raise(disk: DiskImage, image: Path, abi: Abi) -> None:
    """Hostile slots: every one gets a response of the right size, with its id."""
    pages = FakePages()
    for g in range(8):
        pages.grant(g)
    be = backend(disk, pages, abi)
    rng = random.Random(13)
    id_offset = LAYOUTS[abi][0].id.offset
    for i in range(2000):
        slot = bytearray(rng.randbytes(abi.entry_size))
        slot[0] = rng.choice([0, 1, 2, 3, 4, 5, 6, rng.randrange(256)])
        if i % 2:  # make some of them nearly valid
            slot[1] = rng.randrange(13)
            for s in range(11):
                base = (24 if abi is Abi.X86_64 else 20) + 8 * s
                slot[base : base + 4] = rng.randrange(10).to_bytes(4, "little")
                slot[base + 4], slot[base + 5] = rng.randrange(9), rng.randrange(9)
            sector = LAYOUTS[abi][0].sector_number.offset
            slot[sector : sector + 8] = rng.randrange(SECTORS).to_bytes(8, "little")
        rsp = be.handle(bytes(slot))
        assert len(rsp) == ctypes.sizeof(LAYOUTS[abi][3])
        assert response(abi, rsp)[0] == int.from_bytes(slot[id_offset : id_offset + 8], "little")
    assert os.path.getsize(image) == SECTORS * 512


def test_through_the_ring(disk: DiskImage, image: Path, abi: Abi) -> None:
    """A frontend's requests go through a two-page ring and are answered in order."""
    area = [memoryview(bytearray(PAGE_SIZE)) for _ in range(2)]
    front = FrontRing(area, abi.entry_size)
    back = BackRing(area, abi.entry_size)
    pages = FakePages()
    be = backend(disk, pages, abi)
    for i in range(40):
        pages.grant(i, pattern(100 + i, PAGE_SIZE))
        front.put_request(rw(abi, BlkifOp.WRITE, 8 * i, [(i, 0, 7)], req_id=i))
    front.put_request(rw(abi, BlkifOp.FLUSH_DISKCACHE, 0, [], req_id=40))
    assert front.push_requests()
    answered = []
    while back.final_check_for_requests():
        for slot in back.take_requests():
            back.put_response(be.handle(slot))
        back.push_responses()
        answered += [response(abi, r) for r in front.take_responses()]
    assert [a[0] for a in answered] == list(range(41))
    assert all(a[2] == BlkifRsp.OKAY for a in answered)
    assert image.read_bytes()[: 40 * PAGE_SIZE] == b"".join(pattern(100 + i, PAGE_SIZE)
                                                            for i in range(40))
