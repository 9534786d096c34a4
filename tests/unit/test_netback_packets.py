"""netif's TX slot rules and the checksums netback completes (services/netback/packets.py)."""

from __future__ import annotations

import socket
import struct

import pytest

from pyxen.abi.netif import NetifExtraType, NetTxFlags
from pyxen.services.netback.packets import (
    FATAL_SLOTS,
    MAX_SLOTS,
    FatalTx,
    fill_l4_checksum,
    rx_slots_needed,
    take_packets,
)

F = NetTxFlags


def tx(gref: int, offset: int, flags: int, ident: int, size: int) -> bytes:
    return struct.pack("<IHHHH", gref, offset, flags, ident, size)


def extra(etype: int, more: bool = False, gso: tuple[int, int] = (0, 0)) -> bytes:
    return struct.pack("<BBHBBH", etype, int(more), gso[1], gso[0], 0, 0).ljust(12, b"\0")


def test_single_and_chained_packets() -> None:
    slots = [tx(1, 0, 0, 10, 60),
             tx(2, 96, F.more_data | F.csum_blank, 11, 5000), tx(3, 0, 0, 12, 1000)]
    packets, used = take_packets(slots)
    assert used == 3
    assert packets[0].data == [(1, 0, 60)] and packets[0].slots == [(10, False)]
    second = packets[1]
    assert second.size == 5000 and second.csum_blank
    assert second.data == [(2, 96, 4000), (3, 0, 1000)]  # the first slot holds the rest
    assert second.slots == [(11, False), (12, False)]


def test_extra_info_slots_are_answered_as_null_with_the_first_id() -> None:
    slots = [tx(1, 0, F.extra_info, 7, 100), extra(NetifExtraType.GSO, more=True, gso=(1, 1448)),
             extra(NetifExtraType.MCAST_ADD), tx(9, 0, 0, 8, 60)]
    packets, used = take_packets(slots)
    assert used == 4 and len(packets) == 2
    assert packets[0].slots == [(7, False), (7, True), (7, True)]
    assert packets[0].gso == (1, 1448)


def test_an_incomplete_chain_waits_for_more() -> None:
    slots = [tx(1, 0, 0, 1, 60), tx(2, 0, F.more_data, 2, 5000)]
    packets, used = take_packets(slots)
    assert used == 1 and len(packets) == 1
    packets, used = take_packets([tx(1, 0, F.extra_info, 1, 60)])
    assert (packets, used) == ([], 0)


def test_runts_and_19_slots_are_errors_not_fatal() -> None:
    packets, _ = take_packets([tx(1, 0, 0, 1, 13)])
    assert "shorter than an Ethernet header" in packets[0].error
    chain = [tx(1, 0, F.more_data, 1, 100)] + [tx(2, 0, F.more_data, 2, 1)] * (MAX_SLOTS - 1)
    packets, used = take_packets([*chain, tx(3, 0, 0, 3, 1)])
    assert used == MAX_SLOTS + 1 and "19 slots" in packets[0].error
    packets, _ = take_packets([*chain[:-1], tx(3, 0, 0, 3, 1)])
    assert packets[0].error == ""  # 18 slots: every backend takes them


@pytest.mark.parametrize(("slots", "why"), [
    ([tx(1, 0, F.more_data, 1, 100)] + [tx(2, 0, F.more_data, 2, 1)] * FATAL_SLOTS,
     "more than 20 slots"),
    ([tx(1, 0, F.more_data, 1, 100), tx(2, 0, 0, 2, 200)], "200 bytes in a packet with 100"),
    ([tx(1, 4000, 0, 1, 200)], "crosses its page"),
    ([tx(1, 0, F.more_data, 1, 5000), tx(2, 3000, 0, 2, 1200)], "crosses its page"),
    ([tx(1, 0, F.extra_info, 1, 60), extra(0)], "unknown type 0"),
    ([tx(1, 0, F.extra_info, 1, 60), extra(9)], "unknown type 9"),
])
def test_fatal_violations(slots: list[bytes], why: str) -> None:
    with pytest.raises(FatalTx, match=why):
        take_packets(slots)


def test_rx_slots() -> None:
    assert rx_slots_needed(60, sg=False) == 1
    assert rx_slots_needed(4096, sg=False) == 1
    assert rx_slots_needed(4097, sg=False) == 0  # cannot be delivered
    assert rx_slots_needed(9000, sg=True) == 3


def _ones_complement_ok(data: bytes) -> bool:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def _ipv4_udp(payload: bytes) -> bytearray:
    udp = struct.pack("!HHHH", 1234, 53, 8 + len(payload), 0xBEEF) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"))
    return bytearray(b"\xff" * 12 + b"\x08\x00" + ip + udp)


def test_udp_over_ipv4_checksum() -> None:
    frame = _ipv4_udp(b"hello, world!")
    assert fill_l4_checksum(frame)
    ip, l4 = frame[14:34], frame[34:]
    pseudo = ip[12:20] + bytes([0, 17]) + len(l4).to_bytes(2, "big")
    assert _ones_complement_ok(bytes(pseudo + l4))


def test_tcp_over_ipv6_checksum() -> None:
    tcp = struct.pack("!HHIIBBHHH", 80, 5555, 1, 2, 5 << 4, 0x18, 1000, 0x1234, 0) + b"data!"
    src, dst = socket.inet_pton(socket.AF_INET6, "fe80::1"), socket.inet_pton(
        socket.AF_INET6, "fe80::2")
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, src, dst)
    frame = bytearray(b"\xff" * 12 + b"\x86\xdd" + ip6 + tcp)
    assert fill_l4_checksum(frame)
    l4 = frame[54:]
    pseudo = src + dst + len(l4).to_bytes(4, "big") + bytes([0, 0, 0, 6])
    assert _ones_complement_ok(pseudo + bytes(l4))


def test_other_frames_are_left_alone() -> None:
    for frame in (bytearray(b"\xff" * 12 + b"\x08\x06" + bytes(28)),  # ARP
                  bytearray(b"\xff" * 12 + b"\x08\x00" + bytes(5)),  # a truncated IPv4
                  bytearray(10)):
        before = bytes(frame)
        assert not fill_l4_checksum(frame)
        assert bytes(frame) == before
