"""The host side of a vif: a TAP device, on a Linux bridge, driven by ioctls.

:class:`Tap` is one TAP device: ``/dev/net/tun`` with ``TUNSETIFF``
(``IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL``).  Its file descriptor
is the backend's end of the wire: :meth:`Tap.read` returns a frame the host
sends toward the guest, :meth:`Tap.write` hands the host a frame from the
guest.  :meth:`Tap.attach` puts the device on a bridge (creating the bridge
if asked), as Xen's ``vif-bridge`` hotplug script does.  No subprocess: every
operation is an ioctl on the TUN fd or on an ``AF_UNIX`` datagram socket,
which works in any network namespace (``/sys/class/net`` is not used, since
it shows the namespace sysfs was mounted in, not the caller's).

Design:

* **Virtio-net header.**  Every frame crosses the fd behind a 10-byte
  ``struct virtio_net_hdr`` (:class:`VnetHeader`; ``TUNSETVNETHDRSZ`` 10,
  native byte order as the kernel uses for a legacy header on a
  little-endian host).  That is how checksum offload crosses the tap in both
  directions, matching netif's flags:

  - guest to host: a netif request with ``NETTXF_csum_blank`` (checksum not
    yet computed) becomes ``VIRTIO_NET_HDR_F_NEEDS_CSUM`` with
    ``csum_start``/``csum_offset``; the kernel finishes the checksum if the
    frame leaves the host, or passes it on still partial to a port that
    accepts that (:meth:`Tap.set_offload`); ``NETTXF_data_validated`` maps
    to ``VIRTIO_NET_HDR_F_DATA_VALID``; a GSO extra becomes ``gso_type`` and
    ``gso_size``.
  - host to guest: the header says whether the frame's checksum is partial
    (``NETRXF_csum_blank``) or verified (``NETRXF_data_validated``), and
    whether it is a GSO super-frame.  The kernel only hands this tap partial
    checksums or GSO frames after :meth:`Tap.set_offload` allowed them (for
    the netback service to do when the frontend can take them, per the
    checksum and GSO features it negotiated); by default every frame arrives
    complete, at most MTU-sized, with a valid checksum.

  The 12-byte ``virtio_net_hdr_mrg_rxbuf`` is not used: tun never fills its
  ``num_buffers`` on read, so its last two bytes would be stale.
* **MAC of the host side.**  ``fe:ff:ff:ff:ff:ff`` unless told otherwise:
  what Xen's ``vif-bridge`` (``xen-network-common.sh``,
  ``_setup_bridge_port``) and Linux netback (``xenvif_alloc``) give every
  vif, "the numerically largest non-broadcast address, to prevent the
  address getting stolen by an Ethernet bridge for STP purposes" (a bridge
  takes the lowest port address as its own).  The guest's MAC belongs to the
  guest end only: giving it to the tap too would make the bridge treat
  frames for the guest as its own.
* **Lifetime.**  The device exists while the fd is open: it is never made
  persistent, so :meth:`Tap.close` (or the process dying) removes it and
  takes it off its bridge.  ``IFF_TUN_EXCL`` refuses to adopt an existing
  device of the same name.  Bridges are never deleted implicitly (Xen never
  deletes a bridge either); :func:`delete_bridge` is there for whoever
  created one on purpose.
* **Bridges** made here have STP off (the kernel's default for a new
  bridge), so a port forwards as soon as it is up.
* **Non-blocking.**  The fd is ``O_NONBLOCK``: :meth:`Tap.read` returns None
  when nothing is queued, :meth:`Tap.write` returns False on ``EAGAIN``.
  In practice a tap write does not block: the kernel processes the frame
  inside the write and queues it at its destination; when that destination
  is another tap whose reader is slow, its queue (``txqueuelen`` frames,
  :attr:`Tap.txqueuelen`) overflows and the kernel drops the excess there,
  counting them in that device's ``tx_dropped`` (:func:`link_stats`).

Errors from the kernel are :class:`NetdevError` (an OSError with ``errno``)
whose message names the device and the action: ``bridge pyxenbr0: cannot
create it: Operation not permitted``.  Names are checked first: a Linux
interface name has 1 to 15 bytes, no ``/``, ``:`` or whitespace
(ValueError otherwise).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import socket
import struct
from dataclasses import dataclass, fields
from typing import ClassVar, Final

__all__ = [
    "HOST_MAC",
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VIRTIO_NET_HDR_GSO_ECN",
    "VIRTIO_NET_HDR_GSO_NONE",
    "VIRTIO_NET_HDR_GSO_TCPV4",
    "VIRTIO_NET_HDR_GSO_TCPV6",
    "VIRTIO_NET_HDR_GSO_UDP",
    "VNET_HDR_LEN",
    "LinkStats",
    "NetdevError",
    "Tap",
    "VnetHeader",
    "bridge_exists",
    "create_bridge",
    "delete_bridge",
    "link_stats",
]

HOST_MAC: Final = "fe:ff:ff:ff:ff:ff"
TUN_DEVICE: Final = "/dev/net/tun"
IFNAMSIZ: Final = 16

# <linux/if_tun.h>
TUNSETIFF: Final = 0x400454CA
TUNSETOFFLOAD: Final = 0x400454D0
TUNSETVNETHDRSZ: Final = 0x400454D8
IFF_TAP: Final = 0x0002
IFF_NO_PI: Final = 0x1000
IFF_VNET_HDR: Final = 0x4000
IFF_TUN_EXCL: Final = 0x8000
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04
TUN_F_TSO_ECN: Final = 0x08

# <linux/sockios.h>, <linux/if.h>
SIOCGIFFLAGS: Final = 0x8913
SIOCSIFFLAGS: Final = 0x8914
SIOCGIFMTU: Final = 0x8921
SIOCSIFMTU: Final = 0x8922
SIOCSIFHWADDR: Final = 0x8924
SIOCGIFHWADDR: Final = 0x8927
SIOCGIFINDEX: Final = 0x8933
SIOCGIFTXQLEN: Final = 0x8942
SIOCSIFTXQLEN: Final = 0x8943
SIOCETHTOOL: Final = 0x8946
SIOCBRADDBR: Final = 0x89A0
SIOCBRDELBR: Final = 0x89A1
SIOCBRADDIF: Final = 0x89A2
SIOCBRDELIF: Final = 0x89A3
IFF_UP: Final = 0x1
ARPHRD_ETHER: Final = 1
ETHTOOL_GDRVINFO: Final = 0x3
_DRVINFO_SIZE: Final = 196  # struct ethtool_drvinfo

# <linux/virtio_net.h>
VIRTIO_NET_HDR_F_NEEDS_CSUM: Final = 1
VIRTIO_NET_HDR_F_DATA_VALID: Final = 2
VIRTIO_NET_HDR_GSO_NONE: Final = 0
VIRTIO_NET_HDR_GSO_TCPV4: Final = 1
VIRTIO_NET_HDR_GSO_UDP: Final = 3
VIRTIO_NET_HDR_GSO_TCPV6: Final = 4
VIRTIO_NET_HDR_GSO_ECN: Final = 0x80
VNET_HDR_LEN: Final = 10

_IFREQ: Final = struct.Struct("16s24s")  # struct ifreq: name, then a 24-byte union
_MAX_FRAME: Final = 65536 + 64  # a GSO super-frame (64 KiB) plus link headers
_MAC_RE: Final = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


class NetdevError(OSError):
    """An ioctl on a network device failed: ``errno`` is the kernel's, the text one line."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VnetHeader:
    """``struct virtio_net_hdr``: what accompanies each frame through the tap fd."""

    flags: int = 0  # VIRTIO_NET_HDR_F_*
    gso_type: int = VIRTIO_NET_HDR_GSO_NONE  # VIRTIO_NET_HDR_GSO_*, maybe | GSO_ECN
    hdr_len: int = 0  # bytes of headers before the GSO payload
    gso_size: int = 0  # payload bytes a segment (the MSS)
    csum_start: int = 0  # where checksumming starts, from the frame's first byte
    csum_offset: int = 0  # where to store the checksum, from csum_start

    FORMAT: ClassVar[struct.Struct] = struct.Struct("=BBHHHH")

    def pack(self) -> bytes:
        return self.FORMAT.pack(*(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> VnetHeader:
        return cls(*cls.FORMAT.unpack_from(data))

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)

    @property
    def data_valid(self) -> bool:
        return bool(self.flags & VIRTIO_NET_HDR_F_DATA_VALID)


@dataclass(frozen=True)
class LinkStats:
    """A device's counters as /proc/net/dev shows them (for the caller's namespace).

    For a tap, ``tx`` is what the host sent toward the fd (what
    :meth:`Tap.read` returns, plus ``tx_dropped`` frames the full queue
    refused) and ``rx`` what was written to the fd.
    """

    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


# --- helpers --------------------------------------------------------------------

def _check_name(name: str, what: str) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ:
        raise ValueError(f"{what} name {name!r} is {len(raw)} bytes long: Linux interface "
                         f"names have 1 to {IFNAMSIZ - 1}")
    if name in (".", "..") or any(ch in "/:" or ch.isspace() for ch in name):
        raise ValueError(f"{what} name {name!r} is not a valid interface name (no '/', ':' "
                         "or blanks)")
    return raw


def _parse_mac(mac: str) -> bytes:
    if _MAC_RE.fullmatch(mac) is None:
        raise ValueError(f"MAC {mac!r} is not six hex octets separated by colons")
    return bytes(int(part, 16) for part in mac.split(":"))


def _format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _error(e: OSError, message: str) -> NetdevError:
    err = e.errno if e.errno is not None else errno.EIO
    return NetdevError(err, f"{message}: {os.strerror(err)}")


def _ioctl(request: int, name: bytes, data: bytes = b"") -> bytes:
    """An ifreq ioctl on a throwaway AF_UNIX socket (in the caller's namespace)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        result: bytes = fcntl.ioctl(s.fileno(), request, _IFREQ.pack(name, data))
    return result[IFNAMSIZ:]


def _ifindex(name: bytes) -> int:
    index: int = struct.unpack_from("i", _ioctl(SIOCGIFINDEX, name))[0]
    return index


def _exists(name: bytes) -> bool:
    try:
        _ifindex(name)
    except OSError as e:
        if e.errno == errno.ENODEV:
            return False
        raise
    return True


def _driver(name: bytes) -> str:
    """The device's driver as ethtool reports it ("bridge", "tun", ...)."""
    info = ctypes.create_string_buffer(_DRVINFO_SIZE)
    struct.pack_into("I", info, 0, ETHTOOL_GDRVINFO)
    _ioctl(SIOCETHTOOL, name, struct.pack("P", ctypes.addressof(info)))
    return info.raw[4:36].split(b"\0", 1)[0].decode(errors="replace")


def _set_up(name: bytes, up: bool = True) -> None:
    flags: int = struct.unpack_from("h", _ioctl(SIOCGIFFLAGS, name))[0]
    new = flags | IFF_UP if up else flags & ~IFF_UP
    if new != flags:
        _ioctl(SIOCSIFFLAGS, name, struct.pack("h", new))


def _get_int(request: int, name: bytes) -> int:
    value: int = struct.unpack_from("i", _ioctl(request, name))[0]
    return value


# --- bridges ----------------------------------------------------------------------

def bridge_exists(name: str) -> bool:
    """Whether a bridge called ``name`` exists in the caller's network namespace.

    A device of that name that is not a bridge gives False.
    """
    raw = _check_name(name, "bridge")
    try:
        return _driver(raw) == "bridge"
    except OSError as e:
        if e.errno == errno.ENODEV:
            return False
        raise _error(e, f"bridge {name}: cannot look it up") from None


def create_bridge(name: str) -> None:
    """Create the bridge ``name`` (STP off, down); NetdevError if that fails or it exists."""
    raw = _check_name(name, "bridge")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCBRADDBR, raw.ljust(IFNAMSIZ, b"\0"))
    except OSError as e:
        raise _error(e, f"bridge {name}: cannot create it") from None


