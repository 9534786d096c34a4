"""Output queues: watch events for a client that does not read them are
bounded (XSA-326: duplicates and events over the quota are dropped, replies
never), and sending costs work proportional to the bytes sent, however
small the chunks the transport takes."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from test_xenstored_harness import Client
from test_xenstored_ring import Guest, serve
from test_xenstored_ring import setup as ring_setup  # noqa: F401 (a fixture)

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.connection import Connection
from pyxen.services.xenstored.core import Xenstore
from pyxen.services.xenstored.guest import GuestConnection
from pyxen.services.xenstored.permissions import Caller
from pyxen.services.xenstored.quotas import Quotas
from pyxen.services.xenstored.server import SocketConnection
from pyxen.services.xenstored.wire import Message, MessageReader, encode


def _events(conn: Connection) -> list[bytes]:
    """The event payloads queued for ``conn`` (taken off its queue)."""
    return [m.payload for m in MessageReader().feed(conn.take_output())
            if m.type == T.WATCH_EVENT]


def _watcher(xs: Xenstore, domid: int, path: bytes, token: bytes = b"t") -> Connection:
    """A connection that registers a watch and then never reads."""
    conn = xs.add_connection(Connection(Caller(domid, domid == 0), f"watcher {domid}"))
    xs.handle(conn, Message(T.WATCH, 1, 0, path + b"\0" + token + b"\0"))
    return conn


def test_unread_events_stop_at_the_quota_and_replies_still_flow() -> None:
    xs = Xenstore()
    writer = Client(xs)
    watcher = _watcher(xs, 0, b"/x")
    for i in range(3000):
        writer.write(f"/x/n{i}", "v")
    xs.handle(watcher, Message(T.READ, 7, 0, b"/x/n0\0"))
    messages = MessageReader().feed(watcher.take_output())
    assert [m.payload for m in messages[:3]] == [b"OK\0", b"/x\0t\0", b"/x/n0\0t\0"]
    # The registration event and 1023 changes, nothing more; the reply to a
    # request made meanwhile is not dropped.
    events = [m for m in messages if m.type == T.WATCH_EVENT]
    assert len(events) == 1024
    assert watcher.output.dropped_over_quota == 3000 - 1023
    assert (messages[-1].type, messages[-1].req_id, messages[-1].payload) == (T.READ, 7, b"v")
    # Once it has read them, events are queued again.
    writer.write("/x/again", "v")
    assert _events(watcher) == [b"/x/again\0t\0"]


def test_quota_is_per_connection() -> None:
    xs = Xenstore(quotas=Quotas(watch_events_per_connection=4))
    writer = Client(xs)
    stuck = _watcher(xs, 0, b"/x")
    reader = _watcher(xs, 0, b"/x", b"r")
    reader.take_output()
    for i in range(10):
        writer.write(f"/x/n{i}", "v")
        assert _events(reader) == [f"/x/n{i}\0r\0".encode()]
    assert stuck.output.events_queued == 4


def test_identical_queued_events_are_merged_but_special_ones_are_not() -> None:
    xs = Xenstore()
    writer = Client(xs)
    watcher = _watcher(xs, 0, b"/x")
    for _ in range(3):
        writer.write("/x/a", "1")
        writer.write("/x/b", "2")
    writer.write("/x", "")  # same as the registration event, which is unread
    writer.request(T.INTRODUCE, b"7\x001\x001\0")
    writer.request(T.RELEASE, b"7\0")
    writer.request(T.INTRODUCE, b"7\x001\x001\0")
    assert _events(watcher) == [b"/x\0t\0", b"/x/a\0t\0", b"/x/b\0t\0"]
    assert watcher.output.dropped_duplicates == 5
    special = _watcher(xs, 0, b"@releaseDomain", b"r")
    for domid in (8, 9):
        writer.request(T.INTRODUCE, f"{domid}\0{1}\0{1}\0".encode())
        writer.request(T.RELEASE, f"{domid}\0".encode())
    assert _events(special) == [b"@releaseDomain\0r\0"] * 3
    # Sent events are no longer pending: the same change is reported again.
    writer.write("/x/a", "3")
    assert _events(watcher) == [b"/x/a\0t\0"]


def test_drops_are_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    xs = Xenstore(quotas=Quotas(watch_events_per_connection=2))
    writer = Client(xs)
    watcher = _watcher(xs, 0, b"/x")
    with caplog.at_level(logging.WARNING, logger="pyxen.xenstored"):
        for i in range(20):
            writer.write(f"/x/n{i}", "")
        watcher.take_output()
        writer.write("/x/last", "")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "dropping its further events" in messages[0]
    assert "19 were dropped" in messages[1]


def test_a_guest_that_never_reads_its_ring_is_bounded(
        ring_setup: tuple[Xenstore, Guest, GuestConnection]) -> None:  # noqa: F811
    xs, guest, conn = ring_setup
    dom0 = Client(xs)
    dom0.write("/local/domain/5/data", "")
    dom0.set_perms("/local/domain/5/data", "n5")
    guest.send_bytes(encode(T.WATCH, 1, 0, b"data\0tok\0"))
    serve(conn)
    for i in range(5000):  # the guest never consumes rsp[]
        dom0.write(f"/local/domain/5/data/k{i}", "x")
        conn.flush()
    assert conn.output_pending < 1024 * 64
    got = []
    while True:  # now it reads: everything queued arrives intact, in order
        msgs = guest.receive()
        serve(conn)
        if not msgs:
            break
        got += msgs
    assert [m.payload for m in got[:2]] == [b"OK\0", b"data\0tok\0"]
    # The first events, without a gap: those that fitted in the ring, then
    # the quota's worth; the rest were dropped.
    events = got[2:]
    assert [m.payload for m in events] == [f"data/k{i}\0tok\0".encode()
                                           for i in range(len(events))]
    assert 1024 < len(events) < 1024 + 1024 // 16


class CountingRing:
    """Wraps a ring (or socket): counts the bytes offered to write()/send()."""

    def __init__(self, inner: object, method: str) -> None:
        self.inner = inner
        self.offered = 0
        self.method = getattr(inner, method)
        setattr(self, method, self._write)

    def _write(self, data: bytes) -> int:
        self.offered += len(data)
        result: int = self.method(data)
        return result

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_ring_flush_work_is_linear_in_the_bytes_sent(
        ring_setup: tuple[Xenstore, Guest, GuestConnection]) -> None:  # noqa: F811
    _, guest, conn = ring_setup
    reply = encode(T.READ, 1, 0, b"r" * 1000)
    for _ in range(256):  # 256 KiB queued, drained 1 KiB per ring turn
        conn.send(reply)
    queued = conn.output_pending
    counting = CountingRing(conn.ring, "write")
    conn.ring = counting  # type: ignore[assignment]
    received = 0
    while conn.output_pending:
        conn.flush()
        received += len(guest.receive())
    assert received == 256
    # Each byte is offered about once (the old flush offered the whole queue
    # per 1 KiB: about queued**2 / 2048 bytes).
    assert counting.offered <= 2 * queued


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_socket_flush_work_is_linear_in_the_bytes_sent(
        socket_pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = socket_pair
    conn = SocketConnection(ours, 1)
    reply = encode(T.READ, 1, 0, b"s" * 4000)
    for _ in range(2048):  # 8 MiB: many socket buffers' worth
        conn.send(reply)
    queued = conn.output_pending
    counting = CountingRing(ours, "send")
    conn.sock = counting  # type: ignore[assignment]
    received = 0
    while received < queued:
        conn.flush()
        received += len(peer.recv(1 << 20))
    assert received == queued and conn.output_pending == 0
    assert counting.offered <= 2 * queued
