"""Argo's ring arithmetic (hv/argo/ring.py) against Xen 4.12.1's rules, without KVM."""

from __future__ import annotations

import pytest

from pyxen.hv.argo import ring as R


def test_lengths_and_pages() -> None:
    assert R.MIN_RING_LEN == 48
    assert R.MAX_MESSAGE == 16 * 1024 * 1024 - 32
    assert R.npages(48) == 1
    assert R.npages(4096 - 64) == 1
    assert R.npages(4096 - 48) == 2
    assert R.npages(R.MAX_RING_LEN) == R.MAX_RING_PAGES + 1
    assert R.valid_length(48, 1)
    assert not R.valid_length(1, 1)  # the example: -EINVAL
    assert not R.valid_length(32, 1)
    assert not R.valid_length(56, 1)  # not whole slots
    assert not R.valid_length(48, 2)  # npages must be exact
    assert not R.valid_length(R.MAX_RING_LEN + 16, R.npages(R.MAX_RING_LEN + 16))
    assert R.valid_length(R.MAX_RING_LEN - 64, R.MAX_RING_PAGES)


@pytest.mark.parametrize(("rx", "expected"), [
    (0, 0), (1, 16), (15, 16), (16, 16), (240, 240), (241, 0), (256, 0),
    (0xFFFF_FFFF, 0), (0xFFFF_FFF8, 0), (1 << 40, 0),
])
def test_rx_ptr_is_sanitised(rx: int, expected: int) -> None:
    assert R.sanitize_rx(rx, 256) == expected


def test_space_keeps_one_slot_free() -> None:
    length = 256
    assert R.free_space(0, 0, length) == length  # rx == tx: empty, never full
    assert R.payload_space(0, 0, length) == length - 32 == R.max_message_size(length)
    assert R.free_space(32, 0, length) == 32
    assert R.free_space(0, 32, length) == 224
    # A message needs its slots plus a header strictly below the free space.
    assert R.fits(224, 0, 0, length)  # the largest payload, in an empty ring
    assert not R.fits(225, 0, 0, length)
    assert R.too_big(225, length) and not R.too_big(224, length)
    assert not R.fits(0, 32, 16, length)  # 16 + 0 < 16 is false
    assert R.fits(0, 48, 16, length)


def test_wrap_runs_and_next_tx() -> None:
    assert R.wrap_runs(240, 16, 256) == ([(240, 16)], 0)
    assert R.wrap_runs(240, 20, 256) == ([(240, 16), (0, 4)], 4)
    assert R.wrap_runs(0, 0, 256) == ([], 0)
    assert R.next_tx(4, 256) == 16
    assert R.next_tx(250, 256) == 0
    assert R.next_tx(0, 256) == 0


@pytest.mark.parametrize(("tx", "rx", "expected"), [
    (32, 0, None),  # valid: kept
    (0, 0, None),
    (33, 0, 0),  # unaligned: reset to the reader's slot
    (33, 17, 32),
    (256, 100, 112),  # past the end
    (300, 250, 0),  # the reader's slot is past the end: 0
])
def test_repair_tx(tx: int, rx: int, expected: int | None) -> None:
    assert R.repair_tx(tx, rx, 256) == expected
