"""The generic shared ring (pyxen.services.ring) without KVM: a
frontend and a backend over the same bytearray pages."""

from __future__ import annotations

import ctypes

import pytest

from pyxen.abi.blkif import (
    SRING_HEADER_SIZE,
    blkif_sring,
    blkif_sring_entry,
    compat_blkif_sring_entry,
)
from pyxen.services.ring import (
    HEADER_SIZE,
    PAGE_SIZE,
    REQ_EVENT,
    REQ_PROD,
    RSP_EVENT,
    RSP_PROD,
    BackRing,
    FrontRing,
    RingError,
    full_barrier,
    ring_size,
)

ENTRY = ctypes.sizeof(blkif_sring_entry)
COMPAT_ENTRY = ctypes.sizeof(compat_blkif_sring_entry)


def _pair(pages: int = 1, entry: int = ENTRY) -> tuple[bytearray, FrontRing, BackRing]:
    area = bytearray(pages * PAGE_SIZE)
    front = FrontRing(memoryview(area), entry)
    back = BackRing(memoryview(area), entry)
    return area, front, back


def _u32(area: bytearray, offset: int) -> int:
    return int.from_bytes(area[offset : offset + 4], "little")


def _set_u32(area: bytearray, offset: int, value: int) -> None:
    area[offset : offset + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")


def test_header_offsets_match_the_abi() -> None:
    assert HEADER_SIZE == SRING_HEADER_SIZE == blkif_sring.ring.offset
    abi = (blkif_sring.req_prod.offset, blkif_sring.req_event.offset,
           blkif_sring.rsp_prod.offset, blkif_sring.rsp_event.offset)
    assert abi == (REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT)


@pytest.mark.parametrize(("pages", "entries"), [(1, 32), (2, 64), (4, 128), (8, 256)])
def test_ring_size_is_a_power_of_two_of_entries(pages: int, entries: int) -> None:
    assert ring_size(pages * PAGE_SIZE, ENTRY) == entries
    assert ring_size(pages * PAGE_SIZE, COMPAT_ENTRY) == entries  # 108-byte slots too
    assert ring_size(4096, 16) == 128  # (4096 - 64) / 16 = 252 -> 128


def test_ring_size_rejects_areas_without_room() -> None:
    with pytest.raises(ValueError):
        ring_size(100, ENTRY)
    with pytest.raises(ValueError):
        BackRing(memoryview(bytearray(100)), ENTRY)
    with pytest.raises(ValueError):
        BackRing([memoryview(bytearray(4096)), memoryview(bytearray(10))], ENTRY)


def test_frontend_initialises_the_header() -> None:
    area = bytearray(b"\xff" * PAGE_SIZE)
    FrontRing(memoryview(area), ENTRY)
    assert [_u32(area, o) for o in (REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT)] == [0, 1, 0, 1]
    assert area[16:64] == bytes(48)


def test_requests_and_responses_round_trip() -> None:
    _, front, back = _pair()
    assert not back.final_check_for_requests()
    front.put_request(b"one")
    front.put_request(b"two")
    assert front.push_requests()  # the backend armed req_event = 1
    assert back.final_check_for_requests()
    reqs = back.take_requests()
    assert [r[:3] for r in reqs] == [b"one", b"two"]
    assert all(len(r) == ENTRY for r in reqs)
    back.put_response(b"r1")
    back.put_response(b"r2")
    assert back.push_responses()  # rsp_event is 1
    assert [r[:2] for r in front.take_responses()] == [b"r1", b"r2"]
    assert back.take_requests() == []


def test_notify_follows_the_event_indices() -> None:
    area, front, back = _pair()
    front.put_request(b"a")
    assert front.push_requests()
    # The backend has not re-armed req_event: more requests need no event.
    front.put_request(b"b")
    assert not front.push_requests()
    assert len(back.take_requests()) == 2
    assert not back.final_check_for_requests()
    assert _u32(area, REQ_EVENT) == 3
    front.put_request(b"c")
    assert front.push_requests()
    # Responses: the frontend has not re-armed rsp_event past 1.
    back.take_requests()
    for _ in range(3):
        back.put_response(b"x")
    assert back.push_responses()  # 1 in (0, 3]
    assert not back.push_responses()  # nothing new
    assert len(front.take_responses()) == 3
    assert not front.final_check_for_responses()
    assert _u32(area, RSP_EVENT) == 4


def test_final_check_sees_a_request_published_before_the_check() -> None:
    area = bytearray(PAGE_SIZE)
    front = FrontRing(memoryview(area), ENTRY)
    calls: list[int] = []

    def fence() -> None:  # the frontend publishes between arming and re-checking
        calls.append(1)
        front.put_request(b"late")
        front.push_requests()

    back = BackRing(memoryview(area), ENTRY, fence=fence)
    assert back.final_check_for_requests()
    assert calls == [1]
    assert back.take_requests()[0][:4] == b"late"


def test_indices_wrap_around_2_to_the_32() -> None:
    area = bytearray(PAGE_SIZE)
    start = 0xFFFF_FFF0
    back = BackRing(memoryview(area), ENTRY, start=start)
    for round_ in range(3):
        for i in range(20):
            slot = (start + i) & (back.size - 1)
            off = HEADER_SIZE + slot * ENTRY
            area[off : off + 2] = bytes([round_, i])
        start = (start + 20) & 0xFFFF_FFFF
        _set_u32(area, REQ_PROD, start)
        reqs = back.take_requests()
        assert [r[:2] for r in reqs] == [bytes([round_, i]) for i in range(20)]
        for _ in reqs:
            back.put_response(b"ok")
        back.push_responses()
        assert _u32(area, RSP_PROD) == start
    assert back.req_cons == back.rsp_prod_pvt == (0xFFFF_FFF0 + 60) & 0xFFFF_FFFF


def test_hostile_req_prod_is_a_protocol_error() -> None:
    area, _, back = _pair()
    _set_u32(area, REQ_PROD, back.size + 1)
    with pytest.raises(RingError):
        back.take_requests()
    with pytest.raises(RingError):
        back.final_check_for_requests()
    _set_u32(area, REQ_PROD, 0xFFFF_FFFF)  # "behind": would be 2^32 - 1 requests
    with pytest.raises(RingError):
        back.take_requests()


def test_a_full_ring_is_allowed_but_not_one_more_before_responses() -> None:
    area, _, back = _pair()
    _set_u32(area, REQ_PROD, back.size)
    assert len(back.take_requests()) == back.size
    back.put_response(b"done")
    back.push_responses()
    _set_u32(area, REQ_PROD, back.size + 1)  # one slot was freed
    assert len(back.take_requests()) == 1
    _set_u32(area, REQ_PROD, back.size + 2)  # no slot is free
    with pytest.raises(RingError):
        back.take_requests()


def test_req_prod_moving_back_is_a_protocol_error() -> None:
    area, _, back = _pair()
    _set_u32(area, REQ_PROD, 5)
    assert len(back.take_requests()) == 5
    _set_u32(area, REQ_PROD, 3)
    with pytest.raises(RingError):
        back.take_requests()


def test_responses_need_consumed_requests() -> None:
    _, _, back = _pair()
    with pytest.raises(ValueError):
        back.put_response(b"unasked")


def test_a_request_slot_is_copied_once() -> None:
    area, front, back = _pair()
    front.put_request(b"first")
    front.push_requests()
    (req,) = back.take_requests()
    area[HEADER_SIZE : HEADER_SIZE + 5] = b"later"  # the guest rewrites the slot
    assert req[:5] == b"first"


def test_multi_page_ring_slots_straddle_pages() -> None:
    pages = [bytearray(PAGE_SIZE) for _ in range(4)]
    views = [memoryview(p) for p in pages]
    front = FrontRing(views, ENTRY)
    back = BackRing(views, ENTRY)
    assert back.size == 128
    payloads = [bytes([i]) * ENTRY for i in range(back.size)]
    for p in payloads:
        front.put_request(p)
    front.push_requests()
    assert back.take_requests() == payloads  # slot 36 spans pages 0 and 1, ...
    for i in range(back.size):
        back.put_response(bytes([255 - i]) * 16)
    back.push_responses()
    assert [r[:16] for r in front.take_responses()] == [bytes([255 - i]) * 16
                                                        for i in range(back.size)]


def test_a_single_memoryview_of_pages_is_split() -> None:
    area = bytearray(2 * PAGE_SIZE)
    back = BackRing(memoryview(area), COMPAT_ENTRY)
    assert back.size == 64
    assert len(back.pages) == 2


def test_frontend_refuses_a_hostile_rsp_prod() -> None:
    area, front, _ = _pair()
    _set_u32(area, RSP_PROD, 1)
    with pytest.raises(RingError):
        front.take_responses()


def test_full_barrier_runs() -> None:
    full_barrier()
