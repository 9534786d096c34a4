"""The client side of the control socket, used by every ``pyxen`` command."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import PROTOCOL_VERSION, ControlError, receive, send


class NoDaemon(Exception):
    """No hypervisor answers at the control socket."""


class ControlClient:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(str(path))
        except OSError as e:
            self._sock.close()
            raise NoDaemon(f"no pyxen hypervisor is running at {path} ({e.strerror}); "
                           "start one with: pyxen hypervisor --daemon") from None
        self._ids = itertools.count(1)

    @classmethod
    def connect(cls, paths: InstancePaths | None = None) -> ControlClient:
        return cls((paths or InstancePaths.resolve()).control_socket)

    def call(self, op: str, **args: Any) -> Any:
        """Run one operation; its result, or ControlError with the errno name."""
        result, fds = self.call_fds(op, **args)
        for fd in fds:
            os.close(fd)
        return result

    def call_fds(self, op: str, **args: Any) -> tuple[Any, list[int]]:
        """Like ``call`` for operations that hand out file descriptors."""
        req_id = next(self._ids)
        send(self._sock, {"v": PROTOCOL_VERSION, "id": req_id, "op": op, "args": args})
        try:
            reply, fds = receive(self._sock)
        except EOFError:
            raise ControlError("EPIPE", "the hypervisor closed the connection") from None
        if not reply.get("ok"):
            error = reply.get("error") or {}
            for fd in fds:
                os.close(fd)
            raise ControlError(str(error.get("code", "EIO")), str(error.get("message", "")))
        return reply.get("result"), fds

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
