"""Argo from an ordinary host program: the host side appears as domain 0.

    from pyxen.argo import ANY, Socket

    with Socket(5000) as sock:                 # a ring at port 5000, any sender
        msg = sock.recv(timeout=10)            # Message(data, domid, aport, message_type)
        sock.send(b"pong", (msg.domid, msg.aport))

Design
------
In pyxen the hypervisor process is domain 0, so a host program talks Argo
through the hypervisor's control socket (control/argo_ops.py).  Each
``Socket`` has a connection of its own, and on it:

- its ring (if it has a port): a shared memory file the hypervisor creates
  and maps, holding the 64-byte ``xen_argo_ring`` header and the data.
  Messages are read straight out of this mapping, as a guest reads its
  ring: no socket traffic per message received.  After reading, the socket
  stores ``rx_ptr`` and calls ``argo_notify``, which signals any domain
  waiting for space in the ring (one notify per batch: ``recv`` takes every
  message present into a local queue at once);
- a transmit buffer, also shared memory, grown on demand: ``send`` copies
  the message into it and ``argo_send`` makes the hypervisor copy it from
  there into the destination ring (one copy on each side, whatever the size);
- an eventfd the hypervisor signals whenever domain 0's VIRQ_ARGO is raised:
  a message arrived in *some* domain 0 ring, or space freed for *some*
  domain 0 sender.  ``recv`` waits on it while its ring is empty, ``send``
  while the destination ring is full (EAGAIN: Xen queued a space
  notification); both then look again, so a wake-up meant for another
  socket costs a retry, never a lost message.

The ring's contents are checked as untrusted although the hypervisor writes
them: ``tx_ptr`` must lie in the ring on a 16-byte slot and every message
header must fit in the bytes between ``rx_ptr`` and ``tx_ptr``; anything
else raises ``CorruptRing`` rather than reading garbage or looping.  The
socket keeps its own ``rx_ptr`` and never reads it back.

A ``Socket`` is for one thread at a time.  Errors are ``OSError`` subclasses
with the errno Xen would give (``ConnectionRefusedError`` for no ring
there, ``PermissionError`` for a policy refusal, EMSGSIZE for a message the
ring can never hold ...), ``TimeoutError`` for a timeout, ``NoDaemon``
when no hypervisor runs (found as the ``pyxen`` command finds it:
``run_dir``, else ``PYXEN_RUN_DIR``, else /run/pyxen).
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import struct
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from pyxen.abi.argo import XEN_ARGO_DOMID_ANY, ArgoRingFlags
from pyxen.control.client import ControlClient, NoDaemon
from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import ControlError
from pyxen.hv.argo import ring as R
from pyxen.readiness import readable
from pyxen.shared_words import store_u32

__all__ = ["ANY", "DEFAULT_RING_LEN", "MAX_MESSAGE", "ArgoRingFlags", "CorruptRing",
           "Message", "NoDaemon", "Query", "Socket"]

ANY = XEN_ARGO_DOMID_ANY  # a ring any domain may send to
DEFAULT_RING_LEN = 64 * R.PAGE_SIZE - R.RING_HEADER  # 256 KiB of pages
MAX_MESSAGE = R.MAX_MESSAGE
_MIN_TX = 64 * 1024
_HEADER = struct.Struct("<IIHHI")  # len, source aport, source domid, pad, message type
_U32 = struct.Struct("<I")


class Message(NamedTuple):
    data: bytes
    domid: int  # the sender
    aport: int  # the sender's port
    message_type: int


class Query(NamedTuple):
    """What the hypervisor says of a ring (XEN_ARGO_OP_notify's answer)."""

    flags: ArgoRingFlags
    max_message_size: int | None  # None: there is no such ring


class CorruptRing(OSError):
    """The ring's header or a message header is impossible: the ring cannot be read."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EBADMSG, message)


def _os_error(e: ControlError) -> OSError:
    """A ControlError as the OSError subclass its errno maps to."""
    number = getattr(errno, e.code, errno.EIO)
    return OSError(number, e.message)


class Socket:
    """A domain 0 Argo endpoint: a ring at ``port`` that ``partner`` (a domid, or
    ``ANY``) may send to, of ``ring_len`` data bytes; ``port=None`` only sends."""

    def __init__(self, port: int | None, partner: int = ANY,
                 ring_len: int = DEFAULT_RING_LEN, *,
                 run_dir: str | Path | None = None) -> None:
        self.port = port
        self.partner = partner
        self.ring_len = ring_len
        paths = InstancePaths.resolve(str(run_dir) if run_dir is not None else None)
        self._client = ControlClient.connect(paths)
        self._ring: mmap.mmap | None = None
        self._tx: mmap.mmap | None = None
        self._rx = 0
        self._queue: deque[Message] = deque()
        self._events = -1
        try:
            self._events = self._call_fd("argo_events")
            if port is not None:
                fd = self._call_fd("argo_register", aport=port, partner=partner, len=ring_len)
                try:
                    self._ring = mmap.mmap(fd, R.npages(ring_len) * R.PAGE_SIZE)
                finally:
                    os.close(fd)
                self._rx = R.sanitize_rx(_U32.unpack_from(self._ring, 0)[0], ring_len)
        except BaseException:
            self.close()
            raise

    # -- plumbing ----------------------------------------------------------------

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        try:
            result = self._client.call(op, **args)
        except ControlError as e:
            raise _os_error(e) from None
        return result if isinstance(result, dict) else {}

    def _call_fd(self, op: str, **args: Any) -> int:
        try:
            _result, fds = self._client.call_fds(op, **args)
        except ControlError as e:
            raise _os_error(e) from None
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise OSError(errno.EPROTO, f"{op}: the hypervisor sent {len(fds)} descriptors")
        return fds[0]

    def fileno(self) -> int:
        """The eventfd: readable when domain 0's VIRQ_ARGO was raised (for select)."""
        return self._events

    def _wait(self, deadline: float | None) -> None:
        """Until the eventfd is signalled (then reset it), or TimeoutError."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = readable([self._events], timeout)
        if not ready:
            raise TimeoutError(errno.ETIMEDOUT, "timed out waiting for Argo")
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._events)

    @staticmethod
    def _deadline(timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    # -- sending -------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview, addr: tuple[int, int],
             message_type: int = 0, timeout: float | None = None,
             from_port: int | None = None) -> int:
        """Send ``data`` as one message to ``addr`` = (domid, aport), from this socket's
        port (or ``from_port``).  A full ring: wait until the receiver makes room
        (TimeoutError after ``timeout`` seconds).  Returns the bytes sent."""
        domid, aport = addr
        view = memoryview(data).cast("B")
        size = len(view)
        if size > MAX_MESSAGE:
            raise OSError(errno.EMSGSIZE, f"a message holds at most {MAX_MESSAGE} bytes")
        tx = self._tx_buffer(size)
        tx[:size] = view
        src = from_port if from_port is not None else (self.port or 0)
        deadline = self._deadline(timeout)
        while True:
            try:
                result = self._client.call("argo_send", src_aport=src, dst_domid=domid,
                                           dst_aport=aport, message_type=message_type,
                                           offset=0, len=size)
            except ControlError as e:
                if e.code != "EAGAIN":
                    raise _os_error(e) from None
            else:
                return int(result["len"])
            self._wait(deadline)

    def _tx_buffer(self, size: int) -> mmap.mmap:
        if self._tx is not None and len(self._tx) >= size:
            return self._tx
        want = max(_MIN_TX, 1 << max(size - 1, 1).bit_length())
        fd = self._call_fd("argo_tx_buffer", size=min(want, R.MAX_RING_LEN))
        try:
            tx = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        if self._tx is not None:
            self._tx.close()
        self._tx = tx
        return tx

    def query(self, addr: tuple[int, int], space_required: int = 0) -> Query:
        """Does the ring at ``addr`` = (domid, aport) exist for domain 0, and is there
        room for ``space_required`` bytes?  If not, domain 0 is notified once there is
        (this socket's ``fileno`` becomes readable)."""
        domid, aport = addr
        result = self._call("argo_notify", entries=[
            {"domid": domid, "aport": aport, "space_required": space_required}])
        entries = result.get("entries")
        if not isinstance(entries, list) or len(entries) != 1:
            raise OSError(errno.EPROTO, "argo_notify: a malformed answer")
        entry = entries[0]
        return Query(ArgoRingFlags(int(entry["flags"])), entry["max_message_size"])

    # -- receiving -----------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Message:
        """The next message in this socket's ring; waits for one (TimeoutError after
        ``timeout`` seconds; 0 polls)."""
        if self._ring is None:
            raise OSError(errno.ENOTCONN, "this socket has no ring (it was made with port=None)")
        deadline = self._deadline(timeout)
        while not self._queue:
            if not self._drain():
                self._wait(deadline)
        return self._queue.popleft()

    def pending(self) -> bool:
        """A message can be received without waiting."""
        return bool(self._queue) or (self._ring is not None and self._drain())

    def _drain(self) -> bool:
        """Take every message in the ring into the queue, store ``rx_ptr``, notify."""
        ring = self._ring
        assert ring is not None
        length = self.ring_len
        tx = _U32.unpack_from(ring, 4)[0]
        if tx >= length or tx % R.SLOT:
            raise CorruptRing(f"the ring's tx_ptr {tx:#x} is not a slot of a "
                              f"{length}-byte ring")
        rx = self._rx
        if rx == tx:
            return False
        batch = []
        while rx != tx:
            used = (tx - rx) % length
            at = R.RING_HEADER + rx
            mlen, aport, domid, _pad, mtype = _HEADER.unpack_from(ring, at)
            if mlen < R.MSG_HEADER or R.roundup(mlen) > used:
                raise CorruptRing(f"the message at {rx:#x} claims {mlen} bytes, but "
                                  f"{used} are in the ring")
            start = (rx + R.MSG_HEADER) % length
            size = mlen - R.MSG_HEADER
            end = start + size
            if end <= length:
                data = ring[R.RING_HEADER + start:R.RING_HEADER + end]
            else:
                data = (ring[R.RING_HEADER + start:R.RING_HEADER + length]
                        + ring[R.RING_HEADER:R.RING_HEADER + end - length])
            batch.append(Message(data, domid, aport, mtype))
            rx = (rx + R.roundup(mlen)) % length
        store_u32(memoryview(ring), 0, rx)  # one store: the hypervisor may be reading it
        self._rx = rx
        self._queue.extend(batch)
        self._call("argo_notify")
        return True

    # -- the end -------------------------------------------------------------------

    def close(self) -> None:
        """Unregister the ring and let everything go (the connection's end would too)."""
        if self._ring is not None:
            self._ring.close()
            self._ring = None
            # At once, not when the hypervisor sees the connection end: the port is
            # free for the next socket as soon as this returns.
            with contextlib.suppress(ControlError, OSError):
                self._client.call("argo_unregister", aport=self.port, partner=self.partner)
        if self._tx is not None:
            self._tx.close()
            self._tx = None
        if self._events >= 0:
            os.close(self._events)
            self._events = -1
        self._client.close()

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
