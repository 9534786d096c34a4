"""The event loop: one thread, one ``selectors`` selector.

It listens on the Unix socket, serves every socket client (each one is
domain 0, privileged, as on a Xen dom0) and every guest ring whose event fd
the core registered, and handles SIGTERM/SIGINT through a wake-up socket.

One loop iteration:

1. wait for readiness (no timeout unless a guest still has requests
   queued in its ring beyond its per-call budget);
2. read what is ready and handle complete requests; replies and watch
   events are only *queued*;
3. if the tree or the domain table changed and ``--state`` was given, save
   the changes (one line appended to the state journal, or a compaction:
   :mod:`.persistence`);
4. send the queued output: so a reply is never sent before the change it
   acknowledges is on disk.

Hostile clients: partial reads and writes are normal (sockets are
non-blocking, output waits in the connection's queue); a socket client
that breaks the framing (payload length over 4096, i.e. garbage) is
disconnected; a client that does not read its replies stops being read
once ``OUTPUT_HIGH_WATER`` bytes wait.  No exception escapes the loop: a
failure while serving one connection drops that connection only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
from types import FrameType

from .connection import Connection
from .core import Xenstore
from .errors import ProtocolError
from .guest import GuestConnection
from .permissions import DOM0
from .persistence import StateJournal
from .wire import MessageReader

log = logging.getLogger("pyxen.xenstored")

RECV_SIZE = 64 * 1024
#: Bytes offered to a socket per send() call.
SEND_CHUNK = 64 * 1024


class SocketConnection(Connection):
    """A client on the Unix socket (domain 0)."""

    def __init__(self, sock: socket.socket, number: int) -> None:
        super().__init__(DOM0, f"socket client {number}")
        self.sock = sock
        self.reader = MessageReader()

    def flush(self) -> None:
        """Send what the socket takes now, a bounded chunk at a time."""
        out = self.output
        while not self.closed and out.bytes:
            try:
                sent = self.sock.send(out.peek(SEND_CHUNK))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.info("%s: send failed: %s", self.label, err)
                self.closed = True
                return
            out.consume(sent)
            if sent < SEND_CHUNK:
                return  # the socket buffer is full


class Server:
    """Serves a :class:`Xenstore` on a Unix socket until SIGTERM/SIGINT."""

    def __init__(self, xs: Xenstore, socket_path: str, state_path: str | None = None) -> None:
        self.xs = xs
        self.socket_path = socket_path
        self.state_path = state_path
        self.journal = StateJournal(state_path) if state_path is not None else None
        self.selector = selectors.DefaultSelector()
        self.busy: set[GuestConnection] = set()
        self._sockets: dict[int, SocketConnection] = {}
        self._count = 0
        self._stop = False
        self._listener: socket.socket | None = None
        xs.fds = self
        # Domains restored from --state were attached before this loop
        # existed (xs.fds was None then): serve their rings too.
        for conn in xs.connections:
            if isinstance(conn, GuestConnection) and not conn.closed:
                self.add_reader(conn.fd, conn)

    # -- FdRegistry for the core -------------------------------------------------
    def add_reader(self, fd: int, guest: GuestConnection) -> None:
        self.selector.register(fd, selectors.EVENT_READ, guest)
        self.busy.add(guest)  # serve anything already in the ring

    def remove_reader(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            key = self.selector.unregister(fd)
            if isinstance(key.data, GuestConnection):
                self.busy.discard(key.data)

    # -- setup and teardown --------------------------------------------------------
    def _listen(self) -> socket.socket:
        """Bind under a temporary name and rename: the socket file appears
        only once connections are accepted."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        tmp = f"{self.socket_path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(tmp)
        os.chmod(tmp, 0o600)
        listener.listen(128)
        listener.setblocking(False)
        os.rename(tmp, self.socket_path)
        return listener

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("signal %d: exiting", signum)
        self._stop = True

    def run(self) -> int:
        """Serve until a signal asks to stop; returns the exit status."""
        self._listener = self._listen()
        self.selector.register(self._listener, selectors.EVENT_READ, "listener")
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self.selector.register(wake_r, selectors.EVENT_READ, "wakeup")
        old_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        log.info("listening on %s", self.socket_path)
        try:
            self._save()
            while not self._stop:
                self.step(0 if self.busy else None)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            signal.set_wakeup_fd(old_fd)
            self._shutdown()
            wake_r.close()
            wake_w.close()
        return 0

    def _shutdown(self) -> None:
        self._save()
        for conn in list(self._sockets.values()):
            conn.flush()
            self._drop_socket(conn)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self.selector.close()
        log.info("stopped")

    # -- the loop --------------------------------------------------------------------
    def step(self, timeout: float | None) -> None:
        """One loop iteration (see the module docstring)."""
        for key, mask in self.selector.select(timeout):
            try:
                self._dispatch(key, mask)
            except Exception:
                log.exception("while serving %r", key.data)
                if isinstance(key.data, SocketConnection):
                    self._drop_socket(key.data)
        for guest in list(self.busy):
            try:
                if not guest.service():
                    self.busy.discard(guest)
            except Exception:
                log.exception("while serving %s", guest.label)
                self.busy.discard(guest)
        self._save()
        self._flush_all()

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        data = key.data
        if data == "listener":
            self._accept()
        elif data == "wakeup":
            with contextlib.suppress(OSError):
                key.fileobj.recv(4096)  # type: ignore[union-attr]
        elif isinstance(data, SocketConnection):
            if mask & selectors.EVENT_READ:
                self._read_socket(data)
            if mask & selectors.EVENT_WRITE and not data.closed:
                data.flush()
        elif isinstance(data, GuestConnection) and data.on_readable():
            self.busy.add(data)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("accept: %s", err)
                return
            sock.setblocking(False)
            self._count += 1
            conn = SocketConnection(sock, self._count)
            self._sockets[sock.fileno()] = conn
            self.xs.add_connection(conn)
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _read_socket(self, conn: SocketConnection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            log.info("%s: %s", conn.label, err)
            self._drop_socket(conn)
            return
        if not data:
            self._drop_socket(conn)
            return
        try:
            messages = conn.reader.feed(data)
        except ProtocolError as err:
            log.warning("%s: dropped: %s", conn.label, err)
            self._drop_socket(conn)
            return
        for msg in messages:
            self.xs.handle(conn, msg)

    def _drop_socket(self, conn: SocketConnection) -> None:
        self.xs.remove_connection(conn)
        fd = conn.sock.fileno()
        if fd >= 0:
            self._sockets.pop(fd, None)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn.sock)
        conn.sock.close()

    def _save(self) -> None:
        if self.journal is None or not self.xs.dirty:
            return
        try:
            self.journal.save(self.xs)
        except OSError as err:
            # Keep serving; the next change tries again.
            log.error("cannot save the state to %s: %s", self.state_path, err)
            return
        self.xs.mark_clean()

    def _flush_all(self) -> None:
        # Only the connections that queued output: with a thousand guests,
        # looking at every one on every step made each request O(guests).
        pending = self.xs.pending_output
        for conn in list(pending):
            if conn.output_pending:
                conn.flush()
            if not conn.output_pending or conn.closed:
                pending.discard(conn)  # a full ring keeps it here: retried next step
        for conn in list(self._sockets.values()):
            if conn.closed:
                self._drop_socket(conn)
                continue
            events = selectors.EVENT_READ if conn.wants_input else 0
            if conn.output_pending:
                events |= selectors.EVENT_WRITE
            if events == 0:
                events = selectors.EVENT_READ
            key = self.selector.get_key(conn.sock)
            if key.events != events:
                self.selector.modify(conn.sock, events, conn)
