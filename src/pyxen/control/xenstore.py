"""A minimal xenstore client over xenstored's Unix socket (what libxl uses xs_* for).

Requests are answered in order on one connection, so each call is: send
one ``xsd_sockmsg``, read one reply; an ``XS_ERROR`` reply raises
``XenstoreError`` with the errno name.  ``pipelined`` (and ``apply`` for a
``WriteBatch``, ``which_introduced``) sends many requests before reading
their replies: xenstored still applies them in order, and a batch costs
about one round trip instead of one each (a domain's introduction, the
reconcile's checks of hundreds of domains).  Watch events (``watch``) may
arrive between a request and its reply: they are queued in ``events``, in
order, and ``next_event`` returns the oldest (reading the socket when none
is queued), so a caller can wait for the socket to be readable *or* the
queue to be non-empty.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path

from pyxen.abi.xs_wire import XSD_SOCKMSG as _HEADER
from pyxen.abi.xs_wire import XsdSockmsgType as T

# Requests sent before their replies are read (pipelined): a batch is
# ~2.5 KiB, far below a Unix socket's buffer, so sending never waits on
# xenstored reading while it waits on us reading its replies.
PIPELINE_DEPTH = 128
# Reads of a long child list (DIRECTORY_PART) started again because the node
# changed between two parts, before giving up.
DIRECTORY_PART_TRIES = 100


# One request: type, payload, what an error names, an error code that is not
# an error for it (rm of a missing node) or None.
Message = tuple[int, bytes, str, "str | None"]


def _write(path: str, value: str | bytes) -> Message:
    data = value.encode() if isinstance(value, str) else value
    return T.WRITE, path.encode() + b"\0" + data, path, None


def _mkdir(path: str) -> Message:
    return T.MKDIR, path.encode() + b"\0", path, None


def _rm(path: str) -> Message:
    return T.RM, path.encode() + b"\0", path, "ENOENT"


def _set_perms(path: str, perms: list[str]) -> Message:
    return T.SET_PERMS, path.encode() + b"\0" + b"".join(p.encode() + b"\0" for p in perms), \
        path, None


class WriteBatch:
    """Changes to send together (``XenstoreClient.apply``): xenstored applies
    them in order, as one call each would, in about one round trip."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def write(self, path: str, value: str | bytes) -> None:
        self.messages.append(_write(path, value))

    def mkdir(self, path: str) -> None:
        self.messages.append(_mkdir(path))

    def rm(self, path: str) -> None:
        self.messages.append(_rm(path))

    def set_perms(self, path: str, perms: list[str]) -> None:
        self.messages.append(_set_perms(path, perms))

    def release(self, domid: int) -> None:
        """RELEASE ``domid`` (not an error if xenstored does not know it: ENOENT)."""
        self.messages.append((T.RELEASE, f"{domid}\0".encode(), f"release {domid}", "ENOENT"))


class XenstoreError(Exception):
    def __init__(self, code: str, what: str) -> None:
        super().__init__(f"{what}: {code}")
        self.code = code


