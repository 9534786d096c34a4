"""The ring protocol on a real shared page (an anonymous mmap) with real
eventfds, the test playing the guest: it writes requests into req[], bumps
req_prod and signals the server's eventfd; the server answers into rsp[]
and signals back through ``notify``."""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.core import Xenstore
from pyxen.services.xenstored.domains import DomainChannel
from pyxen.services.xenstored.guest import GuestConnection
from pyxen.services.xenstored.ring import (
    CONNECTION,
    REQ,
    REQ_CONS,
    REQ_PROD,
    RSP,
    RSP_CONS,
    RSP_PROD,
    SERVER_FEATURES,
    XenstoreRing,
)
from pyxen.services.xenstored.wire import HEADER, Message, MessageReader, encode
from pyxen.shared_words import SharedWords

U32 = struct.Struct("<I")


class Guest:
    """The guest side of the page."""

    def __init__(self, page: mmap.mmap, to_server: int, from_server: int) -> None:
        self.page = page
        self.to_server = to_server
        self.from_server = from_server
        self.reader = MessageReader()

    def get(self, off: int) -> int:
        value: int = U32.unpack_from(self.page, off)[0]
        return value

    def put(self, off: int, value: int) -> None:
        U32.pack_into(self.page, off, value & 0xFFFFFFFF)

    def send_bytes(self, data: bytes) -> int:
        """Write what fits into req[]; returns bytes written."""
        cons, prod = self.get(REQ_CONS), self.get(REQ_PROD)
        n = min(len(data), 1024 - ((prod - cons) & 0xFFFFFFFF))
        for i in range(n):
            self.page[REQ + ((prod + i) & 1023)] = data[i]
        self.put(REQ_PROD, prod + n)
        os.eventfd_write(self.to_server, 1)
        return n

    def receive(self) -> list[Message]:
        cons, prod = self.get(RSP_CONS), self.get(RSP_PROD)
        count = (prod - cons) & 0xFFFFFFFF
        data = bytes(self.page[RSP + ((cons + i) & 1023)] for i in range(count))
        self.put(RSP_CONS, prod)
        os.eventfd_write(self.to_server, 1)
        return self.reader.feed(data)

    def signalled(self) -> bool:
        try:
            os.eventfd_read(self.from_server)
        except BlockingIOError:
            return False
        return True


@pytest.fixture
def setup() -> Iterator[tuple[Xenstore, Guest, GuestConnection]]:
    page = mmap.mmap(-1, 4096)
    to_server = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    from_server = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    guest = Guest(page, to_server, from_server)
    # Indices need not start at 0: start near the u32 wrap.
    for off in (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD):
        guest.put(off, 0xFFFFFF00)

    view = memoryview(page)

    def hook(domid: int, mfn: int, evtchn: int) -> DomainChannel:
        return DomainChannel(view, lambda: os.eventfd_write(from_server, 1), to_server)

    xs = Xenstore(connect_domain=hook)
    xs.handle(xs.domains[0].connection, Message(T.INTRODUCE, 1, 0, b"5\x00123\x009\0"))
    conn = xs.domains[5].connection
    assert isinstance(conn, GuestConnection)
    yield xs, guest, conn
    xs.release(5)
    view.release()
    os.close(to_server)
    os.close(from_server)
    page.close()


def serve(conn: GuestConnection) -> None:
    """What the event loop does when the guest's eventfd is readable."""
    while conn.on_readable():
        pass
    conn.flush()


def test_server_features_advertise_reconnection(setup: tuple[Xenstore, Guest,
                                                             GuestConnection]) -> None:
    _, guest, _ = setup
    assert guest.get(SERVER_FEATURES) & 1


def test_requests_and_replies_across_the_index_wrap(setup: tuple[Xenstore, Guest,
                                                                 GuestConnection]) -> None:
    xs, guest, conn = setup
    xs.mark_clean()
    assert guest.send_bytes(encode(T.GET_DOMAIN_PATH, 7, 0, b"5\0")) == 18
    serve(conn)
    assert guest.signalled()
    [reply] = guest.receive()
    assert reply == Message(T.GET_DOMAIN_PATH, 7, 0, b"/local/domain/5\0")
    for i in range(40):  # crosses the 2^32 wrap and the ring end many times
        assert guest.send_bytes(encode(T.READ, 100 + i, 0, b"/tool\0")) == 22
        serve(conn)
        [reply] = guest.receive()
        assert (reply.type, reply.req_id) == (T.ERROR, 100 + i)
        assert reply.payload == b"EACCES\0"  # "/" is n0: the guest cannot read it
    assert guest.get(REQ_CONS) == guest.get(REQ_PROD) < 0xFFFFFF00


