"""The control protocol: versioned, length-prefixed JSON over a Unix stream socket.

A message is a 4-byte big-endian length and that many bytes of UTF-8 JSON,
which must be an object.  Requests are ``{"v": 1, "id": N, "op": NAME,
"args": {...}}``; replies ``{"v": 1, "id": N, "ok": true, "result": ...}``
or ``{"v": 1, "id": N, "ok": false, "error": {"code": ERRNO_NAME,
"message": TEXT}}``.  File descriptors a reply hands out (a guest's memfd,
an eventfd) travel with it as SCM_RIGHTS ancillary data.

Validation: a request frame longer than ``MAX_MESSAGE`` (a reply: longer than
``MAX_REPLY``, as a listing of thousands of domains is well over a MiB) or
that is not a JSON object ends the connection (the stream can no longer be trusted); a well-framed
request with a bad version, op or argument gets an error reply, and so does
valid JSON that is not a usable request: nested deeper than ``MAX_DEPTH``
(requests are a few levels deep; Python's decoder recurses once per level,
so without the limit 100,000 nested lists would end in RecursionError) or
with an integer too long for Python to convert (over 4,300 digits).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct

TYPE_CHECKING = False  # typing.TYPE_CHECKING without typing's import (control/paths.py)
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 1
MAX_MESSAGE = 1 << 20  # a request (what a client sends)
MAX_REPLY = 64 << 20  # a reply (what the daemon sends): ~2,300 domains' `list` is 1 MiB
MAX_FDS = 16
MAX_DEPTH = 32  # arrays and objects inside each other, the message itself being 1
_LEN = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer broke the framing; the connection must be closed."""


class RequestError(Exception):
    """A well-framed message that is no request: answer with an error, keep the stream."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ControlError(Exception):
    """An operation failed: ``code`` is an errno name (ESRCH, EINVAL, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(message: dict[str, Any], limit: int = MAX_MESSAGE) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > limit:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {limit}")
    return _LEN.pack(len(data)) + data


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None,
         limit: int = MAX_MESSAGE) -> None:
    data = encode(message, limit)
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


def receive(sock: socket.socket, limit: int = MAX_MESSAGE) -> tuple[dict[str, Any], list[int]]:
    """One message and the file descriptors that came with it; EOFError at the end."""
    fds: list[int] = []
    try:
        (size,) = _LEN.unpack(_recv_exact(sock, _LEN.size, fds))
        if size > limit:
            raise ProtocolError(f"frame of {size} bytes exceeds {limit}")
        return decode(_recv_exact(sock, size, fds)), fds
    except BaseException:
        for fd in fds:
            _close(fd)
        raise


def decode(data: bytes) -> dict[str, Any]:
    """One frame's JSON object.  ProtocolError if it is not one (the stream is
    broken); RequestError for JSON that cannot be a request (see the module docstring)."""
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"frame is not JSON: {e}") from None
    except RecursionError:
        raise RequestError(f"message nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # an integer literal beyond sys.get_int_max_str_digits()
        raise RequestError(f"message has a value Python cannot read: {e}") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    if _depth(message) > MAX_DEPTH:
        raise RequestError(f"message nested deeper than {MAX_DEPTH} levels")
    return message


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (iteratively: no recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
