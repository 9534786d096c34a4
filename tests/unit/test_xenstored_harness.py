"""A tiny xenstore client driving :class:`Xenstore` in-process, for the
``test_xenstored_*`` unit tests (no sockets, no processes), and tests of
the reply framing every request shares."""

from __future__ import annotations

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.connection import Connection
from pyxen.services.xenstored.core import Xenstore
from pyxen.services.xenstored.permissions import Caller
from pyxen.services.xenstored.wire import Message, MessageReader, encode


class XsError(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class Client:
    """One connection to ``xs``; ``domid`` 0 is privileged (a socket client)."""

    def __init__(self, xs: Xenstore, domid: int = 0) -> None:
        self.xs = xs
        self.conn = xs.add_connection(Connection(Caller(domid, domid == 0), f"test {domid}"))
        self.reader = MessageReader()
        self.events: list[tuple[str, str]] = []
        self._req_id = 0

    def raw(self, msg_type: int, payload: bytes, tx_id: int = 0) -> list[Message]:
        """Send a request; every message queued for this client (the reply and
        any events) in order."""
        self._req_id += 1
        self.xs.handle(self.conn, Message(msg_type, self._req_id, tx_id, payload))
        return self.reader.feed(self.conn.take_output())

    def request(self, msg_type: int, payload: bytes, tx_id: int = 0) -> bytes:
        """The reply payload; events are collected into ``self.events``;
        an error reply raises XsError."""
        reply: Message | None = None
        for msg in self.raw(msg_type, payload, tx_id):
            if msg.type == T.WATCH_EVENT:
                path, token, _ = msg.payload.split(b"\0")
                self.events.append((path.decode(), token.decode()))
            else:
                assert reply is None, "two replies to one request"
                reply = msg
        assert reply is not None, "no reply"
        assert reply.req_id == self._req_id and reply.tx_id == tx_id
        if reply.type == T.ERROR:
            assert reply.payload.endswith(b"\0")
            raise XsError(reply.payload[:-1].decode())
        assert reply.type == msg_type
        return reply.payload

    def poll_events(self) -> list[tuple[str, str]]:
        for msg in self.reader.feed(self.conn.take_output()):
            assert msg.type == T.WATCH_EVENT
            path, token, _ = msg.payload.split(b"\0")
            self.events.append((path.decode(), token.decode()))
        out, self.events = self.events, []
        return out

    # Convenience wrappers, named after the libxenstore calls.
    def write(self, path: str, value: bytes | str, tx: int = 0) -> None:
        v = value.encode() if isinstance(value, str) else value
        assert self.request(T.WRITE, path.encode() + b"\0" + v, tx) == b"OK\0"

    def read(self, path: str, tx: int = 0) -> bytes:
        return self.request(T.READ, path.encode() + b"\0", tx)

    def mkdir(self, path: str, tx: int = 0) -> None:
        assert self.request(T.MKDIR, path.encode() + b"\0", tx) == b"OK\0"

    def rm(self, path: str, tx: int = 0) -> None:
        assert self.request(T.RM, path.encode() + b"\0", tx) == b"OK\0"

    def directory(self, path: str, tx: int = 0) -> list[str]:
        return [c.decode() for c in self.request(T.DIRECTORY, path.encode() + b"\0", tx)
                .split(b"\0")[:-1]]

    def get_perms(self, path: str) -> list[str]:
        return [p.decode() for p in self.request(T.GET_PERMS, path.encode() + b"\0")
                .split(b"\0")[:-1]]

    def set_perms(self, path: str, *perms: str) -> None:
        payload = path.encode() + b"\0" + b"".join(p.encode() + b"\0" for p in perms)
        assert self.request(T.SET_PERMS, payload) == b"OK\0"

    def watch(self, path: str, token: str) -> None:
        assert self.request(T.WATCH, f"{path}\0{token}\0".encode()) == b"OK\0"

    def unwatch(self, path: str, token: str) -> None:
        assert self.request(T.UNWATCH, f"{path}\0{token}\0".encode()) == b"OK\0"

    def start(self) -> int:
        return int(self.request(T.TRANSACTION_START, b"\0")[:-1])

    def end(self, tx: int, commit: bool = True) -> None:
        assert self.request(T.TRANSACTION_END, b"T\0" if commit else b"F\0", tx) == b"OK\0"


def test_reply_echoes_type_req_id_and_tx_id() -> None:
    xs = Xenstore()
    c = Client(xs)
    tx = c.start()
    [reply] = c.raw(T.READ, b"/tool\0", tx)
    assert (reply.type, reply.req_id, reply.tx_id, reply.payload) == (T.READ, 2, tx, b"")


def test_error_reply_is_the_errno_name_and_a_nul() -> None:
    xs = Xenstore()
    c = Client(xs)
    [reply] = c.raw(T.READ, b"/missing\0", 0)
    assert reply.type == T.ERROR and reply.payload == b"ENOENT\0"
    assert encode(T.ERROR, reply.req_id, 0, b"ENOENT\0") == reply.encode()