def delete_bridge(name: str) -> None:
    """Take the bridge ``name`` down and delete it (its ports are released)."""
    raw = _check_name(name, "bridge")
    if not bridge_exists(name):
        what = "it is not a bridge" if _exists(raw) else "it does not exist"
        raise NetdevError(errno.ENODEV, f"bridge {name}: cannot delete it: {what}")
    try:
        _set_up(raw, False)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCBRDELBR, raw.ljust(IFNAMSIZ, b"\0"))
    except OSError as e:
        raise _error(e, f"bridge {name}: cannot delete it") from None


def link_stats(name: str) -> LinkStats:
    """``name``'s counters from /proc/self/net/dev (the caller's network namespace)."""
    _check_name(name, "interface")
    with open("/proc/self/net/dev") as f:
        for line in f:
            ifname, sep, counters = line.partition(":")
            if sep and ifname.strip() == name:
                v = [int(x) for x in counters.split()]
                return LinkStats(rx_bytes=v[0], rx_packets=v[1], rx_errors=v[2],
                                 rx_dropped=v[3], tx_bytes=v[8], tx_packets=v[9],
                                 tx_errors=v[10], tx_dropped=v[11])
    raise NetdevError(errno.ENODEV, f"interface {name}: no counters: it does not exist")


# --- taps -------------------------------------------------------------------------