class XenstoreClient:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError:
            self.sock.close()
            raise
        self._req_id = 0
        self.events: deque[tuple[str, str]] = deque()  # (path, token) of watch events

    def _recv(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("xenstored closed the connection")
            data += chunk
        return data

    def _message(self) -> tuple[int, int, bytes] | None:
        """Read one message: (type, req_id, body), or None for a watch event (queued)."""
        rtype, req_id, _tx, length = _HEADER.unpack(self._recv(_HEADER.size))
        body = self._recv(length)
        if rtype != T.WATCH_EVENT:
            return rtype, req_id, body
        parts = body.split(b"\0")
        if len(parts) >= 2:
            self.events.append((parts[0].decode(errors="replace"),
                                parts[1].decode(errors="replace")))
        return None

    def next_event(self) -> tuple[str, str]:
        """The oldest watch event (path, token), waiting for one if none is queued."""
        while not self.events:
            self._message()
        return self.events.popleft()

    def request(self, msg_type: int, payload: bytes, what: str = "") -> bytes:
        self._req_id += 1
        self.sock.sendall(_HEADER.pack(msg_type, self._req_id, 0, len(payload)) + payload)
        while True:
            message = self._message()
            if message is None or message[1] != self._req_id:
                continue
            rtype, _, body = message
            if rtype == T.ERROR:
                raise XenstoreError(body.rstrip(b"\0").decode(errors="replace"), what)
            return body

    def read(self, path: str) -> bytes | None:
        try:
            return self.request(T.READ, path.encode() + b"\0", path)
        except XenstoreError as e:
            if e.code == "ENOENT":
                return None
            raise

    def read_text(self, path: str) -> str | None:
        value = self.read(path)
        return None if value is None else value.decode(errors="replace")

    def directory(self, path: str) -> list[str]:
        """The children of ``path`` ([] if it does not exist)."""
        return [n.decode(errors="replace") for n in self.children(path)]

    def children(self, path: str) -> list[bytes]:
        """The children of ``path`` as xenstored names them ([] if it does not exist).

        A list longer than one reply (XENSTORE_PAYLOAD_MAX: about 800 domain ids
        of four digits under /local/domain) is E2BIG for DIRECTORY; it is then
        read in parts (DIRECTORY_PART, as libxenstore does), again from the start
        if the node changes between two parts."""
        reply: bytes | XenstoreError
        try:
            reply = self.request(T.DIRECTORY, path.encode() + b"\0", path)
        except XenstoreError as e:
            reply = e
        return self._names(path, reply)

    def _names(self, path: str, reply: bytes | XenstoreError) -> list[bytes]:
        """The child names a DIRECTORY reply for ``path`` gives: none for ENOENT, and
        for E2BIG the list read again in parts."""
        if isinstance(reply, XenstoreError):
            if reply.code == "ENOENT":
                return []
            if reply.code != "E2BIG":
                raise reply
            reply = self._directory_in_parts(path)
        return [n for n in reply.split(b"\0") if n]

    def _directory_in_parts(self, path: str) -> bytes:
        for _ in range(DIRECTORY_PART_TRIES):
            listing, generation, done = b"", None, False
            while not done:
                reply = self.request(T.DIRECTORY_PART,
                                     f"{path}\0{len(listing)}\0".encode(), path)
                gen, _, part = reply.partition(b"\0")
                if generation not in (None, gen):
                    break  # changed meanwhile: read it again
                generation = gen
                done = part.endswith(b"\0\0") or part in (b"", b"\0")
                listing += part[:-1] if done and part else part
            else:
                return listing
        raise XenstoreError("EAGAIN", f"{path} kept changing while it was read in parts")

    def directories(self, paths: Sequence[str]) -> list[list[str]]:
        """``directory`` of each of ``paths``, the requests sent together."""
        replies = self.pipelined([(T.DIRECTORY, p.encode() + b"\0", p) for p in paths])
        return [[n.decode(errors="replace") for n in self._names(path, reply)]
                for path, reply in zip(paths, replies, strict=True)]

    def watch(self, path: str, token: str) -> None:
        """Watch ``path`` and below; events go to ``events`` (one fires at once)."""
        self.request(T.WATCH, f"{path}\0{token}\0".encode(), f"watch {path}")

    def unwatch(self, path: str, token: str) -> None:
        try:
            self.request(T.UNWATCH, f"{path}\0{token}\0".encode(), f"unwatch {path}")
        except XenstoreError as e:
            if e.code != "ENOENT":
                raise

    def write(self, path: str, value: str | bytes) -> None:
        self._one(_write(path, value))

    def mkdir(self, path: str) -> None:
        self._one(_mkdir(path))

    def rm(self, path: str) -> None:
        self._one(_rm(path))

    def set_perms(self, path: str, perms: list[str]) -> None:
        self._one(_set_perms(path, perms))

    def _one(self, message: Message) -> None:
        msg_type, payload, what, harmless = message
        try:
            self.request(msg_type, payload, what)
        except XenstoreError as e:
            if e.code != harmless:
                raise

    def apply(self, batch: WriteBatch) -> None:
        """Send ``batch``'s changes together and read their replies; the first
        failure (XenstoreError) is raised once every reply is in."""
        replies = self.pipelined([(t, p, w) for t, p, w, _ in batch.messages])
        for (_, _, _, harmless), reply in zip(batch.messages, replies, strict=True):
            if isinstance(reply, XenstoreError) and reply.code != harmless:
                raise reply

    def introduce(self, domid: int, mfn: int, evtchn: int) -> None:
        self.request(T.INTRODUCE, f"{domid}\0{mfn}\0{evtchn}\0".encode(), f"introduce {domid}")

    def release(self, domid: int) -> None:
        self.request(T.RELEASE, f"{domid}\0".encode(), f"release {domid}")

    def is_introduced(self, domid: int) -> bool:
        return self.request(T.IS_DOMAIN_INTRODUCED, f"{domid}\0".encode()).startswith(b"T")

    def which_introduced(self, domids: Iterable[int]) -> set[int]:
        """The domains among ``domids`` that xenstored has introduced: an
        IS_DOMAIN_INTRODUCED for each, sent together, so hundreds of domains
        cost about one round trip instead of one each."""
        wanted = list(domids)
        replies = self.pipelined([(T.IS_DOMAIN_INTRODUCED, f"{domid}\0".encode(),
                                   f"is_introduced {domid}") for domid in wanted])
        found = set()
        for domid, reply in zip(wanted, replies, strict=True):
            if isinstance(reply, XenstoreError):
                raise reply
            if reply.startswith(b"T"):
                found.add(domid)
        return found

    def pipelined(self, requests: Sequence[tuple[int, bytes, str]]
                  ) -> list[bytes | XenstoreError]:
        """Send ``requests`` (type, payload, what) together, ``PIPELINE_DEPTH`` at a
        time, and read their replies: each reply's body or its XenstoreError, in order."""
        replies: list[bytes | XenstoreError] = []
        for start in range(0, len(requests), PIPELINE_DEPTH):
            chunk = requests[start:start + PIPELINE_DEPTH]
            what: dict[int, str] = {}
            frames = []
            for msg_type, payload, name in chunk:
                self._req_id += 1
                what[self._req_id] = name
                frames.append(_HEADER.pack(msg_type, self._req_id, 0, len(payload)) + payload)
            self.sock.sendall(b"".join(frames))
            got: dict[int, bytes | XenstoreError] = {}
            while len(got) < len(what):
                message = self._message()
                if message is None or message[1] not in what:
                    continue
                rtype, req_id, body = message
                got[req_id] = (XenstoreError(body.rstrip(b"\0").decode(errors="replace"),
                                             what[req_id]) if rtype == T.ERROR else body)
            replies.extend(got[req_id] for req_id in what)
        return replies

    def close(self) -> None:
        self.sock.close()
