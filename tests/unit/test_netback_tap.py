"""TAP devices and bridges (services/netback/tap.py).

Every test that touches a network device runs in its own network namespace
(``@in_netns`` from tests/netns.py), so nothing here changes the host's
network, and whatever a test leaves behind disappears with its namespace.
``ip`` (iproute2) is used only to look at devices, or to make a bridge the
way an administrator would; the library itself never runs it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import subprocess
from typing import Any

import pytest

from netns import in_netns
from pyxen.services.netback.tap import (
    HOST_MAC,
    VIRTIO_NET_HDR_F_DATA_VALID,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VNET_HDR_LEN,
    NetdevError,
    Tap,
    VnetHeader,
    bridge_exists,
    create_bridge,
    delete_bridge,
    link_stats,
)

TEST_ETHERTYPE = 0x88B5  # IEEE "local experimental": nothing in the kernel sends it
GUEST_A = "00:16:3e:00:00:0a"
GUEST_B = "00:16:3e:00:00:0b"


# --- helpers ----------------------------------------------------------------------

def link(name: str) -> dict[str, Any]:
    """``ip -d -j link show NAME``, parsed; {} if there is no such device."""
    out = subprocess.run(["ip", "-d", "-j", "link", "show", "dev", name],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    info: dict[str, Any] = json.loads(out.stdout)[0]
    return info


def exists(name: str) -> bool:
    return bool(link(name))


def quiet_bridge(name: str, *extra: str) -> None:
    """A bridge made with ip, multicast snooping off: it sends nothing on its own.

    (A bridge with snooping on, as SIOCBRADDBR makes them, sends IGMP reports
    of its own when it comes up, which would show up among a test's frames.)
    """
    subprocess.run(["ip", "link", "add", name, "type", "bridge", "mcast_snooping", "0",
                    *extra], check=True)


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def eth(dst: str, src: str, payload: bytes, ethertype: int = TEST_ETHERTYPE) -> bytes:
    return mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload


def drained(tap: Tap) -> list[tuple[VnetHeader, bytes]]:
    """Drain ``tap``; keep the frames with the test EtherType (a bridge the library
    created may add multicast reports of its own)."""
    frames = []
    while (got := tap.read()) is not None:
        if got[1][12:14] == struct.pack("!H", TEST_ETHERTYPE):
            frames.append(got)
    return frames


def csum16(data: bytes) -> int:
    """The ones' complement sum of 16-bit big-endian words (not complemented)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


SRC_IP, DST_IP = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def ipv4(proto: int, l4: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0,
                         SRC_IP, DST_IP)
    header = header[:10] + struct.pack("!H", 0xFFFF - csum16(header)) + header[12:]
    return header + l4


def pseudo(proto: int, length: int) -> bytes:
    return SRC_IP + DST_IP + struct.pack("!BBH", 0, proto, length)


def udp_partial(payload: bytes) -> bytes:
    """An IPv4/UDP frame whose checksum field holds only the pseudo-header sum,
    as a guest leaves it for the backend to finish (NETTXF_csum_blank)."""
    length = 8 + len(payload)
    udp = struct.pack("!HHHH", 1000, 2000, length, csum16(pseudo(17, length))) + payload
    return eth(GUEST_B, GUEST_A, ipv4(17, udp), ethertype=0x0800)


def l4_checksum_ok(frame: bytes, proto: int) -> bool:
    l4 = frame[34:]
    return csum16(pseudo(proto, len(l4)) + l4) == 0xFFFF


def tcp_partial(payload: bytes) -> bytes:
    length = 20 + len(payload)
    tcp = struct.pack("!HHIIBBHHH", 1000, 2000, 1, 0, 5 << 4, 0x18, 65535,
                      csum16(pseudo(6, length)), 0) + payload
    return eth(GUEST_B, GUEST_A, ipv4(6, tcp), ethertype=0x0800)


def two_taps_on(bridge: str) -> tuple[Tap, Tap]:
    a = Tap.create("vif1.0")
    b = Tap.create("vif2.0")
    a.attach(bridge)
    b.attach(bridge)
    return a, b


# --- the virtio-net header (no devices) --------------------------------------------

def test_vnet_header_layout() -> None:
    header = VnetHeader(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type=VIRTIO_NET_HDR_GSO_TCPV4,
                        hdr_len=54, gso_size=1448, csum_start=34, csum_offset=16)
    raw = header.pack()
    assert len(raw) == VNET_HDR_LEN == 10
    assert raw == struct.pack("=BBHHHH", 1, 1, 54, 1448, 34, 16)
    assert VnetHeader.unpack(raw) == header
    assert VnetHeader.unpack(raw + b"frame") == header
    assert header.needs_csum and not header.data_valid
    assert VnetHeader(flags=VIRTIO_NET_HDR_F_DATA_VALID).data_valid
    assert VnetHeader().pack() == bytes(10)


# --- the non-blocking fd, on a pipe (no devices) --------------------------------------

def test_read_and_write_map_eagain() -> None:
    """Tap.read/write on a pipe: a real EAGAIN from the kernel becomes None / False."""
    rfd, wfd = os.pipe2(os.O_NONBLOCK)
    reader, writer = Tap(rfd, "pipe-r"), Tap(wfd, "pipe-w")
    try:
        assert reader.read() is None
        frame = bytes(4000)
        while writer.write(frame):
            pass
        assert writer.writes_refused == 1
        assert writer.frames_written > 0
        assert writer.bytes_written == writer.frames_written * 4000
        header, data = reader.read()  # type: ignore[misc]
        assert header == VnetHeader() and len(data) > 0
        assert reader.frames_read == 1
    finally:
        reader.close()
        writer.close()


def test_closed_tap() -> None:
    rfd, wfd = os.pipe()
    os.close(wfd)
    tap = Tap(rfd, "pipe")
    tap.close()
    tap.close()  # idempotent
    assert tap.closed
    with pytest.raises(ValueError, match="tap pipe is closed"):
        tap.fileno()
    with pytest.raises(ValueError, match="closed"):
        tap.read()
    assert "closed" in repr(tap)


# --- names (checked before any syscall) ----------------------------------------------

@in_netns
def test_fifteen_bytes_is_the_longest_name() -> None:
    with Tap.create("vif12345.123456") as tap:
        assert tap.name == "vif12345.123456"
        assert exists("vif12345.123456")
        tap.attach("x" * 15)
        assert bridge_exists("x" * 15)


@pytest.mark.parametrize("name", ["vif12345.1234567", "x" * 16, "é" * 8, ""])
def test_long_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="Linux interface names have 1 to 15"):
        Tap.create(name)
    with pytest.raises(ValueError, match="bridge name"):
        bridge_exists(name)
    with pytest.raises(ValueError, match="bridge name"):
        create_bridge(name)
    with pytest.raises(ValueError, match="bridge name"):
        delete_bridge(name)


