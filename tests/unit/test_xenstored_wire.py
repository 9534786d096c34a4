"""Framing and the C-style argument parsing."""

from __future__ import annotations

import pytest

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.errors import ProtocolError
from pyxen.services.xenstored.wire import (
    HEADER,
    Message,
    MessageReader,
    c_atoi,
    c_strtol,
    count_strings,
    encode,
    get_strings,
    one_arg,
)


def test_reader_reassembles_byte_by_byte() -> None:
    stream = encode(T.READ, 1, 2, b"/a\0") + encode(T.WRITE, 3, 0, b"/b\0v") + encode(6, 4, 0, b"")
    reader = MessageReader()
    got: list[Message] = []
    for i in range(len(stream)):
        got += reader.feed(stream[i:i + 1])
    assert got == [Message(T.READ, 1, 2, b"/a\0"), Message(T.WRITE, 3, 0, b"/b\0v"),
                   Message(6, 4, 0, b"")]
    assert reader.pending == 0


def test_reader_accepts_payload_max_and_refuses_more() -> None:
    reader = MessageReader()
    assert len(reader.feed(HEADER.pack(T.WRITE, 1, 0, 4096) + b"x" * 4096)) == 1
    with pytest.raises(ProtocolError):
        reader.feed(HEADER.pack(T.WRITE, 1, 0, 4097))


def test_argument_helpers_follow_c() -> None:
    assert get_strings(b"a\0b\0trailing") == [b"a", b"b"]
    assert one_arg(b"a\0") == b"a" and one_arg(b"a\0b\0") is None and one_arg(b"") is None
    assert count_strings(b"a\0\0b") == 2
    assert [c_atoi(x) for x in (b"12", b" -3x", b"junk", b"", b"+7")] == [12, -3, 0, 0, 7]
    assert [c_strtol(x) for x in (b"0x1f", b"010", b"9", b"0")] == [31, 8, 9, 0]