class Tap:
    """One TAP device with a virtio-net header; see the module docstring.

    Counters kept here (cheap, in-process): ``frames_read``/``bytes_read``,
    ``frames_written``/``bytes_written`` (frame bytes, headers excluded) and
    ``writes_refused`` (EAGAIN).  The kernel's are in :func:`link_stats`.
    """

    def __init__(self, fd: int, name: str) -> None:
        """Wrap an fd already set up by :meth:`create` (use that instead)."""
        self._fd = fd
        self.name: Final = name
        self._raw_name = name.encode()
        self.bridge: str | None = None  # the bridge attach() put it on
        self._buf = bytearray(VNET_HDR_LEN + _MAX_FRAME)
        self.frames_read = 0
        self.bytes_read = 0
        self.frames_written = 0
        self.bytes_written = 0
        self.writes_refused = 0

    @classmethod
    def create(cls, name: str, mac: str | None = None, mtu: int | None = None) -> Tap:
        """Create the TAP device ``name``, set its MAC (default :data:`HOST_MAC`) and
        MTU (default the kernel's, 1500), and bring it up."""
        raw = _check_name(name, "tap")
        mac_raw = _parse_mac(mac if mac is not None else HOST_MAC)
        try:
            fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise _error(e, f"tap {name}: cannot open {TUN_DEVICE}") from None
        try:
            flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL
            try:
                fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(raw, struct.pack("H", flags)))
            except OSError as e:
                hint = (" (an interface of that name exists)"
                        if e.errno in (errno.EBUSY, errno.EEXIST) else "")
                raise NetdevError(e.errno or errno.EIO, f"tap {name}: cannot create it: "
                                  f"{os.strerror(e.errno or errno.EIO)}{hint}") from None
            try:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
            except OSError as e:
                raise _error(e, f"tap {name}: cannot set its vnet header size") from None
            tap = cls(fd, name)
            tap._set_mac(mac_raw)
            if mtu is not None:
                tap.mtu = mtu
            try:
                _set_up(raw)
            except OSError as e:
                raise _error(e, f"tap {name}: cannot bring it up") from None
        except BaseException:
            os.close(fd)
            raise
        return tap

    # --- the fd ---------------------------------------------------------------

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError(f"tap {self.name} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def read(self) -> tuple[VnetHeader, bytes] | None:
        """The next frame the host sends toward the guest, or None if none is queued."""
        try:
            n = os.readv(self.fileno(), [self._buf])
        except BlockingIOError:
            return None
        except OSError as e:
            raise _error(e, f"tap {self.name}: cannot read") from None
        if n < VNET_HDR_LEN:
            raise NetdevError(errno.EIO, f"tap {self.name}: read {n} bytes, less than a "
                              "vnet header")
        header = VnetHeader.unpack(self._buf)
        frame = bytes(self._buf[VNET_HDR_LEN:n])
        self.frames_read += 1
        self.bytes_read += len(frame)
        return header, frame

    def write(self, frame: bytes, header: VnetHeader | None = None) -> bool:
        """Hand the host a frame from the guest; False if the kernel said EAGAIN."""
        head = (header if header is not None else VnetHeader()).pack()
        try:
            os.writev(self.fileno(), [head, frame])
        except BlockingIOError:
            self.writes_refused += 1
            return False
        except OSError as e:
            err = _error(e, f"tap {self.name}: cannot write a {len(frame)}-byte frame")
            if err.errno == errno.EIO:
                err = NetdevError(err.errno, f"{err} (is the device down?)")
            raise err from None
        self.frames_written += 1
        self.bytes_written += len(frame)
        return True

    def set_offload(self, csum: bool = False, tso4: bool = False, tso6: bool = False,
                    tso_ecn: bool = False) -> None:
        """Which frames the kernel may hand :meth:`read` unfinished (TUNSETOFFLOAD).

        ``csum``: frames with a partial checksum (``NEEDS_CSUM``); ``tso4``/
        ``tso6``: TCP GSO super-frames (they need ``csum``); ``tso_ecn``: with
        the ECN bit.  All off (the default) means finished, MTU-sized frames.
        """
        if (tso4 or tso6 or tso_ecn) and not csum:
            raise ValueError("TSO offload needs checksum offload (csum=True)")
        if tso_ecn and not (tso4 or tso6):
            raise ValueError("tso_ecn needs tso4 or tso6")
        flags = ((TUN_F_CSUM if csum else 0) | (TUN_F_TSO4 if tso4 else 0)
                 | (TUN_F_TSO6 if tso6 else 0) | (TUN_F_TSO_ECN if tso_ecn else 0))
        try:
            fcntl.ioctl(self.fileno(), TUNSETOFFLOAD, flags)
        except OSError as e:
            raise _error(e, f"tap {self.name}: cannot set offloads {flags:#x}") from None

    # --- the device -------------------------------------------------------------

    @property
    def ifindex(self) -> int:
        return _ifindex(self._raw_name)

    @property
    def mac(self) -> str:
        """The device's own (host side) MAC address."""
        data = _ioctl(SIOCGIFHWADDR, self._raw_name)
        return _format_mac(data[2:8])

    def _set_mac(self, raw: bytes) -> None:
        try:
            _ioctl(SIOCSIFHWADDR, self._raw_name, struct.pack("H6s", ARPHRD_ETHER, raw))
        except OSError as e:
            raise _error(e, f"tap {self.name}: cannot set its MAC to {_format_mac(raw)}") \
                from None

    @property
    def mtu(self) -> int:
        return _get_int(SIOCGIFMTU, self._raw_name)

    @mtu.setter
    def mtu(self, mtu: int) -> None:
        try:
            _ioctl(SIOCSIFMTU, self._raw_name, struct.pack("i", mtu))
        except OSError as e:
            raise _error(e, f"tap {self.name}: cannot set its MTU to {mtu}") from None

    @property
    def txqueuelen(self) -> int:
        """How many frames the host may queue for :meth:`read` before dropping."""
        return _get_int(SIOCGIFTXQLEN, self._raw_name)

    @txqueuelen.setter
    def txqueuelen(self, length: int) -> None:
        try:
            _ioctl(SIOCSIFTXQLEN, self._raw_name, struct.pack("i", length))
        except OSError as e:
            raise _error(e, f"tap {self.name}: cannot set its txqueuelen to {length}") \
                from None

    def stats(self) -> LinkStats:
        return link_stats(self.name)

    # --- bridge -------------------------------------------------------------------

    def attach(self, bridge: str, create: bool = True) -> None:
        """Put the tap on ``bridge``, creating the bridge if it is missing and ``create``
        is set, and bring the bridge up.  An existing bridge is otherwise left as it is."""
        raw = _check_name(bridge, "bridge")
        if self.bridge is not None:
            raise NetdevError(errno.EBUSY, f"tap {self.name}: cannot attach it to bridge "
                              f"{bridge}: it is on bridge {self.bridge}")
        if not bridge_exists(bridge):
            if _exists(raw):
                raise NetdevError(errno.EINVAL, f"bridge {bridge}: {bridge} exists but is "
                                  f"not a bridge (driver {_driver(raw)!r})")
            if not create:
                raise NetdevError(errno.ENODEV, f"bridge {bridge}: it does not exist "
                                  "(and create=False)")
            try:
                create_bridge(bridge)
            except NetdevError as e:
                if e.errno != errno.EEXIST:  # created meanwhile: fine
                    raise
        try:
            _set_up(raw)
        except OSError as e:
            raise _error(e, f"bridge {bridge}: cannot bring it up") from None
        try:
            _ioctl(SIOCBRADDIF, raw, struct.pack("i", self.ifindex))
        except OSError as e:
            raise _error(e, f"tap {self.name}: cannot add it to bridge {bridge}") from None
        self.bridge = bridge

    def detach(self) -> None:
        """Take the tap off its bridge (nothing if it is on none, or the bridge is gone)."""
        bridge = self.bridge
        if bridge is None:
            return
        self.bridge = None
        try:
            _ioctl(SIOCBRDELIF, bridge.encode(), struct.pack("i", self.ifindex))
        except OSError as e:
            if e.errno not in (errno.ENODEV, errno.EINVAL):  # bridge gone / not a port
                raise _error(e, f"tap {self.name}: cannot remove it from bridge "
                             f"{bridge}") from None

    def close(self) -> None:
        """Close the fd: the device disappears (and leaves its bridge).  Idempotent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            self.bridge = None
            os.close(fd)

    def __enter__(self) -> Tap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"Tap({self.name!r}, {state}, bridge={self.bridge!r})"
