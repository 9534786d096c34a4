"""qcow2 (and other qemu formats) for blkback: qemu-nbd on a private socket.

Why qemu-nbd: it is the reference implementation of qcow2, so backing
files, compressed clusters, internal snapshots, refcounts and crash-safe
metadata updates all behave exactly as in qemu, with real flush and trim
semantics, and pyxen needs neither a kernel nbd device (``/dev/nbdN``, root,
the nbd module) nor FUSE.  A pure-Python qcow2 writer would be a large,
risky reimplementation of that metadata logic, and the qcow2 packages on
PyPI are read-only.  Debian ships qemu-nbd in ``qemu-utils``.

Pieces:

* :class:`NbdClient` speaks the NBD protocol (the fixed newstyle
  handshake, ``NBD_OPT_GO``, simple replies only: structured replies are
  never negotiated) over a connected stream socket.  Requests are strictly
  one at a time: send one, read its whole reply, then the next (a lock
  keeps that true across threads), so the reply's handle must be the one
  just sent.  Every reply is validated (magic, handle, error); an error
  reply becomes ``OSError`` with the matching errno and leaves the
  connection usable.  Anything else (a bad magic or handle, a short read,
  the server gone, no reply within ``timeout`` seconds) is
  :class:`NbdError` or another ``OSError`` and *breaks* the connection: the
  socket is closed and every later request fails at once, because the
  stream's position (and whether the lost request was carried out) is
  unknown.  Reads and writes longer than the server's maximum payload are
  split; trims and write-zeroes are split at 1 GiB (the length field is
  32 bits).  Commands the export's transmission flags do not allow (a
  write to a read-only export, flush without NBD_FLAG_SEND_FLUSH, ...) are
  refused locally, never sent.
* :class:`QemuNbd` is one qemu-nbd process serving one image on a Unix
  socket in a private (0700) temporary directory.  It dies with its
  parent (``PR_SET_PDEATHSIG``: SIGTERM, on which qemu-nbd flushes and
  closes the image), runs in its own session (a terminal's Ctrl-C reaches
  pyxen, not it), and is stopped by :meth:`QemuNbd.stop` (SIGTERM, wait;
  SIGKILL only if it does not exit).  Its stderr goes to a file in the
  private directory and is quoted in errors.
* :class:`NbdImage` is an :class:`~pyxen.services.blkback.requests.Image`
  over a client, owning the server process if it started one;
  :func:`open_nbd_image` starts qemu-nbd, waits for its socket (polling
  with a deadline, noticing an early exit), connects and returns one.

qemu-nbd's flags (:func:`qemu_nbd_argv`) and why:

* ``--socket=DIR/nbd.sock``: a Unix socket only pyxen's user can reach
  (no TCP port).
* ``--format=FMT``: never probe the format; probing would let a guest that
  writes a qcow2 header into a raw image change how it is read.
* ``--persistent``: the server's lifetime is pyxen's decision alone; it does
  not exit (closing the image) when a connection ends.
* ``--shared=1``: one client at a time; nobody else can attach while pyxen
  is connected.
* ``--cache=writeback`` (default; ``none`` selectable): acknowledged writes
  may sit in the host page cache and qcow2's metadata caches, exactly like a
  raw DiskImage's ``pwrite``; qemu advertises NBD_FLAG_SEND_FLUSH and an
  NBD flush writes qcow2's caches back and ``fdatasync``\\s the image (and
  a FUA write does the same for its data), so every acknowledged flush is
  durable.  ``unsafe`` (flushes ignored) is never used; ``writethrough``
  would sync every write for no gain, since blkfront sends flushes.
  ``none`` (O_DIRECT) avoids double caching but fails on file systems
  without O_DIRECT (tmpfs).
* ``--aio=threads``: the portable AIO backend (``native`` needs O_DIRECT,
  ``io_uring`` may be unavailable or filtered in containers).
* ``--discard=unmap``: trims and zero-writes deallocate qcow2 clusters
  (and punch holes in the file) instead of being ignored.
* ``--read-only`` for a read-only disk: qemu opens the file read-only and
  advertises NBD_FLAG_READ_ONLY.
* The image path is made absolute, so it starts with ``/`` and qemu never
  reads a prefix of it as a protocol (``nbd:``, ``json:``, ...).

qemu also takes its usual OFD locks on the image (and shared locks on
backing files), so a second writer, be it pyxen or qemu, is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Final, Literal

# --- the NBD protocol (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md)

NBDMAGIC: Final = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT: Final = 0x49484156454F5054  # "IHAVEOPT"
OPT_REPLY_MAGIC: Final = 0x0003E889045565A9
REQUEST_MAGIC: Final = 0x25609513
SIMPLE_REPLY_MAGIC: Final = 0x67446698
STRUCTURED_REPLY_MAGIC: Final = 0x668E33EF

# Handshake flags (server) and client flags.
FLAG_FIXED_NEWSTYLE: Final = 1 << 0
FLAG_NO_ZEROES: Final = 1 << 1
FLAG_C_FIXED_NEWSTYLE: Final = 1 << 0
FLAG_C_NO_ZEROES: Final = 1 << 1

# Options, option replies, info types.
OPT_EXPORT_NAME: Final = 1
OPT_ABORT: Final = 2
OPT_GO: Final = 7
REP_ACK: Final = 1
REP_INFO: Final = 3
REP_ERR: Final = 1 << 31
REP_ERRORS: Final = {
    REP_ERR | 1: "unsupported option",
    REP_ERR | 2: "forbidden by the server's policy",
    REP_ERR | 3: "invalid option",
    REP_ERR | 4: "not supported on the server's platform",
    REP_ERR | 5: "TLS required",
    REP_ERR | 6: "no such export",
    REP_ERR | 7: "the server is shutting down",
    REP_ERR | 8: "block size negotiation required",
    REP_ERR | 9: "request too big",
}
INFO_EXPORT: Final = 0
INFO_BLOCK_SIZE: Final = 3

# Transmission flags.
FLAG_HAS_FLAGS: Final = 1 << 0
FLAG_READ_ONLY: Final = 1 << 1
FLAG_SEND_FLUSH: Final = 1 << 2
FLAG_SEND_FUA: Final = 1 << 3
FLAG_ROTATIONAL: Final = 1 << 4
FLAG_SEND_TRIM: Final = 1 << 5
FLAG_SEND_WRITE_ZEROES: Final = 1 << 6

# Commands and command flags.
CMD_READ: Final = 0
CMD_WRITE: Final = 1
CMD_DISC: Final = 2
CMD_FLUSH: Final = 3
CMD_TRIM: Final = 4
CMD_WRITE_ZEROES: Final = 6
CMD_FLAG_FUA: Final = 1 << 0
CMD_FLAG_NO_HOLE: Final = 1 << 1
_CMD_NAMES: Final = {CMD_READ: "read", CMD_WRITE: "write", CMD_DISC: "disconnect",
                     CMD_FLUSH: "flush", CMD_TRIM: "trim", CMD_WRITE_ZEROES: "write-zeroes"}

# Error values: the protocol's own numbering (Linux's), mapped to this host's.
NBD_ERRNO: Final = {1: errno.EPERM, 5: errno.EIO, 12: errno.ENOMEM, 22: errno.EINVAL,
                    28: errno.ENOSPC, 75: errno.EOVERFLOW, 95: errno.EOPNOTSUPP,
                    108: errno.ESHUTDOWN}

_HELLO = struct.Struct(">QQH")  # NBDMAGIC, IHAVEOPT, handshake flags
_OPTION = struct.Struct(">QII")  # IHAVEOPT, option, length
_OPT_REPLY = struct.Struct(">QIII")  # magic, option, reply type, length
_REQUEST = struct.Struct(">IHHQQI")  # magic, flags, type, handle, offset, length
_REPLY = struct.Struct(">IIQ")  # magic, error, handle

DEFAULT_MAX_PAYLOAD: Final = 32 << 20  # what a client may assume without block size info
_MAX_RANGE: Final = 1 << 30  # trim / write-zeroes length per request (32-bit field)
DEFAULT_TIMEOUT: Final = 60.0  # seconds a server may stay silent mid-request


class NbdError(OSError):
    """The NBD session failed: a protocol violation, a refused option, a lost server."""

    def __init__(self, message: str, err: int = errno.EPROTO) -> None:
        super().__init__(err, message)


def _recv_exact(sock: socket.socket, length: int) -> bytes:
    buf = bytearray(length)
    view = memoryview(buf)
    got = 0
    while got < length:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise NbdError("the NBD server closed the connection", errno.ECONNRESET)
        got += n
    return bytes(buf)


class NbdClient:
    """One NBD export over a connected stream socket (see the module docstring)."""

    def __init__(self, sock: socket.socket, export: str = "") -> None:
        """Run the handshake on ``sock`` (whose timeout bounds every wait) for ``export``.

        On failure the socket is closed and :class:`NbdError` (or the
        ``OSError`` of the socket) is raised.
        """
        self.export = export
        self.size = 0
        self.flags = 0
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self.broken: str | None = None  # why the connection is unusable
        self._sock: socket.socket | None = sock
        self._handle = 0
        self._lock = threading.Lock()
        try:
            self._handshake()
        except BaseException:
            self._sock = None
            sock.close()
            raise

    @classmethod
    def connect(cls, path: str | os.PathLike[str], export: str = "", *,
                timeout: float | None = DEFAULT_TIMEOUT) -> NbdClient:
        """A client of the server listening on the Unix socket ``path``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(timeout)
            sock.connect(os.fspath(path))
        except BaseException:
            sock.close()
            raise
        return cls(sock, export)

    # -- transmission flags

    @property
    def read_only(self) -> bool:
        return bool(self.flags & FLAG_READ_ONLY)

    @property
    def can_flush(self) -> bool:
        return bool(self.flags & FLAG_SEND_FLUSH)

    @property
    def can_fua(self) -> bool:
        return bool(self.flags & FLAG_SEND_FUA)

    @property
    def can_trim(self) -> bool:
        return bool(self.flags & FLAG_SEND_TRIM)

    @property
    def can_write_zeroes(self) -> bool:
        return bool(self.flags & FLAG_SEND_WRITE_ZEROES)

    # -- handshake

    def _handshake(self) -> None:
        sock = self._live()
        magic, opt_magic, hflags = _HELLO.unpack(_recv_exact(sock, _HELLO.size))
        if magic != NBDMAGIC:
            raise NbdError(f"not an NBD server (magic {magic:#x})")
        if opt_magic != IHAVEOPT:
            raise NbdError(f"not a newstyle NBD server (magic {opt_magic:#x})")
        if not hflags & FLAG_FIXED_NEWSTYLE:
            raise NbdError("the NBD server does not do fixed newstyle negotiation")
        cflags = FLAG_C_FIXED_NEWSTYLE | (FLAG_C_NO_ZEROES if hflags & FLAG_NO_ZEROES else 0)
        sock.sendall(struct.pack(">I", cflags))
        name = self.export.encode()
        # NBD_OPT_GO: the export name and no info requests (the server still
        # sends NBD_INFO_EXPORT; asking for NBD_INFO_BLOCK_SIZE would bind us to
        # its minimum block size, which the guest's 512-byte sectors may not meet).
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        sock.sendall(_OPTION.pack(IHAVEOPT, OPT_GO, len(data)) + data)
        have_export = False
        while True:
            magic, option, rtype, length = _OPT_REPLY.unpack(_recv_exact(sock, _OPT_REPLY.size))
            if magic != OPT_REPLY_MAGIC or option != OPT_GO:
                raise NbdError(f"bad option reply (magic {magic:#x}, option {option})")
            if length > 1 << 16:
                raise NbdError(f"option reply of {length} bytes")
            payload = _recv_exact(sock, length)
            if rtype & REP_ERR:
                why = REP_ERRORS.get(rtype, f"error {rtype & ~REP_ERR:#x}")
                text = payload.decode(errors="replace")
                err = errno.ENOENT if rtype == REP_ERR | 6 else errno.EPROTO
                with contextlib.suppress(OSError):
                    sock.sendall(_OPTION.pack(IHAVEOPT, OPT_ABORT, 0))
                raise NbdError(f"NBD export {self.export!r}: {why}"
                               + (f": {text}" if text else ""), err)
            if rtype == REP_ACK:
                if not have_export:
                    raise NbdError("the NBD server accepted the export without describing it")
                return
            if rtype != REP_INFO:
                raise NbdError(f"unexpected option reply type {rtype}")
            if len(payload) < 2:
                raise NbdError("an empty NBD_REP_INFO")
            (info,) = struct.unpack_from(">H", payload)
            if info == INFO_EXPORT:
                if len(payload) != 12:
                    raise NbdError(f"NBD_INFO_EXPORT of {len(payload)} bytes")
                self.size, self.flags = struct.unpack_from(">QH", payload, 2)
                if not self.flags & FLAG_HAS_FLAGS:
                    self.flags = 0  # flags not valid: assume nothing optional
                have_export = True
            elif info == INFO_BLOCK_SIZE:
                if len(payload) != 14:
                    raise NbdError(f"NBD_INFO_BLOCK_SIZE of {len(payload)} bytes")
                _minimum, _preferred, maximum = struct.unpack_from(">III", payload, 2)
                if maximum:
                    self.max_payload = min(maximum, DEFAULT_MAX_PAYLOAD)
            # Other information (name, description) is not needed.

    # -- transmission

    def _live(self) -> socket.socket:
        if self._sock is None:
            raise NbdError(f"NBD connection unusable: {self.broken or 'closed'}", errno.EIO)
        return self._sock

    def _break(self, why: str) -> None:
        self.broken = why
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _command(self, cmd: int, offset: int, length: int, flags: int = 0,
                 data: bytes | memoryview | None = None) -> bytes:
        """Send one request and read its simple reply; the read's data, else b""."""
        with self._lock:
            sock = self._live()
            handle = (self._handle + 1) & (1 << 64) - 1
            header = _REQUEST.pack(REQUEST_MAGIC, flags, cmd, handle, offset, length)
            self._handle = handle
            try:  # from here on, any failure leaves the stream's position unknown
                sock.sendall(header)
                if data is not None:
                    sock.sendall(data)
                magic, error, got = _REPLY.unpack(_recv_exact(sock, _REPLY.size))
                if magic != SIMPLE_REPLY_MAGIC:
                    raise NbdError(f"bad reply magic {magic:#x}"
                                   + (" (structured, never negotiated)"
                                      if magic == STRUCTURED_REPLY_MAGIC else ""))
                if got != handle:
                    raise NbdError(f"reply for handle {got:#x}, expected {handle:#x}")
                if error == 0 and cmd == CMD_READ:
                    return _recv_exact(sock, length)
            except TimeoutError:
                why = f"no reply from the NBD server to {_CMD_NAMES[cmd]}"
                self._break(why)
                raise NbdError(why, errno.ETIMEDOUT) from None
            except BaseException as e:  # also KeyboardInterrupt mid-reply
                self._break((e.strerror if isinstance(e, OSError) else None)
                            or str(e) or type(e).__name__)
                raise
        if error:
            err = NBD_ERRNO.get(error, errno.EINVAL)  # unknown values count as EINVAL
            raise OSError(err, f"NBD {_CMD_NAMES[cmd]} of {length} bytes at {offset}: "
                               f"{os.strerror(err)}")
        return b""

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, f"NBD {what}: the export is read-only")

    def _fua(self, fua: bool) -> int:
        return CMD_FLAG_FUA if fua and self.can_fua else 0

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``."""
        parts = []
        done = 0
        while done < length:
            n = min(length - done, self.max_payload)
            parts.append(self._command(CMD_READ, offset + done, n))
            done += n
        return b"".join(parts)

    def write(self, offset: int, data: bytes, *, fua: bool = False) -> None:
        """Write ``data``; with ``fua`` it is durable when this returns (a
        flush follows if the server has no FUA)."""
        self._check_writable("write")
        view = memoryview(data)
        for at in range(0, len(view), self.max_payload):
            chunk = view[at : at + self.max_payload]
            self._command(CMD_WRITE, offset + at, len(chunk), self._fua(fua), chunk)
        if fua and not self.can_fua:
            self.flush()

    def flush(self) -> None:
        """Make every acknowledged write durable (nothing to do for a server
        without NBD_FLAG_SEND_FLUSH, which has no volatile cache)."""
        if self.can_flush:
            self._command(CMD_FLUSH, 0, 0)

    def trim(self, offset: int, length: int, *, fua: bool = False) -> None:
        """A hint that the range is unused: the server may deallocate it, and its
        contents are undefined until rewritten (NBD_CMD_TRIM)."""
        self._check_writable("trim")
        if not self.can_trim:
            raise OSError(errno.EOPNOTSUPP, "the NBD server does not support trim")
        for at, n in _ranges(offset, length):
            self._command(CMD_TRIM, at, n, self._fua(fua))

    def write_zeroes(self, offset: int, length: int, *, may_trim: bool = True,
                     fua: bool = False) -> None:
        """Make the range read as zeroes; with ``may_trim`` the server may
        deallocate it to do so (NBD_CMD_WRITE_ZEROES without NO_HOLE)."""
        self._check_writable("write-zeroes")
        if not self.can_write_zeroes:
            raise OSError(errno.EOPNOTSUPP, "the NBD server does not support write-zeroes")
        flags = self._fua(fua) | (0 if may_trim else CMD_FLAG_NO_HOLE)
        for at, n in _ranges(offset, length):
            self._command(CMD_WRITE_ZEROES, at, n, flags)

    def close(self) -> None:
        """Disconnect (NBD_CMD_DISC, which has no reply) and close; idempotent."""
        with self._lock:
            if self._sock is None:
                return
            with contextlib.suppress(OSError):
                self._sock.sendall(_REQUEST.pack(REQUEST_MAGIC, 0, CMD_DISC,
                                                 self._handle + 1 & (1 << 64) - 1, 0, 0))
            self._break("closed")

    def __enter__(self) -> NbdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ranges(offset: int, length: int) -> list[tuple[int, int]]:
    return [(offset + at, min(_MAX_RANGE, length - at)) for at in range(0, length, _MAX_RANGE)]


# --- qemu-nbd ---------------------------------------------------------------------

QEMU_NBD: Final = "qemu-nbd"
QEMU_PACKAGE: Final = "qemu-utils"
Cache = Literal["writeback", "none"]
_PR_SET_PDEATHSIG: Final = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                   ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def qemu_nbd_argv(program: str, image: str | os.PathLike[str], fmt: str, socket_path: str, *,
                  read_only: bool = False, cache: Cache = "writeback") -> list[str]:
    """The qemu-nbd command line (the flags are explained in the module docstring)."""
    if cache not in ("writeback", "none"):
        raise ValueError(f"qemu-nbd cache mode {cache!r}: use writeback or none")
    argv = [program, f"--socket={socket_path}", f"--format={fmt}", "--persistent",
            "--shared=1", f"--cache={cache}", "--aio=threads", "--discard=unmap"]
    if read_only:
        argv.append("--read-only")
    return [*argv, "--", os.path.abspath(image)]


def _die_with(parent: int) -> Callable[[], None]:
    """The child's pre-exec step: SIGTERM when ``parent`` dies (also if it already has).

    The death signal fires when the *thread* that forked exits, so qemu-nbd
    must be started from a thread that lives as long as the image.
    """
    def preexec() -> None:
        if _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0 or os.getppid() != parent:
            os._exit(1)
    return preexec


class QemuNbd:
    """A qemu-nbd process serving one image on a private Unix socket."""

    def __init__(self, image: str | os.PathLike[str], fmt: str, *, read_only: bool = False,
                 cache: Cache = "writeback") -> None:
        """Start qemu-nbd (without waiting for it: see :meth:`connect`)."""
        program = shutil.which(QEMU_NBD)
        if program is None:
            raise FileNotFoundError(
                errno.ENOENT, f"{QEMU_NBD} is not installed (pyxen serves {fmt} images "
                f"through it): install the {QEMU_PACKAGE} package, "
                f"e.g. apt-get install {QEMU_PACKAGE}")
        self.image = os.path.abspath(image)
        self.fmt = fmt
        self.dir = tempfile.mkdtemp(prefix="pyxen-nbd-")  # mode 0700
        self.socket_path = os.path.join(self.dir, "nbd.sock")
        self.log_path = os.path.join(self.dir, "qemu-nbd.log")
        argv = qemu_nbd_argv(program, self.image, fmt, self.socket_path,
                             read_only=read_only, cache=cache)
        try:
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    close_fds=True, start_new_session=True,
                    preexec_fn=_die_with(os.getpid()))
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """What qemu-nbd wrote to stdout and stderr, stripped."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read(1 << 16).decode(errors="replace").strip()
        except OSError:
            return ""

    def _failed(self, what: str) -> OSError:
        log = " ".join(self.log().split())
        return OSError(errno.EIO, f"{QEMU_NBD} for {self.image} ({self.fmt}) {what}"
                                  + (f": {log}" if log else ""))

    def connect(self, *, timeout: float | None = DEFAULT_TIMEOUT,
                start_timeout: float = 30.0) -> NbdClient:
        """Connect once the socket accepts (within ``start_timeout`` seconds).

        Polls: the socket file appears at bind and refuses until listen;
        between attempts it waits on the process, so an early exit (a bad
        image, a lock held elsewhere) is reported at once, with qemu-nbd's
        message.  qemu-nbd listens *before* it opens the image, so a
        handshake that fails while the process exits is that exit too.
        """
        deadline = time.monotonic() + start_timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.settimeout(timeout)
                sock.connect(self.socket_path)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
            except BaseException:
                sock.close()
                raise
            else:
                try:
                    return NbdClient(sock)
                except OSError as e:
                    # qemu-nbd listens before it opens the image: a failed
                    # open resets the connection.  Say what qemu-nbd said.
                    grace = max(0.0, min(5.0, deadline - time.monotonic()))
                    try:
                        code = self.process.wait(grace)
                    except subprocess.TimeoutExpired:
                        raise e from None
                    raise self._failed(f"exited with status {code}") from e
            status = self.process.poll()
            if status is not None:
                raise self._failed(f"exited with status {status}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failed(f"did not listen within {start_timeout} s")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(min(0.02, remaining))

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (qemu-nbd flushes and closes the image), wait, SIGKILL if it
        does not exit within ``timeout``; the exit status.  Idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.process.returncode


# --- the image --------------------------------------------------------------------

class NbdImage:
    """An Image (see ``requests.Image``) on an NBD export, e.g. a qcow2 file via qemu-nbd.

    ``discard`` is write-zeroes that may deallocate (so the range reads as
    zeroes, as with a raw DiskImage, even where qcow2 could only trim whole
    clusters, and even over a backing file); a server without write-zeroes
    gets a trim followed by written zeroes.  ``close`` disconnects and stops
    the server process the image owns.
    """

    def __init__(self, client: NbdClient, server: QemuNbd | None = None, *,
                 read_only: bool = False) -> None:
        self.client = client
        self.server = server
        self.read_only = read_only or client.read_only
        self.size = client.size
        self.sectors = client.size // 512

    def read(self, offset: int, length: int) -> bytes:
        return self.client.read(offset, length)

    def write(self, offset: int, data: bytes, *, fua: bool = False) -> None:
        self._check_writable("write")
        self.client.write(offset, data, fua=fua)

    def flush(self) -> None:
        self._check_writable("flush")
        self.client.flush()

    def discard(self, offset: int, length: int) -> None:
        """Deallocate where possible; the range then reads as zeroes."""
        self._check_writable("discard")
        if length == 0:
            return
        if self.client.can_write_zeroes:
            self.client.write_zeroes(offset, length, may_trim=True)
            return
        if self.client.can_trim:
            self.client.trim(offset, length)
        zeroes = bytes(min(length, self.client.max_payload))
        for at in range(0, length, len(zeroes)):
            self.client.write(offset + at, zeroes[: min(len(zeroes), length - at)])

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, f"{what}: the disk is read-only")

    def close(self) -> None:
        """Disconnect, then stop the server (idempotent)."""
        self.client.close()
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> NbdImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_nbd_image(path: str | os.PathLike[str], fmt: str = "qcow2", *,
                   read_only: bool = False, cache: Cache = "writeback",
                   timeout: float | None = DEFAULT_TIMEOUT,
                   start_timeout: float = 30.0) -> NbdImage:
    """Serve ``path`` (format ``fmt``) with a new qemu-nbd and connect to it.

    ``timeout`` bounds each wait for the server mid-request (then the image
    fails with ETIMEDOUT); ``start_timeout`` bounds qemu-nbd's start.  If
    anything fails, the process is stopped before the error propagates.
    """
    server = QemuNbd(path, fmt, read_only=read_only, cache=cache)
    try:
        client = server.connect(timeout=timeout, start_timeout=start_timeout)
    except BaseException:
        server.stop()
        raise
    return NbdImage(client, server, read_only=read_only)

