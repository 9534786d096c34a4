"""xenstored under hostile clients: the wire framing, the request handlers and the ring.

* Requests: random sequences of messages (known and unknown types, payloads
  built from path-like words, permission strings, numbers and NULs, or raw
  bytes; transaction ids that exist or not) from domain 0 and from an
  unprivileged guest, handled by a :class:`Xenstore` in memory.  Every
  request gets exactly one reply echoing its req_id and tx_id, of its own
  type or XS_ERROR with a wire errno name; no request is an internal error
  (EIO, a logged exception); the tree stays consistent (``check_tree``).
* Framing: a stream of messages split at random points decodes to the same
  messages; random bytes decode to messages or ProtocolError.
* Ring: the guest side of a real ring page (a bytearray) does anything --
  random indices, random bytes, reconnection requests -- between the
  server's ``service`` and ``flush`` calls.  The server never raises, never
  writes where the guest owns the page (``req[]``, ``req_prod``,
  ``rsp_cons``), and keeps ``rsp_prod - rsp_cons`` within the ring while the
  guest's own indices are sane.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz.stats import count
from pyxen.abi.xs_wire import XENSTORE_PAYLOAD_MAX, XSD_ERRORS, XsdSockmsgType
from pyxen.services.xenstored.connection import Connection
from pyxen.services.xenstored.control import check_tree
from pyxen.services.xenstored.core import Xenstore
from pyxen.services.xenstored.errors import ProtocolError
from pyxen.services.xenstored.guest import GuestConnection
from pyxen.services.xenstored.permissions import DOM0, Caller
from pyxen.services.xenstored.ring import (
    CONNECTION,
    INTERFACE_SIZE,
    REQ,
    REQ_CONS,
    REQ_PROD,
    RSP_CONS,
    RSP_PROD,
    SERVER_FEATURES,
    XenstoreRing,
)
from pyxen.services.xenstored.wire import Message, MessageReader, encode

T = XsdSockmsgType
GUEST = 5
ERRNO_NAMES = {name for _, name in XSD_ERRORS}

WORDS = [b"", b"/", b"local", b"domain", b"0", b"5", b"7", b"a", b"b", b"..", b".", b"//",
         b"@introduceDomain", b"@releaseDomain", b"@", b"tool", b"x" * 300, b"r5", b"w0",
         b"b5", b"n7", b"r", b"q", b"-1", b"4294967295", b"0x10", b"T", b"F", b"check",
         b"print", b"help", b"\xff", b"a b", b"\x01", b"/local/domain/5/a",
         b"/local/domain/0", b"4095", b"2147483648"]
PARTS = [b"a", b"b", b"c", b"5", b"0", b"7", b"domain", b"local"]
PREFIXES = [b"", b"/", b"/local/domain/5/", b"/local/domain/0/", b"/local/domain/7/", b"@"]
paths = st.builds(lambda prefix, parts: prefix + b"/".join(parts), st.sampled_from(PREFIXES),
                  st.lists(st.sampled_from(PARTS) | st.sampled_from(PARTS)
                           | st.sampled_from(WORDS), min_size=1, max_size=3))
args = st.one_of(paths, paths, st.sampled_from(WORDS))
one_path = paths.map(lambda p: p + b"\0")
word = st.sampled_from(WORDS)
numbers = st.sampled_from([b"0", b"5", b"7", b"1", b"-1", b"32752", b"4294967296", b"x"])
perms = st.lists(st.sampled_from([b"n5", b"r0", b"w5", b"b7", b"r", b"q1", b"n"]),
                 min_size=1, max_size=3)


def _nul(*parts: bytes) -> bytes:
    return b"".join(p + b"\0" for p in parts)


# (type, payload) pairs shaped like each request, plus anything at all.
well_formed = st.one_of(
    st.tuples(st.sampled_from([T.READ, T.DIRECTORY, T.GET_PERMS, T.RM, T.MKDIR]), one_path),
    st.tuples(st.just(T.WRITE), st.builds(lambda p, v: p + b"\0" + v, paths, word)),
    st.tuples(st.sampled_from([T.WATCH, T.UNWATCH]), st.builds(_nul, paths, word)),
    st.tuples(st.just(T.SET_PERMS), st.builds(lambda p, ps: _nul(p, *ps), paths, perms)),
    st.tuples(st.just(T.TRANSACTION_START), st.just(b"\0")),
    st.tuples(st.just(T.TRANSACTION_END), st.sampled_from([b"T\0", b"F\0", b"X\0"])),
    st.tuples(st.just(T.INTRODUCE), st.builds(_nul, numbers, numbers, numbers)),
    st.tuples(st.sampled_from([T.RELEASE, T.GET_DOMAIN_PATH, T.IS_DOMAIN_INTRODUCED,
                               T.RESUME]), numbers.map(_nul)),
    st.tuples(st.just(T.SET_TARGET), st.builds(_nul, numbers, numbers)),
    st.tuples(st.just(T.DIRECTORY_PART), st.builds(_nul, paths, numbers)),
    st.tuples(st.just(T.CONTROL), st.sampled_from([_nul(b"check"), _nul(b"help"),
                                                   _nul(b"print", b"x"), _nul(b"log", b"on")])),
)
payloads = st.one_of(
    one_path,
    st.lists(args, max_size=5).map(lambda parts: b"".join(p + b"\0" for p in parts)),
    st.lists(args, max_size=5).map(b"\0".join),
    st.binary(max_size=64),
)
KNOWN = st.sampled_from([t for t in T if t not in (T.WATCH_EVENT, T.ERROR)])
types = st.one_of(KNOWN, st.integers(0, 0xFFFF_FFFF))
anything = st.tuples(types, payloads)
requests = st.builds(lambda priv, tp, req_id, tx_id: (priv, tp[0], req_id, tx_id, tp[1]),
                     st.booleans(), well_formed | well_formed | well_formed | anything,
                     st.integers(0, 0xFFFF_FFFF),
                     st.sampled_from([0, 0, 0, 0, 0, 1, 1, 2, 0xFFFF_FFFF]))


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def errors() -> Iterator[_Errors]:
    handler = _Errors()
    logger = logging.getLogger("pyxen.xenstored")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@given(st.lists(requests, min_size=1, max_size=25))
def test_requests(errors: _Errors, reqs: list[tuple[bool, int, int, int, bytes]]) -> None:
    errors.records.clear()
    xs = Xenstore()
    xs.introduce(GUEST, 0, 1)
    home = b"/local/domain/5"
    for msg_type, payload in ((T.MKDIR, home + b"\0"), (T.SET_PERMS, home + b"\0n5\0r0\0")):
        xs.handle(xs.domains[0].connection, Message(msg_type, 0, 0, payload))
    clients = {True: xs.add_connection(Connection(DOM0, "fuzz dom0")),
               False: xs.add_connection(Connection(Caller(GUEST, False), "fuzz guest"))}
    readers = {True: MessageReader(), False: MessageReader()}
    for privileged, msg_type, req_id, tx_id, payload in reqs:
        count("xenstored")
        conn = clients[privileged]
        xs.handle(conn, Message(msg_type, req_id, tx_id, payload))
        replies = [m for m in readers[privileged].feed(conn.take_output())
                   if m.type != T.WATCH_EVENT]
        assert len(replies) == 1, (msg_type, payload, replies)
        reply = replies[0]
        assert (reply.req_id, reply.tx_id) == (req_id, tx_id)
        assert len(reply.payload) <= XENSTORE_PAYLOAD_MAX
        if reply.type == T.ERROR:
            name = reply.payload[:-1].decode()
            assert reply.payload.endswith(b"\0") and name in ERRNO_NAMES, reply
            assert name != "EIO", (msg_type, payload)
            event(f"error {name}")
        else:
            assert reply.type == msg_type
            event(f"ok {T(msg_type).name}")
        for other in clients.values():  # events for the other connection
            other.take_output() if other is not conn else None
    problems = [r.getMessage() for r in errors.records]
    problems += check_tree(xs)
    assert not problems, problems


messages = st.builds(Message, st.integers(0, 0xFFFF_FFFF), st.integers(0, 0xFFFF_FFFF),
                     st.integers(0, 0xFFFF_FFFF), st.binary(max_size=100))


@given(st.lists(messages, max_size=8), st.lists(st.integers(0, 2000), max_size=10))
def test_framing_is_independent_of_chunking(msgs: list[Message], cuts: list[int]) -> None:
    count("xenstored-wire")
    stream = b"".join(m.encode() for m in msgs)
    reader = MessageReader()
    got: list[Message] = []
    at = 0
    for cut in [*sorted({min(c, len(stream)) for c in cuts}), len(stream)]:
        got += reader.feed(stream[at:cut])
        at = cut
    assert got == msgs and reader.pending == 0


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_random_bytes_decode_or_break(chunks: list[bytes]) -> None:
    reader = MessageReader()
    for chunk in chunks:
        count("xenstored-wire")
        try:
            for m in reader.feed(chunk):
                assert len(m.payload) <= XENSTORE_PAYLOAD_MAX
        except ProtocolError:
            with pytest.raises(ProtocolError):
                reader.feed(b"")
            return


# -- the ring -------------------------------------------------------------------------

_U32 = struct.Struct("<I")
_GUEST_OWNED = [(REQ, REQ + 1024), (REQ_PROD, REQ_PROD + 4), (RSP_CONS, RSP_CONS + 4)]

guest_actions = st.one_of(
    st.tuples(st.just("req"), st.binary(min_size=1, max_size=300)),  # well-behaved producer
    st.tuples(st.just("frame"), st.builds(lambda t, p: encode(t, 1, 0, p), types, payloads)),
    st.tuples(st.just("consume"), st.integers(0, 2048)),
    st.tuples(st.just("poke"), st.sampled_from([REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD,
                                                CONNECTION, SERVER_FEATURES]),
              st.integers(0, 0xFFFF_FFFF)),
    st.tuples(st.just("reconnect")),
    st.tuples(st.just("service")),
)


def _u32(page: bytes | bytearray, offset: int) -> int:
    value: int = _U32.unpack_from(page, offset)[0]
    return value


def _guest_write(page: bytearray, data: bytes) -> None:
    """Produce request bytes as a correct guest does (only what fits)."""
    cons, prod = _u32(page, REQ_CONS), _u32(page, REQ_PROD)
    room = 1024 - ((prod - cons) & 0xFFFF_FFFF)
    if not 0 <= room <= 1024:
        return
    for byte in data[:room]:
        page[REQ + (prod & 1023)] = byte
        prod = (prod + 1) & 0xFFFF_FFFF
    _U32.pack_into(page, REQ_PROD, prod)


@given(st.lists(guest_actions, max_size=30))
def test_ring(errors: _Errors, actions: list[tuple[object, ...]]) -> None:
    errors.records.clear()
    xs = Xenstore()
    page = bytearray(4096)
    view = memoryview(page)
    ring = XenstoreRing(view, lambda: None)
    guest = GuestConnection(GUEST, ring, -1, xs.handle)
    xs.add_connection(guest)
    sane = True  # the guest never broke its own indices
    for action in actions:
        count("xenstored-ring")
        kind = action[0]
        if kind in ("req", "frame"):
            data = action[1]
            assert isinstance(data, bytes)
            _guest_write(page, data)
        elif kind == "consume":
            cons, prod = _u32(page, RSP_CONS), _u32(page, RSP_PROD)
            n = action[1]
            assert isinstance(n, int)
            _U32.pack_into(page, RSP_CONS, (cons + min(n, (prod - cons) & 0xFFFF_FFFF))
                           & 0xFFFF_FFFF)
        elif kind == "poke":
            offset, value = action[1], action[2]
            assert isinstance(offset, int) and isinstance(value, int)
            _U32.pack_into(page, offset, value)
            sane = False
        elif kind == "reconnect":
            _U32.pack_into(page, CONNECTION, 1)
        before = bytes(page)
        if kind == "reconnect":
            sane = True
        assert isinstance(guest.service(), bool)
        guest.flush()
        after = bytes(page)
        # A reconnection zeroes every index (the protocol); nothing else is the server's.
        owned = _GUEST_OWNED[:1] if _u32(before, CONNECTION) == 1 else _GUEST_OWNED
        for lo, hi in owned:
            assert before[lo:hi] == after[lo:hi], f"the server wrote at {lo:#x}"
        assert after[INTERFACE_SIZE:] == before[INTERFACE_SIZE:]
        if sane and not guest.ignored:
            used = (_u32(page, RSP_PROD) - _u32(page, RSP_CONS)) & 0xFFFF_FFFF
            assert used <= 1024
    view.release()
    assert not [r.getMessage() for r in errors.records if "ignoring" not in r.getMessage()]
