"""The client side of the control socket, used by every ``pyxen`` command and service.

``ControlClient.connect()`` talks to the instance the environment names
(control/paths.py); in a service process the daemon started, it uses the
connection the process inherited instead (``PYXEN_CONTROL_FD``: see
control/server.py, "Peers and roles").  ``map_grant``/``map_foreign``
map one guest page (the file the hypervisor sends holds that page alone)
and return a ``MappedPage`` to unmap it with.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import socket
import threading

from pyxen.control.paths import InstancePaths, as_path
from pyxen.control.protocol import MAX_REPLY, PROTOCOL_VERSION, ControlError, receive, send

TYPE_CHECKING = False  # typing.TYPE_CHECKING without typing's import (control/paths.py)
if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType
    from typing import Any

CONTROL_FD_ENV = "PYXEN_CONTROL_FD"


class NoDaemon(Exception):
    """No hypervisor answers at the control socket."""


def _take_inherited_fd() -> int | None:
    """The service connection this process inherited, once: the variable is taken
    out of the environment, so a second connect (or a child) uses control.sock."""
    value = os.environ.pop(CONTROL_FD_ENV, None)
    return int(value) if value is not None and value.isdigit() else None


class ControlClient:
    def __init__(self, path: str | os.PathLike[str], sock: socket.socket | None = None
                 ) -> None:
        # control.sock (a service talks through ``sock`` instead)
        self.path_name = os.fspath(path)
        if sock is not None:
            self._sock = sock
        else:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._sock.connect(self.path_name)
            except OSError as e:
                self._sock.close()
                raise NoDaemon(f"no pyxen hypervisor is running at {path} ({e.strerror}); "
                               "start one with: pyxen hypervisor --daemon") from None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # one request and its reply at a time

    @classmethod
    def connect(cls, paths: InstancePaths | None = None) -> ControlClient:
        """A connection to the hypervisor: the inherited one in a service, else control.sock."""
        path = (paths or InstancePaths.resolve()).control_socket_name
        fd = _take_inherited_fd()
        if fd is None:
            return cls(path)
        try:
            sock = socket.socket(fileno=fd)
        except OSError as e:
            raise NoDaemon(f"{CONTROL_FD_ENV}={fd} is not a connection: {e}") from None
        return cls(path, sock)

    @property
    def path(self) -> Path:
        return as_path(self.path_name)

    def call(self, op: str, **args: Any) -> Any:
        """Run one operation; its result, or ControlError with the errno name."""
        result, fds = self.call_fds(op, **args)
        for fd in fds:
            os.close(fd)
        return result

    def call_fds(self, op: str, *, send_fds: list[int] | None = None, **args: Any
                 ) -> tuple[Any, list[int]]:
        """Like ``call`` for operations that take (``send_fds``, which stay open
        here) or hand out file descriptors."""
        with self._lock:
            req_id = next(self._ids)
            send(self._sock, {"v": PROTOCOL_VERSION, "id": req_id, "op": op, "args": args},
                 send_fds)
            try:
                reply, fds = receive(self._sock, limit=MAX_REPLY)
            except EOFError:
                raise ControlError("EPIPE", "the hypervisor closed the connection") from None
        if not reply.get("ok"):
            error = reply.get("error") or {}
            for fd in fds:
                os.close(fd)
            raise ControlError(str(error.get("code", "EIO")), str(error.get("message", "")))
        return reply.get("result"), fds

    def map_grant(self, domid: int, ref: int, readonly: bool = False) -> MappedPage:
        """Map the page domain ``domid`` granted to domain 0 with ``ref`` (gntdev)."""
        return self._map("grant", domid, readonly, ref=ref)

    def map_foreign(self, domid: int, gfn: int, readonly: bool = False) -> MappedPage:
        """Map frame ``gfn`` of domain ``domid`` (privcmd's foreign mapping)."""
        return self._map("foreign", domid, readonly, gfn=gfn)

    def _map(self, kind: str, domid: int, readonly: bool, **args: Any) -> MappedPage:
        result, fds = self.call_fds(f"{kind}_map", domid=domid, readonly=readonly, **args)
        try:
            prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
            page = mmap.mmap(fds[0], mmap.PAGESIZE, prot=prot)
        except (OSError, IndexError) as e:
            with contextlib.suppress(ControlError):
                self.call(f"{kind}_unmap", domid=domid, handle=result["handle"])
            raise ControlError("EIO", f"cannot map the page the hypervisor sent: {e}") from None
        finally:
            for fd in fds:
                os.close(fd)
        return MappedPage(self, kind, domid, int(result["handle"]), page)

    def copy_buffer(self, size: int) -> CopyBuffer:
        """A buffer of at least ``size`` bytes shared with the hypervisor, for grant_copy."""
        result, fds = self.call_fds("copy_buffer", size=size)
        try:
            memory = mmap.mmap(fds[0], int(result["size"]))
        except (OSError, IndexError) as e:
            with contextlib.suppress(ControlError):
                self.call("copy_buffer_free", buffer=result["buffer"])
            raise ControlError("EIO", f"cannot map the buffer the hypervisor sent: {e}") from None
        finally:
            for fd in fds:
                os.close(fd)
        return CopyBuffer(int(result["buffer"]), memory)

    def grant_copy(self, domid: int, buffer: CopyBuffer, to_guest: bool,
                   segments: list[tuple[int, int, int, int]]) -> list[int]:
        """Copy (ref, offset, length, buffer_offset) segments between domain ``domid``'s
        pages granted to domain 0 and ``buffer``; one GNTST status per segment."""
        result = self.call("grant_copy", domid=domid, buffer=buffer.ident, to_guest=to_guest,
                           segments=[list(s) for s in segments])
        return [int(status) for status in result["status"]]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class MappedPage:
    """One guest page mapped in this process (``page``: a one-page mmap)."""

    def __init__(self, client: ControlClient, kind: str, domid: int, handle: int,
                 page: mmap.mmap) -> None:
        self.client = client
        self.kind = kind
        self.domid = domid
        self.handle = handle
        self.page = page

    def unmap(self) -> None:
        """Unmap it here, then give it back (release every memoryview of ``page`` first).

        After this the hypervisor moves the page back into the guest's memory,
        so a mapping kept elsewhere no longer reaches it.  Idempotent; a
        connection that closes gives back every page it still holds."""
        if self.page.closed:
            return
        self.page.close()
        with contextlib.suppress(ControlError, OSError):
            self.client.call(f"{self.kind}_unmap", domid=self.domid, handle=self.handle)


class CopyBuffer:
    """A grant_copy buffer: ``memory`` is this process's mapping of it."""

    __slots__ = ("ident", "memory")

    def __init__(self, ident: int, memory: mmap.mmap) -> None:
        self.ident = ident
        self.memory = memory