def test_guest_acts_as_its_domain_with_relative_paths(setup: tuple[Xenstore, Guest,
                                                                   GuestConnection]) -> None:
    xs, guest, conn = setup
    dom0 = xs.domains[0].connection
    xs.handle(dom0, Message(T.WRITE, 1, 0, b"/local/domain/5\0"))
    xs.handle(dom0, Message(T.SET_PERMS, 2, 0, b"/local/domain/5\0n5\0"))
    guest.send_bytes(encode(T.WRITE, 1, 0, b"data/x\0hello"))
    guest.send_bytes(encode(T.WATCH, 2, 0, b"data\0tok\0"))
    serve(conn)
    msgs = guest.receive()
    assert [(m.type, m.payload) for m in msgs] == [
        (T.WRITE, b"OK\0"), (T.WATCH, b"OK\0"), (T.WATCH_EVENT, b"data\0tok\0")]
    assert xs.tree.nodes["/local/domain/5/data/x"].perms[0].domid == 5


def test_large_request_split_across_notifications(setup: tuple[Xenstore, Guest,
                                                               GuestConnection]) -> None:
    xs, guest, conn = setup
    value = bytes(range(256)) * 15  # 3840 bytes: more than a ring
    data = encode(T.WRITE, 9, 0, b"/local/domain/5/big\0" + value)
    xs.handle(xs.domains[0].connection, Message(T.WRITE, 1, 0, b"/local/domain/5\0"))
    xs.handle(xs.domains[0].connection, Message(T.SET_PERMS, 2, 0, b"/local/domain/5\0n5\0"))
    while data:
        data = data[guest.send_bytes(data):]
        serve(conn)
    assert [m.payload for m in guest.receive()] == [b"ENOSPC\0"]  # over the entry size
    assert "/local/domain/5/big" not in xs.tree.nodes


def test_replies_wait_while_the_response_ring_is_full(setup: tuple[Xenstore, Guest,
                                                                   GuestConnection]) -> None:
    xs, guest, conn = setup
    dom0 = xs.domains[0].connection
    xs.handle(dom0, Message(T.WRITE, 1, 0, b"/local/domain/5/v\0" + b"v" * 700))
    xs.handle(dom0, Message(T.SET_PERMS, 2, 0, b"/local/domain/5/v\0r0\0"))
    for i in range(3):
        guest.send_bytes(encode(T.READ, i, 0, b"/local/domain/5/v\0"))
    serve(conn)
    assert conn.output_pending > 0  # 3 x 716 bytes do not fit in 1024
    got: list[Message] = []
    while len(got) < 3:
        got += guest.receive()
        serve(conn)
    assert [m.req_id for m in got] == [0, 1, 2] and all(len(m.payload) == 700 for m in got)


def test_oversized_header_ignores_the_guest_until_it_reconnects(
        setup: tuple[Xenstore, Guest, GuestConnection]) -> None:
    xs, guest, conn = setup
    guest.send_bytes(encode(T.WATCH, 1, 0, b"/w\0t\0"))
    serve(conn)
    guest.receive()
    guest.send_bytes(HEADER.pack(T.WRITE, 2, 0, 100000))
    serve(conn)
    assert conn.ignored and conn.watches == []
    guest.send_bytes(encode(T.GET_DOMAIN_PATH, 3, 0, b"5\0"))
    serve(conn)
    assert guest.receive() == []
    # Other clients are unaffected.
    other = xs.domains[0].connection
    xs.handle(other, Message(T.GET_DOMAIN_PATH, 4, 0, b"1\0"))
    assert other.take_output().endswith(b"/local/domain/1\0")
    # Reconnection: the guest sets connection = 1 and signals.
    guest.put(CONNECTION, 1)
    os.eventfd_write(guest.to_server, 1)
    serve(conn)
    assert guest.get(CONNECTION) == 0 and guest.signalled()
    assert [guest.get(o) for o in (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD)] == [0, 0, 0, 0]
    assert not conn.ignored
    guest.send_bytes(encode(T.GET_DOMAIN_PATH, 5, 0, b"5\0"))
    serve(conn)
    assert [m.req_id for m in guest.receive()] == [5]


