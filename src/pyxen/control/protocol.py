"""The control protocol: versioned, length-prefixed JSON over a Unix stream socket.

A message is a 4-byte big-endian length and that many bytes of UTF-8 JSON,
which must be an object.  Requests are ``{"v": 1, "id": N, "op": NAME,
"args": {...}}``; replies ``{"v": 1, "id": N, "ok": true, "result": ...}``
or ``{"v": 1, "id": N, "ok": false, "error": {"code": ERRNO_NAME,
"message": TEXT}}``.  File descriptors a reply hands out (a guest's memfd,
an eventfd) travel with it as SCM_RIGHTS ancillary data.

Validation: a frame longer than ``MAX_MESSAGE`` or that is not a JSON object
ends the connection (the stream can no longer be trusted); a well-framed
request with a bad version, op or argument gets an error reply.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from typing import Any

PROTOCOL_VERSION = 1
MAX_MESSAGE = 1 << 20
MAX_FDS = 16
_LEN = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer broke the framing; the connection must be closed."""


class ControlError(Exception):
    """An operation failed: ``code`` is an errno name (ESRCH, EINVAL, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    return _LEN.pack(len(data)) + data


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = encode(message)
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        if sent < len(data):
            sock.sendall(data[sent:])
    else:
        sock.sendall(data)


def _recv_exact(sock: socket.socket, size: int, fds: list[int]) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk, got, _flags, _addr = socket.recv_fds(sock, size - len(buf), MAX_FDS)
        fds.extend(got)
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One message and the file descriptors that came with it; EOFError at the end."""
    fds: list[int] = []
    try:
        (size,) = _LEN.unpack(_recv_exact(sock, _LEN.size, fds))
        if size > MAX_MESSAGE:
            raise ProtocolError(f"frame of {size} bytes exceeds {MAX_MESSAGE}")
        data = _recv_exact(sock, size, fds)
        try:
            message = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ProtocolError(f"frame is not JSON: {e}") from None
        if not isinstance(message, dict):
            raise ProtocolError("frame is not a JSON object")
        return message, fds
    except BaseException:
        for fd in fds:
            _close(fd)
        raise


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
