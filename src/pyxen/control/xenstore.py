"""A minimal xenstore client over xenstored's Unix socket (what libxl uses xs_* for).

Requests are answered in order on one connection (no watches are set on
it), so each call is: send one ``xsd_sockmsg``, read one reply; an
``XS_ERROR`` reply raises ``XenstoreError`` with the errno name.
"""

from __future__ import annotations

import socket
from pathlib import Path

from pyxen.abi.xs_wire import XSD_SOCKMSG as _HEADER
from pyxen.abi.xs_wire import XsdSockmsgType as T


class XenstoreError(Exception):
    def __init__(self, code: str, what: str) -> None:
        super().__init__(f"{what}: {code}")
        self.code = code


class XenstoreClient:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError:
            self.sock.close()
            raise
        self._req_id = 0

    def _recv(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("xenstored closed the connection")
            data += chunk
        return data

    def request(self, msg_type: int, payload: bytes, what: str = "") -> bytes:
        self._req_id += 1
        self.sock.sendall(_HEADER.pack(msg_type, self._req_id, 0, len(payload)) + payload)
        while True:
            rtype, req_id, _tx, length = _HEADER.unpack(self._recv(_HEADER.size))
            body = self._recv(length)
            if rtype == T.WATCH_EVENT or req_id != self._req_id:
                continue
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