def test_corrupt_indices_are_not_trusted(setup: tuple[Xenstore, Guest,
                                                      GuestConnection]) -> None:
    _, guest, conn = setup
    guest.put(REQ_PROD, guest.get(REQ_CONS) + 5000)
    os.eventfd_write(guest.to_server, 1)
    serve(conn)
    assert conn.ignored


def test_reconnect_drops_partial_requests_watches_and_transactions(
        setup: tuple[Xenstore, Guest, GuestConnection]) -> None:
    _, guest, conn = setup
    guest.send_bytes(encode(T.WATCH, 1, 0, b"/w\0t\0") + encode(T.TRANSACTION_START, 2, 0,
                                                                  b"\0"))
    guest.send_bytes(encode(T.READ, 3, 0, b"/x\0")[:10])  # half a header
    serve(conn)
    assert conn.watches and conn.transactions
    guest.put(CONNECTION, 1)
    os.eventfd_write(guest.to_server, 1)
    serve(conn)
    assert not conn.watches and not conn.transactions
    guest.reader = MessageReader()
    guest.send_bytes(encode(T.GET_DOMAIN_PATH, 4, 0, b"5\0"))
    serve(conn)
    assert [m.req_id for m in guest.receive()] == [4]


def test_flooding_guest_is_served_in_bounded_steps(setup: tuple[Xenstore, Guest,
                                                                GuestConnection]) -> None:
    _, guest, conn = setup
    request = encode(T.GET_DOMAIN_PATH, 1, 0, b"5\0")
    handled = 0
    for _ in range(200):
        guest.send_bytes(request * 50)
        conn.on_readable()
        conn.flush()
        handled += len(guest.receive())
    assert handled > 0 and not conn.ignored


# A process that watches two u32 words of a shared file while the test
# changes them, as a guest's vCPU on another CPU would: it counts every load
# that is below an earlier one (an index must never step back).
_WATCHER = r"""
import mmap, sys
path, first, second, flag = sys.argv[1], *map(int, sys.argv[2:5])
with open(path, "r+b") as f:
    m = mmap.mmap(f.fileno(), 0)
words = memoryview(m).cast("I")
words[flag] = 1                                  # watching
seen = [0, 0]
back = loads = 0
while words[flag] == 1:
    for k, i in ((0, first), (1, second)):
        v = words[i]
        if v < seen[k]:
            back += 1
        seen[k] = max(seen[k], v)
        loads += 1
print(back, loads)
"""


def test_indices_never_step_back_for_a_concurrent_reader(tmp_path: Path) -> None:
    """req_cons and rsp_prod change with one store each.  With struct.pack_into
    (a memset to 0, then the value) a guest reading at the wrong instant saw
    0: prod - cons above 1024, a "broken ring", a reconnection that lost the
    guest's watches (the CI flake of the xenstore guests)."""
    path = tmp_path / "page"
    path.write_bytes(bytes(4096))
    flag = 4092 // 4
    with open(path, "r+b") as f:
        page = mmap.mmap(f.fileno(), 4096)
    view = memoryview(page)
    guest = SharedWords(view, 0, 1024)  # the test's own (whole-word) guest side
    ring = XenstoreRing(view, lambda: None)
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, str(path),
                                str(REQ_CONS // 4), str(RSP_PROD // 4), str(flag)],
                               stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while guest[flag] != 1 and time.monotonic() < deadline and watcher.poll() is None:
            time.sleep(0.001)
        assert guest[flag] == 1, "the watcher did not start"
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            for _ in range(1000):
                prod = guest[REQ_PROD // 4]
                guest[REQ_PROD // 4] = prod + 1  # one request byte ...
                assert len(ring.read()) == 1  # ... consumed: req_cons = prod + 1
                assert ring.write(b"x") == 1  # one reply byte: rsp_prod + 1
                guest[RSP_CONS // 4] = guest[RSP_PROD // 4]  # taken
    finally:
        guest[flag] = 2
        out, _ = watcher.communicate(timeout=30)
        ring.release()
        guest.release()
        view.release()
        page.close()
    back, loads = map(int, out.split())
    assert loads > 0
    assert back == 0, f"{back} of {loads} loads saw an index step back"
