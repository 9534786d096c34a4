"""A minimal xenstore client over xenstored's Unix socket (what libxl uses xs_* for).

Requests are answered in order on one connection, so each call is: send
one ``xsd_sockmsg``, read one reply; an ``XS_ERROR`` reply raises
``XenstoreError`` with the errno name.  Watch events (``watch``) may
arrive between a request and its reply: they are queued in ``events``, in
order, and ``next_event`` returns the oldest (reading the socket when none
is queued), so a caller can wait for the socket to be readable *or* the
queue to be non-empty.
"""

from __future__ import annotations

import socket
from collections import deque
from pathlib import Path

from pyxen.abi.xs_wire import XSD_SOCKMSG as _HEADER
from pyxen.abi.xs_wire import XsdSockmsgType as T


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
        try:
            names = self.request(T.DIRECTORY, path.encode() + b"\0", path)
        except XenstoreError as e:
            if e.code == "ENOENT":
                return []
            raise
        return [n.decode(errors="replace") for n in names.split(b"\0") if n]

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
        data = value.encode() if isinstance(value, str) else value
        self.request(T.WRITE, path.encode() + b"\0" + data, path)

    def mkdir(self, path: str) -> None:
        self.request(T.MKDIR, path.encode() + b"\0", path)

    def rm(self, path: str) -> None:
        try:
            self.request(T.RM, path.encode() + b"\0", path)
        except XenstoreError as e:
            if e.code != "ENOENT":
                raise

    def set_perms(self, path: str, perms: list[str]) -> None:
        self.request(T.SET_PERMS, path.encode() + b"\0" + b"".join(
            p.encode() + b"\0" for p in perms), path)

    def introduce(self, domid: int, mfn: int, evtchn: int) -> None:
        self.request(T.INTRODUCE, f"{domid}\0{mfn}\0{evtchn}\0".encode(), f"introduce {domid}")

    def release(self, domid: int) -> None:
        self.request(T.RELEASE, f"{domid}\0".encode(), f"release {domid}")

    def is_introduced(self, domid: int) -> bool:
        return self.request(T.IS_DOMAIN_INTRODUCED, f"{domid}\0".encode()).startswith(b"T")

    def close(self) -> None:
        self.sock.close()
