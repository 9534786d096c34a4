"""PV network interfaces: mirrors ``xen/include/public/io/netif.h`` (Xen 4.12).

Two rings per queue, each one page with the generic ring header
(``io/ring.h``): the *TX* ring carries the guest's outgoing packets
(``netif_tx_request`` slots, answered in place by ``netif_tx_response``),
the *RX* ring empty guest pages the backend fills with incoming packets
(``netif_rx_request``, answered by ``netif_rx_response``).  A packet may
take several TX slots: the first request's ``size`` is the whole packet's,
``NETTXF_more_data`` chains the next slot, ``NETTXF_extra_info`` says that
``netif_extra_info`` slots follow the first one (GSO, multicast, hash).
Extra-info slots are answered with ``NETIF_RSP_NULL``.  All layouts are the
same for 32- and 64-bit guests (no 8-byte fields).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

from pyxen.abi._types import (
    XenStruct,
    XenUnion,
    grant_ref_t,
    int16_t,
    uint8_t,
    uint16_t,
)

XEN_NETIF_MAX_TX_SIZE = 0xFFFF  # the largest packet a TX chain may describe
# Linux netback's limit on the slots of one packet (the frontend's, not the ABI's).
XEN_NETBK_LEGACY_SLOTS_MAX = 18
XEN_NETIF_NR_SLOTS_MIN = 18


class NetTxFlags(IntFlag):
    csum_blank = 1 << 0  # the protocol checksum is not filled in (offload)
    data_validated = 1 << 1
    more_data = 1 << 2  # the packet continues in the next slot
    extra_info = 1 << 3  # netif_extra_info slots follow


class NetRxFlags(IntFlag):
    data_validated = 1 << 0
    csum_blank = 1 << 1
    more_data = 1 << 2
    extra_info = 1 << 3
    gso_prefix = 1 << 4  # deprecated


class NetifRsp(IntEnum):
    DROPPED = -2
    ERROR = -1
    OKAY = 0
    NULL = 1  # the answer to an extra-info slot


class NetifExtraType(IntEnum):
    NONE = 0  # never used: invalid
    GSO = 1
    MCAST_ADD = 2
    MCAST_DEL = 3
    HASH = 4
    MAX = 5


XEN_NETIF_EXTRA_FLAG_MORE = 1 << 0  # another extra-info slot follows


class NetifGsoType(IntEnum):
    NONE = 0
    TCPV4 = 1
    TCPV6 = 2


class netif_tx_request(XenStruct):
    """One TX slot of a packet (12 bytes)."""

    _fields_ = [
        ("gref", grant_ref_t),
        ("offset", uint16_t),  # of the data in the granted page
        ("flags", uint16_t),  # NETTXF_*
        ("id", uint16_t),  # echoed in the response
        ("size", uint16_t),  # first slot: the whole packet; others: this slot's bytes
    ]


class netif_tx_response(XenStruct):
    _fields_ = [("id", uint16_t), ("status", int16_t)]  # NETIF_RSP_*


class netif_rx_request(XenStruct):
    """An empty page the backend may fill (8 bytes)."""

    _fields_ = [("id", uint16_t), ("pad", uint16_t), ("gref", grant_ref_t)]


class netif_rx_response(XenStruct):
    _fields_ = [
        ("id", uint16_t),
        ("offset", uint16_t),  # of the data in the page
        ("flags", uint16_t),  # NETRXF_*
        ("status", int16_t),  # bytes in this slot, or NETIF_RSP_* when negative
    ]


class netif_extra_info_gso(XenStruct):
    _fields_ = [("size", uint16_t), ("type", uint8_t), ("pad", uint8_t),
                ("features", uint16_t)]


class netif_extra_info_mcast(XenStruct):
    _fields_ = [("addr", uint8_t * 6)]


class netif_extra_info_hash(XenStruct):
    _fields_ = [("type", uint8_t), ("algorithm", uint8_t), ("value", uint8_t * 4)]


class netif_extra_info_u(XenUnion):
    _fields_ = [("gso", netif_extra_info_gso), ("mcast", netif_extra_info_mcast),
                ("hash", netif_extra_info_hash), ("pad", uint16_t * 3)]


class netif_extra_info(XenStruct):
    """An extra-info slot (8 bytes, in a TX request's or RX response's place)."""

    _fields_ = [("type", uint8_t), ("flags", uint8_t), ("u", netif_extra_info_u)]


class netif_tx_sring_entry(XenUnion):
    _fields_ = [("req", netif_tx_request), ("rsp", netif_tx_response)]


class netif_rx_sring_entry(XenUnion):
    _fields_ = [("req", netif_rx_request), ("rsp", netif_rx_response)]
