"""Where things are in shared_info and vcpu_info, and writing time into them.

Two layouts exist (§5): the x86_64 one (64-bit event words, 4096 ports)
and the i386 "compat" one (32-bit words, 1024 ports), latched per domain.
``Layout`` holds the offsets the hypervisor needs; the event-channel bit
operations work on bit strings, so only the selector bit (port / word
size) and the array offsets differ between the two.

Time: ``TimeParams`` is one set of pvclock parameters (tsc_timestamp,
system_time, mul, shift), ``write_time`` publishes it into a vcpu_time_info
with the version seqlock (odd while the fields change), and
``write_wallclock`` does the same for wc_sec/wc_nsec(/wc_sec_hi) with
wc_version.  Writers must be serialised by the caller (the domain's time
lock); guests read concurrently and retry on an odd or changed version.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from pyxen.abi import xen as x
from pyxen.shared_words import store_u32

VCPU_INFO_SIZE = 64
UPCALL_PENDING = x.vcpu_info.evtchn_upcall_pending.offset
UPCALL_MASK = x.vcpu_info.evtchn_upcall_mask.offset
TIME_OFFSET = x.vcpu_info.time.offset
TIME_INFO_SIZE = ctypes.sizeof(x.vcpu_time_info)
assert x.compat_vcpu_info.time.offset == TIME_OFFSET


@dataclass(frozen=True)
class Layout:
    compat: bool
    word_bits: int
    nr_ports: int
    pending: int
    mask: int
    selector: int  # offset inside vcpu_info
    wc_version: int
    wc_sec: int
    wc_nsec: int
    wc_sec_hi: int

    def selector_bit(self, port: int) -> int:
        return port // self.word_bits


LAYOUT_64 = Layout(
    compat=False,
    word_bits=64,
    nr_ports=64 * 64,
    pending=x.shared_info.evtchn_pending.offset,
    mask=x.shared_info.evtchn_mask.offset,
    selector=x.vcpu_info.evtchn_pending_sel.offset,
    wc_version=x.shared_info.wc_version.offset,
    wc_sec=x.shared_info.wc_sec.offset,
    wc_nsec=x.shared_info.wc_nsec.offset,
    wc_sec_hi=x.shared_info.wc_sec_hi.offset,
)

LAYOUT_COMPAT = Layout(
    compat=True,
    word_bits=32,
    nr_ports=32 * 32,
    pending=x.compat_shared_info.evtchn_pending.offset,
    mask=x.compat_shared_info.evtchn_mask.offset,
    selector=x.compat_vcpu_info.evtchn_pending_sel.offset,
    wc_version=x.compat_shared_info.wc_version.offset,
    wc_sec=x.compat_shared_info.wc_sec.offset,
    wc_nsec=x.compat_shared_info.wc_nsec.offset,
    wc_sec_hi=x.compat_shared_info.arch.offset + x.compat_arch_shared_info.wc_sec_hi.offset,
)


def layout_for(compat: bool | None) -> Layout:
    return LAYOUT_COMPAT if compat else LAYOUT_64


_U32 = struct.Struct("<I")
_TIME_BODY = struct.Struct("<QQIbB")  # tsc_timestamp, system_time, mul, shift, flags
_WC = struct.Struct("<II")


@dataclass(frozen=True)
class TimeParams:
    """pvclock parameters: ns = system_time + scale(tsc - tsc_timestamp)."""

    tsc_timestamp: int
    system_time: int
    mul: int
    shift: int

    def ns_at(self, tsc: int) -> int:
        delta = (tsc - self.tsc_timestamp) & 0xFFFF_FFFF_FFFF_FFFF
        delta = delta << self.shift if self.shift >= 0 else delta >> -self.shift
        return self.system_time + ((delta * self.mul) >> 32)


def scale_for(ticks: int, ns: int) -> tuple[int, int]:
    """(mul, shift) turning ``ticks`` TSC ticks into ``ns`` nanoseconds.

    mul is kept in [2^31, 2^32) for the most precision: with r = ns/ticks,
    shift = floor(log2 r) + 1 and mul = r * 2^(32 - shift).
    """
    if ticks <= 0 or ns <= 0:
        raise ValueError("scale_for needs positive ticks and ns")
    shift = ns.bit_length() - ticks.bit_length()
    # Adjust so that 2^(shift-1) <= r < 2^shift.
    while _ratio_ge(ns, ticks, shift):
        shift += 1
    while not _ratio_ge(ns, ticks, shift - 1):
        shift -= 1
    exp = 32 - shift
    mul = (ns << exp) // ticks if exp >= 0 else ns // (ticks << -exp)
    return min(mul, 0xFFFF_FFFF), shift


def _ratio_ge(ns: int, ticks: int, power: int) -> bool:
    """ns / ticks >= 2^power."""
    return ns >= ticks << power if power >= 0 else ns << -power >= ticks


def write_time(buf: memoryview, offset: int, params: TimeParams, flags: int = 0) -> None:
    """Publish ``params`` into the vcpu_time_info at ``buf[offset:]`` (seqlock)."""
    version = _U32.unpack_from(buf, offset)[0]
    version = (version + 1) | 1  # odd: update in progress
    store_u32(buf, offset, version)  # one store: a guest may be reading (shared_words)
    _TIME_BODY.pack_into(buf, offset + 8, params.tsc_timestamp & 0xFFFF_FFFF_FFFF_FFFF,
                         params.system_time & 0xFFFF_FFFF_FFFF_FFFF, params.mul,
                         params.shift, flags)
    store_u32(buf, offset, version + 1)


def write_wallclock(buf: memoryview, layout: Layout, wc_ns: int) -> None:
    """Publish the UTC time at system time 0 into shared_info (wc_version seqlock)."""
    sec, nsec = divmod(max(wc_ns, 0), 1_000_000_000)
    version = (_U32.unpack_from(buf, layout.wc_version)[0] + 1) | 1
    store_u32(buf, layout.wc_version, version)
    _WC.pack_into(buf, layout.wc_sec, sec & 0xFFFF_FFFF, nsec)
    _U32.pack_into(buf, layout.wc_sec_hi, (sec >> 32) & 0xFFFF_FFFF)
    store_u32(buf, layout.wc_version, version + 1)
