"""netif packets: TX slot chains into packets, frames into RX slots, checksums.

Pure functions over copies of ring slots (the guest cannot change a slot
once it was copied), so the rules can be tested without a ring or a guest.

TX (guest to host), netif.h's rules and Linux netback's checks:

- A packet starts with a request whose ``size`` is the whole packet's;
  ``NETTXF_extra_info`` says extra-info slots follow it (each with
  ``XEN_NETIF_EXTRA_FLAG_MORE`` if another follows); then, while a data
  slot has ``NETTXF_more_data``, the next data slot continues the packet
  with its own ``size``.  The first slot carries what the others do not.
- *Fatal* (the frontend is broken; the vif is disconnected, as Linux's
  netback disables it): more than ``FATAL_SLOTS`` (20) data slots, a later
  slot larger than what is left of the packet, a slot whose ``offset +
  size`` crosses its page, an extra-info slot of an unknown type.
- *Error* (the packet is answered with NETIF_RSP_ERROR, the next one is
  read): a packet shorter than an Ethernet header, 19 or 20 data slots
  (more than ``MAX_SLOTS``), a bad grant (found when copying).
- An incomplete chain at the end of what was published waits for more.

RX (host to guest): a frame takes ``ceil(len / PAGE_SIZE)`` slots with
``feature-sg`` (NETRXF_more_data on all but the last), one slot without
(frames that do not fit are dropped).

Checksums: a TX packet flagged ``NETTXF_csum_blank`` has its TCP or UDP
checksum computed here (IPv4 and IPv6, the field zeroed and summed with the
pseudo-header, whatever partial sum the guest left in it), so the host
always receives complete frames.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pyxen.abi.netif import (
    XEN_NETBK_LEGACY_SLOTS_MAX,
    XEN_NETIF_EXTRA_FLAG_MORE,
    NetifExtraType,
    NetTxFlags,
)

PAGE_SIZE = 4096
MAX_SLOTS = XEN_NETBK_LEGACY_SLOTS_MAX  # more: the packet is answered with errors
FATAL_SLOTS = 20  # more: the frontend is broken (Linux netback's fatal_skb_slots)
ETH_HLEN = 14
_TX = struct.Struct("<IHHHH")  # gref, offset, flags, id, size
_EXTRA_HEAD = struct.Struct("<BB")  # type, flags
_GSO = struct.Struct("<HBBH")  # size, type, pad, features (after the head)


class FatalTx(Exception):
    """The frontend broke the TX protocol: disconnect it."""


@dataclass(frozen=True)
class TxSlot:
    gref: int
    offset: int
    flags: int
    id: int
    size: int

    @classmethod
    def parse(cls, slot: bytes) -> TxSlot:
        return cls(*_TX.unpack_from(slot))


@dataclass
class TxPacket:
    """One packet: its data (gref, offset, length per slot) and, in ring order, the
    (id, is_extra) of each of its slots: each gets one response, extra-info slots
    NETIF_RSP_NULL (they have no id of their own: the first request's is used, as
    Linux's netback does)."""

    slots: list[tuple[int, bool]]
    data: list[tuple[int, int, int]] = field(default_factory=list)
    size: int = 0
    csum_blank: bool = False
    gso: tuple[int, int] | None = None  # (type, segment size) from a GSO extra
    error: str = ""  # answered NETIF_RSP_ERROR without copying


def take_packets(slots: list[bytes]) -> tuple[list[TxPacket], int]:
    """The complete packets at the start of ``slots`` and how many slots they use
    (the rest: an incomplete packet to finish later).  Raises FatalTx."""
    packets: list[TxPacket] = []
    i = 0
    while i < len(slots):
        parsed = _packet(slots, i)
        if parsed is None:
            break
        packet, i = parsed
        packets.append(packet)
    return packets, i


def _packet(slots: list[bytes], i: int) -> tuple[TxPacket, int] | None:
    first = TxSlot.parse(slots[i])
    packet = TxPacket(slots=[(first.id, False)], size=first.size,
                      csum_blank=bool(first.flags & NetTxFlags.csum_blank))
    i += 1
    if first.flags & NetTxFlags.extra_info:
        while True:
            if i >= len(slots):
                return None
            etype, eflags = _EXTRA_HEAD.unpack_from(slots[i])
            if not NetifExtraType.NONE < etype < NetifExtraType.MAX:
                raise FatalTx(f"extra-info slot of unknown type {etype}")
            if etype == NetifExtraType.GSO:
                gsize, gtype, _, _ = _GSO.unpack_from(slots[i], 2)
                packet.gso = (gtype, gsize)
            packet.slots.append((first.id, True))
            i += 1
            if not eflags & XEN_NETIF_EXTRA_FLAG_MORE:
                break
    data = [first]
    while data[-1].flags & NetTxFlags.more_data:
        if i >= len(slots):
            return None
        if len(data) >= FATAL_SLOTS:
            raise FatalTx(f"a packet of more than {FATAL_SLOTS} slots")
        nxt = TxSlot.parse(slots[i])
        data.append(nxt)
        packet.slots.append((nxt.id, False))
        i += 1
    left = first.size
    for slot in data[1:]:
        if slot.size > left:
            raise FatalTx(f"slot of {slot.size} bytes in a packet with {left} left")
        left -= slot.size
    lengths = [left] + [s.size for s in data[1:]]
    for slot, length in zip(data, lengths, strict=True):
        if slot.offset + length > PAGE_SIZE:
            raise FatalTx(f"slot at offset {slot.offset} with {length} bytes crosses its page")
        if length:
            packet.data.append((slot.gref, slot.offset, length))
    if first.size < ETH_HLEN:
        packet.error = f"a packet of {first.size} bytes (shorter than an Ethernet header)"
    elif len(data) > MAX_SLOTS:
        packet.error = f"a packet of {len(data)} slots (more than {MAX_SLOTS})"
    return packet, i


def rx_slots_needed(length: int, sg: bool) -> int:
    """Slots a frame of ``length`` bytes takes (0: it cannot be delivered)."""
    slots = max(1, -(-length // PAGE_SIZE))
    return slots if sg or slots == 1 else 0


# --- checksums -------------------------------------------------------------------------

_ETH_IPV4, _ETH_IPV6, _ETH_VLAN = 0x0800, 0x86DD, 0x8100
_TCP, _UDP = 6, 17


def _sum16(data: bytes | memoryview, total: int = 0) -> int:
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total += sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def fill_l4_checksum(frame: bytearray) -> bool:
    """Compute a TCP/UDP checksum in place (IPv4, IPv6, one VLAN tag); False if the
    frame is not such a packet (it is then left as it is)."""
    off = ETH_HLEN
    if len(frame) < off:
        return False
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == _ETH_VLAN and len(frame) >= off + 4:
        ethertype = int.from_bytes(frame[16:18], "big")
        off += 4
    if ethertype == _ETH_IPV4:
        if len(frame) < off + 20:
            return False
        ihl = (frame[off] & 0x0F) * 4
        proto = frame[off + 9]
        total = int.from_bytes(frame[off + 2 : off + 4], "big")
        l4, end = off + ihl, min(off + total, len(frame))
        pseudo = bytes(frame[off + 12 : off + 20]) + bytes([0, proto]) + \
            (end - l4).to_bytes(2, "big")
    elif ethertype == _ETH_IPV6:
        if len(frame) < off + 40:
            return False
        proto = frame[off + 6]  # extension headers are not followed
        plen = int.from_bytes(frame[off + 4 : off + 6], "big")
        l4, end = off + 40, min(off + 40 + plen, len(frame))
        pseudo = bytes(frame[off + 8 : off + 40]) + (end - l4).to_bytes(4, "big") + \
            bytes([0, 0, 0, proto])
    else:
        return False
    where = {_TCP: 16, _UDP: 6}.get(proto)
    if where is None or end < l4 + where + 2:
        return False
    frame[l4 + where : l4 + where + 2] = b"\0\0"
    csum = 0xFFFF - _sum16(memoryview(frame)[l4:end], _sum16(pseudo))
    if proto == _UDP and csum == 0:
        csum = 0xFFFF  # 0 means "no checksum" for UDP
    frame[l4 + where : l4 + where + 2] = csum.to_bytes(2, "big")
    return True
