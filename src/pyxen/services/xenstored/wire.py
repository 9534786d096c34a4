"""Framing of ``xsd_sockmsg`` messages and the C-style argument parsing.

A message is a 16-byte little-endian header (type, req_id, tx_id, len)
followed by ``len`` payload bytes (``xs_wire.h``).  :class:`MessageReader`
reassembles messages from arbitrary chunks (partial reads on a socket or a
ring); a header whose ``len`` exceeds ``XENSTORE_PAYLOAD_MAX`` raises
:class:`ProtocolError` and the reader stays broken: the connection is out of
sync and must be dropped.

Payload arguments are NUL-terminated strings.  The helpers mirror how C
xenstored reads them (``get_strings``, ``onearg``, ``xs_count_strings`` and
``atoi``) because clients rely on the exact corner cases: trailing bytes
after the last NUL are not a string, ``atoi("junk")`` is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyxen.abi.xs_wire import XENSTORE_PAYLOAD_MAX, XSD_SOCKMSG, XsdSockmsgType

from .errors import ProtocolError

HEADER = XSD_SOCKMSG
HEADER_SIZE = HEADER.size


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded message (request, reply or watch event)."""

    type: int
    req_id: int
    tx_id: int
    payload: bytes

    def encode(self) -> bytes:
        return HEADER.pack(self.type, self.req_id, self.tx_id, len(self.payload)) + self.payload


def encode(msg_type: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    """Header plus payload, ready to send."""
    return HEADER.pack(msg_type, req_id, tx_id, len(payload)) + payload


def watch_event(path: bytes, token: bytes) -> bytes:
    """An ``XS_WATCH_EVENT``: payload path\\0token\\0, req_id = tx_id = 0."""
    return encode(XsdSockmsgType.WATCH_EVENT, 0, 0, path + b"\0" + token + b"\0")


class MessageReader:
    """Reassembles messages from a byte stream fed in arbitrary pieces."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._broken = False

    @property
    def pending(self) -> int:
        """Bytes of a partial message held."""
        return len(self._buf)

    def reset(self) -> None:
        """Drop any partial message (a ring reconnection)."""
        self._buf.clear()
        self._broken = False

    def feed(self, data: bytes) -> list[Message]:
        """Add ``data``; return the messages it completes.

        Raises :class:`ProtocolError` on a header announcing a payload larger
        than ``XENSTORE_PAYLOAD_MAX`` (C xenstored: "Client tried to feed us").
        """
        if self._broken:
            raise ProtocolError("stream already out of sync")
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= HEADER_SIZE:
            msg_type, req_id, tx_id, length = HEADER.unpack_from(self._buf)
            if length > XENSTORE_PAYLOAD_MAX:
                self._broken = True
                self._buf.clear()
                raise ProtocolError(f"message of {length} bytes (max {XENSTORE_PAYLOAD_MAX})")
            end = HEADER_SIZE + length
            if len(self._buf) < end:
                break
            out.append(Message(msg_type, req_id, tx_id, bytes(self._buf[HEADER_SIZE:end])))
            del self._buf[:end]
        return out


def get_strings(payload: bytes) -> list[bytes]:
    """The NUL-terminated strings of a payload (bytes after the last NUL are
    not a string), like C xenstored's ``get_strings``."""
    parts = payload.split(b"\0")
    return parts[:-1]


def one_arg(payload: bytes) -> bytes | None:
    """The single argument of a payload that holds exactly one NUL, at the
    end (C ``onearg``); None otherwise."""
    if not payload or payload.find(b"\0") != len(payload) - 1:
        return None
    return payload[:-1]


def count_strings(payload: bytes) -> int:
    """Number of NULs in the payload (C ``xs_count_strings``)."""
    return payload.count(b"\0")


def _c_integer(text: bytes, base: int) -> int:
    """Leading integer of ``text`` as C's strtol would read it (0 if none)."""
    s = text.lstrip(b" \t\n\r\f\v")
    sign = 1
    if s[:1] in (b"+", b"-"):
        sign = -1 if s[:1] == b"-" else 1
        s = s[1:]
    if base == 0:
        if s[:2].lower() == b"0x" and s[2:3] and s[2:3] in b"0123456789abcdefABCDEF":
            base, s = 16, s[2:]
        elif s[:1] == b"0":
            base = 8
        else:
            base = 10
    digits = "0123456789abcdef"[:base]
    value = 0
    for ch in s.lower():
        d = digits.find(chr(ch))
        if d < 0:
            break
        value = value * base + d
    return sign * value


def c_atoi(text: bytes) -> int:
    """C ``atoi``: leading decimal integer, 0 when there is none."""
    return _c_integer(text, 10)


def c_strtol(text: bytes) -> int:
    """C ``strtol(text, NULL, 0)``: decimal, 0x-hex or 0-octal."""
    return _c_integer(text, 0)


def as_u32(value: int) -> int:
    """A C int converted to ``unsigned int`` (wraps negatives)."""
    return value & 0xFFFFFFFF
