"""pvclock arithmetic, the seqlock writers and the shared-info layouts."""

from __future__ import annotations

import struct

import pytest

from pyxen.abi import xen as x
from pyxen.hv.pvclock import MAX_SLEW_NS, next_params
from pyxen.hv.shared_info import (
    LAYOUT_64,
    LAYOUT_COMPAT,
    TimeParams,
    scale_for,
    write_time,
    write_wallclock,
)


@pytest.mark.parametrize("hz", [1_000_000, 25_000_000, 999_999_937, 1_000_000_000,
                                2_100_000_000, 3_400_123_456, 5_000_000_000])
def test_scale_converts_ticks_to_ns_within_a_part_per_billion(hz: int) -> None:
    mul, shift = scale_for(hz, 1_000_000_000)
    assert 1 << 31 <= mul < 1 << 32
    params = TimeParams(tsc_timestamp=1000, system_time=0, mul=mul, shift=shift)
    ten_seconds = params.ns_at(1000 + 10 * hz)
    assert abs(ten_seconds - 10_000_000_000) <= 10


def test_scale_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        scale_for(0, 1)


def test_next_params_is_continuous_and_converges() -> None:
    hz = 2_000_000_000
    first = next_params(None, guest_tsc=0, now_ns=0, hz=hz)
    assert first.system_time == 0
    # One second later the host says 1 s + 300 us: the guest clock was slow.
    tsc = hz
    now = 1_000_300_000
    second = next_params(first, tsc, now, hz)
    assert second.system_time == first.ns_at(tsc)  # no jump at the update
    # ... and meets true time one interval later.
    assert abs(second.ns_at(tsc + hz) - (now + 1_000_000_000)) <= 2


def test_next_params_steps_large_errors() -> None:
    hz = 1_000_000_000
    first = next_params(None, 0, 0, hz)
    second = next_params(first, hz, 1_000_000_000 + 2 * MAX_SLEW_NS, hz)
    assert second.system_time == 1_000_000_000 + 2 * MAX_SLEW_NS


def test_write_time_follows_the_seqlock_and_layout() -> None:
    buf = memoryview(bytearray(64))
    params = TimeParams(tsc_timestamp=0x1122334455, system_time=987654321, mul=0x87654321,
                        shift=-2)
    write_time(buf, 32, params, flags=1)
    info = x.vcpu_time_info.from_buffer_copy(bytes(buf[32:64]))
    assert info.version % 2 == 0 and info.version > 0
    assert (info.tsc_timestamp, info.system_time) == (0x1122334455, 987654321)
    assert (info.tsc_to_system_mul, info.tsc_shift, info.flags) == (0x87654321, -2, 1)
    before = info.version
    write_time(buf, 32, params)
    assert struct.unpack_from("<I", buf, 32)[0] == before + 2


@pytest.mark.parametrize("layout", [LAYOUT_64, LAYOUT_COMPAT])
def test_wallclock(layout: object) -> None:
    from pyxen.hv.shared_info import Layout
    assert isinstance(layout, Layout)
    buf = memoryview(bytearray(4096))
    wc = (5 << 32) * 1_000_000_000 + 123
    write_wallclock(buf, layout, wc)
    version, sec, nsec = struct.unpack_from("<III", buf, layout.wc_version)
    hi = struct.unpack_from("<I", buf, layout.wc_sec_hi)[0]
    assert version % 2 == 0 and version > 0
    assert ((hi << 32) | sec, nsec) == (5 << 32, 123)


def test_layouts_match_the_abi_structs() -> None:
    assert (LAYOUT_64.pending, LAYOUT_64.mask, LAYOUT_64.selector) == (2048, 2560, 8)
    assert (LAYOUT_64.wc_version, LAYOUT_64.nr_ports) == (3072, 4096)
    assert (LAYOUT_COMPAT.pending, LAYOUT_COMPAT.mask, LAYOUT_COMPAT.selector) == (2048, 2176, 4)
    assert LAYOUT_COMPAT.nr_ports == 1024
    assert LAYOUT_64.selector_bit(130) == 2 and LAYOUT_COMPAT.selector_bit(130) == 4