@pytest.mark.parametrize("name", ["a/b", "a b", "eth0:1", ".."])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid interface name"):
        Tap.create(name)


@pytest.mark.parametrize("mac", ["fe:ff:ff:ff:ff", "fe-ff-ff-ff-ff-ff", "xx:ff:ff:ff:ff:ff"])
def test_malformed_mac_is_refused(mac: str) -> None:
    with pytest.raises(ValueError, match="is not six hex octets"):
        Tap.create("tap0", mac=mac)


# --- creating a tap ------------------------------------------------------------------

@in_netns
def test_create_defaults() -> None:
    with Tap.create("vif1.0") as tap:
        info = link("vif1.0")
        assert info["address"] == HOST_MAC == tap.mac == "fe:ff:ff:ff:ff:ff"
        assert info["mtu"] == tap.mtu == 1500
        assert "UP" in info["flags"]
        assert info["linkinfo"]["info_kind"] == "tun"
        tun = info["linkinfo"]["info_data"]
        assert tun["type"] == "tap"
        assert tun["pi"] is False and tun["vnet_hdr"] is True
        assert tun["persist"] is False
        assert tap.ifindex == info["ifindex"]
        assert tap.bridge is None
        assert tap.read() is None  # nothing queued: IPv6 is off in the test namespace
        assert fcntl.fcntl(tap.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
        assert fcntl.fcntl(tap.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC


@in_netns
def test_create_with_mac_and_mtu() -> None:
    with Tap.create("vif1.0", mac="02:00:00:AB:cd:01", mtu=9000) as tap:
        info = link("vif1.0")
        assert info["address"] == tap.mac == "02:00:00:ab:cd:01"
        assert info["mtu"] == tap.mtu == 9000
        tap.mtu = 1400
        assert link("vif1.0")["mtu"] == 1400


@in_netns
def test_create_refuses_what_the_kernel_refuses() -> None:
    with pytest.raises(NetdevError) as info:
        Tap.create("vif1.0", mac="01:00:5e:00:00:01")  # multicast
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert str(info.value) == ("tap vif1.0: cannot set its MAC to 01:00:5e:00:00:01: "
                               "Cannot assign requested address")
    assert not exists("vif1.0")  # the fd was closed on the way out
    with pytest.raises(NetdevError) as info:
        Tap.create("vif1.0", mtu=20)
    assert str(info.value) == "tap vif1.0: cannot set its MTU to 20: Invalid argument"
    assert not exists("vif1.0")


@in_netns
def test_an_existing_name_is_not_adopted() -> None:
    with Tap.create("vif1.0"):
        with pytest.raises(NetdevError) as info:
            Tap.create("vif1.0")
        assert info.value.errno == errno.EBUSY
        assert str(info.value) == ("tap vif1.0: cannot create it: Device or resource busy "
                                   "(an interface of that name exists)")
    quiet_bridge("br0")
    with pytest.raises(NetdevError, match="tap br0: cannot create it: Device or resource "
                       "busy"):
        Tap.create("br0")
    # nor a persistent tap that nobody holds (TUNSETIFF alone would attach to it)
    subprocess.run(["ip", "tuntap", "add", "vifp", "mode", "tap", "vnet_hdr"], check=True)
    with pytest.raises(NetdevError, match="tap vifp: cannot create it: Device or resource "
                       "busy"):
        Tap.create("vifp")
    assert link("vifp")["linkinfo"]["info_data"]["persist"] is True


@in_netns
def test_close_removes_the_device() -> None:
    quiet_bridge("br0")
    tap = Tap.create("vif1.0")
    tap.attach("br0")
    assert link("vif1.0")["master"] == "br0"
    tap.close()
    assert not exists("vif1.0")
    with open("/proc/self/net/dev") as f:
        assert "vif1.0" not in f.read()
    assert bridge_exists("br0")  # the bridge stays
    assert tap.bridge is None
    tap.close()


@in_netns
def test_write_on_a_down_tap() -> None:
    with Tap.create("vif1.0") as tap:
        subprocess.run(["ip", "link", "set", "vif1.0", "down"], check=True)
        with pytest.raises(NetdevError) as info:
            tap.write(eth(GUEST_B, GUEST_A, b"x" * 50))
        assert info.value.errno == errno.EIO
        assert str(info.value) == ("tap vif1.0: cannot write a 64-byte frame: Input/output "
                                   "error (is the device down?)")
        assert tap.read() is None


@in_netns
def test_invalid_frames_are_refused() -> None:
    with Tap.create("vif1.0") as tap:
        with pytest.raises(NetdevError, match="cannot write a 10-byte frame: Invalid"):
            tap.write(bytes(10))  # shorter than an Ethernet header
        bad = VnetHeader(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=2000, csum_offset=6)
        with pytest.raises(NetdevError, match="Invalid argument"):
            tap.write(udp_partial(b"x"), bad)  # checksum beyond the frame
        assert tap.frames_written == 0


# --- bridges ---------------------------------------------------------------------------

@in_netns
def test_frames_cross_a_bridge() -> None:
    quiet_bridge("br0")
    a, b = two_taps_on("br0")
    assert link("vif1.0")["master"] == link("vif2.0")["master"] == "br0"
    to_b = eth(GUEST_B, GUEST_A, b"to b" * 20)
    to_a = eth(GUEST_A, GUEST_B, b"to a" * 20)
    assert a.write(to_b)
    assert b.read() == (VnetHeader(), to_b)
    assert b.read() is None
    assert b.write(to_a)
    assert a.read() == (VnetHeader(), to_a)
    assert a.read() is None
    for _ in range(5):  # the bridge has learnt both guests: unicast, no flooding
        assert a.write(to_b)
    assert [f for _, f in drained(b)] == [to_b] * 5
    assert a.frames_written == 6 and a.bytes_written == 6 * len(to_b)
    assert b.frames_read == 6 and b.bytes_read == 6 * len(to_b)
    stats = b.stats()
    assert (stats.tx_packets, stats.tx_bytes) == (6, 6 * len(to_b))
    assert (stats.rx_packets, stats.rx_bytes) == (1, len(to_a))
    assert link_stats("vif1.0").rx_packets == 6


@in_netns
def test_bridge_created_when_missing() -> None:
    assert not bridge_exists("pyxenbr0")
    a, b = two_taps_on("pyxenbr0")
    assert bridge_exists("pyxenbr0")
    info = link("pyxenbr0")
    assert info["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in info["flags"]
    assert info["linkinfo"]["info_data"]["stp_state"] == 0
    assert a.bridge == b.bridge == "pyxenbr0"
    frame = eth(GUEST_B, GUEST_A, b"hello")
    assert a.write(frame)
    assert [f for _, f in drained(b)] == [frame]


@in_netns
def test_existing_bridge_left_alone() -> None:
    quiet_bridge("br0", "ageing_time", "1234")
    subprocess.run(["ip", "link", "set", "br0", "address", "02:00:00:00:00:99"], check=True)
    before = link("br0")
    assert "UP" not in before["flags"]
    a, b = two_taps_on("br0")
    after = link("br0")
    assert after["ifindex"] == before["ifindex"]          # not re-created
    assert after["address"] == "02:00:00:00:00:99"
    assert after["linkinfo"]["info_data"]["ageing_time"] == 1234
    assert after["linkinfo"]["info_data"]["mcast_snooping"] == 0
    assert "UP" in after["flags"]                          # but brought up
    a.close()
    b.close()
    assert bridge_exists("br0")


@in_netns
def test_attach_without_create() -> None:
    with Tap.create("vif1.0") as tap:
        with pytest.raises(NetdevError) as info:
            tap.attach("br0", create=False)
        assert info.value.errno == errno.ENODEV
        assert str(info.value) == "bridge br0: it does not exist (and create=False)"
        assert not exists("br0")
        quiet_bridge("br0")
        tap.attach("br0", create=False)
        assert link("vif1.0")["master"] == "br0"


@in_netns
def test_attach_to_something_else() -> None:
    with Tap.create("vif1.0") as tap, Tap.create("vif2.0"):
        with pytest.raises(NetdevError) as info:
            tap.attach("vif2.0")
        assert str(info.value) == "bridge vif2.0: vif2.0 exists but is not a bridge " \
            "(driver 'tun')"
        assert not bridge_exists("vif2.0")


@in_netns
def test_attach_twice() -> None:
    quiet_bridge("br0")
    quiet_bridge("br1")
    with Tap.create("vif1.0") as tap:
        tap.attach("br0")
        with pytest.raises(NetdevError) as info:
            tap.attach("br1")
        assert str(info.value) == ("tap vif1.0: cannot attach it to bridge br1: it is on "
                                   "bridge br0")
        assert link("vif1.0")["master"] == "br0"


@in_netns
def test_detach() -> None:
    quiet_bridge("br0")
    a, b = two_taps_on("br0")
    a.detach()
    assert a.bridge is None
    assert "master" not in link("vif1.0")
    assert a.write(eth(GUEST_B, GUEST_A, b"lost"))
    assert b.read() is None
    a.detach()  # idempotent
    a.attach("br0")
    assert a.write(eth(GUEST_B, GUEST_A, b"found"))
    assert b.read() is not None


@in_netns
def test_detach_after_the_bridge_went() -> None:
    with Tap.create("vif1.0") as tap:
        tap.attach("br0")
        delete_bridge("br0")
        tap.detach()
        assert tap.bridge is None


@in_netns
def test_delete_bridge() -> None:
    quiet_bridge("br0")
    subprocess.run(["ip", "link", "set", "br0", "up"], check=True)
    delete_bridge("br0")
    assert not exists("br0")
    with pytest.raises(NetdevError) as info:
        delete_bridge("br0")
    assert str(info.value) == "bridge br0: cannot delete it: it does not exist"
    with Tap.create("vif1.0"), pytest.raises(NetdevError) as info:
        delete_bridge("vif1.0")
    assert str(info.value) == "bridge vif1.0: cannot delete it: it is not a bridge"


@in_netns
def test_create_bridge_twice() -> None:
    create_bridge("br0")
    with pytest.raises(NetdevError) as info:
        create_bridge("br0")
    assert info.value.errno == errno.EEXIST
    assert str(info.value) == "bridge br0: cannot create it: File exists"


@in_netns
def test_without_privileges() -> None:
    os.setuid(65534)  # nobody: no CAP_NET_ADMIN left (this child process only)
    with pytest.raises(NetdevError) as info:
        create_bridge("pyxenbr0")
    assert info.value.errno == errno.EPERM
    assert str(info.value) == "bridge pyxenbr0: cannot create it: Operation not permitted"
    with pytest.raises(NetdevError, match=r"^tap vif1\.0: cannot (create it|open "
                       r"/dev/net/tun): (Operation not permitted|Permission denied)$"):
        Tap.create("vif1.0")


# --- queues ----------------------------------------------------------------------------

@in_netns
def test_nobody_reading() -> None:
    """Writes never block; the silent reader's queue keeps txqueuelen frames, the
    kernel drops the rest and counts them."""
    quiet_bridge("br0")
    a, b = two_taps_on("br0")
    b.txqueuelen = 8
    assert b.txqueuelen == 8
    frames = [eth(GUEST_B, GUEST_A, struct.pack("!I", i) * 16) for i in range(20)]
    assert all(a.write(f) for f in frames)
    assert a.writes_refused == 0
    assert [f for _, f in drained(b)] == frames[:8]
    assert b.read() is None
    stats = b.stats()
    assert (stats.tx_packets, stats.tx_dropped) == (8, 12)
    assert a.write(frames[0])  # room again
    assert b.read() == (VnetHeader(), frames[0])


# --- checksum and segmentation offload ---------------------------------------------

@in_netns
def test_partial_checksum_is_finished_for_a_plain_tap() -> None:
    quiet_bridge("br0")
    a, b = two_taps_on("br0")
    frame = udp_partial(b"payload" * 9)
    assert not l4_checksum_ok(frame, 17)
    header = VnetHeader(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=6)
    assert a.write(frame, header)
    got_header, got = b.read()  # type: ignore[misc]
    assert got_header == VnetHeader()            # nothing left to do
    assert l4_checksum_ok(got, 17)               # the kernel computed it
    assert got[:40] == frame[:40] and got[42:] == frame[42:]  # only the checksum changed


@in_netns
def test_partial_checksum_passes_to_a_tap_with_csum_offload() -> None:
    quiet_bridge("br0")
    a, b = two_taps_on("br0")
    b.set_offload(csum=True)
    frame = udp_partial(b"payload" * 9)
    header = VnetHeader(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start=34, csum_offset=6)
    assert a.write(frame, header)
    assert b.read() == (header, frame)           # still partial, as the guest wrote it


@in_netns
def test_gso_frame_is_segmented_for_a_plain_tap() -> None:
    quiet_bridge("br0")
    a, b = two_taps_on("br0")
    c = Tap.create("vif3.0")
    c.attach("br0")
    c.set_offload(csum=True, tso4=True)
    payload = bytes(range(256)) * 12             # 3072 bytes
    frame = tcp_partial(payload)
    header = VnetHeader(flags=VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type=VIRTIO_NET_HDR_GSO_TCPV4,
                        hdr_len=54, gso_size=1000, csum_start=34, csum_offset=16)
    assert a.write(frame, header)
    segments = []
    while (got := b.read()) is not None:
        assert got[0] == VnetHeader()
        assert l4_checksum_ok(got[1], 6)
        segments.append(got[1][54:])
    assert [len(s) for s in segments] == [1000, 1000, 1000, 72]
    assert b"".join(segments) == payload
    got_header, whole = c.read()  # type: ignore[misc]
    assert whole == frame                        # one super-frame, as written
    assert (got_header.gso_type, got_header.gso_size) == (VIRTIO_NET_HDR_GSO_TCPV4, 1000)
    assert (got_header.csum_start, got_header.csum_offset) == (34, 16)


def test_offload_combinations() -> None:
    rfd, wfd = os.pipe()
    os.close(wfd)
    with Tap(rfd, "pipe") as tap:
        with pytest.raises(ValueError, match="TSO offload needs checksum offload"):
            tap.set_offload(tso4=True)
        with pytest.raises(ValueError, match="tso_ecn needs tso4 or tso6"):
            tap.set_offload(csum=True, tso_ecn=True)
        with pytest.raises(NetdevError, match="tap pipe: cannot set offloads 0x1"):
            tap.set_offload(csum=True)           # a pipe is no tap


@in_netns
def test_link_stats_of_nothing() -> None:
    with pytest.raises(NetdevError) as info:
        link_stats("vif9.9")
    assert str(info.value) == "interface vif9.9: no counters: it does not exist"
