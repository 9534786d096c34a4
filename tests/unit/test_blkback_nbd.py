"""qcow2 disks for blkback through qemu-nbd (pyxen.services.blkback.nbd).

Two halves: the NBD client against a scripted server on a socketpair (reply
checks, error codes, splitting, timeouts; no qemu needed), and NbdImage
against a REAL qemu-nbd serving real qcow2 images made by qemu-img, checked
with qemu-img (convert, map, check) from outside.  The qemu half skips when
qemu-nbd is not installed (Debian: qemu-utils; .ci/run installs it)."""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from blkback_fakes import ID, FakePages, discard, indirect, indirect_pages, pattern, response, rw

from pyxen.abi.blkif import BlkifOp, BlkifRsp
from pyxen.services.blkback import nbd
from pyxen.services.blkback.nbd import (
    NbdClient,
    NbdError,
    NbdImage,
    open_nbd_image,
    qemu_nbd_argv,
)
from pyxen.services.blkback.requests import Abi, Backend, DiskImage, open_image
from pyxen.services.ring import PAGE_SIZE, BackRing, FrontRing

MiB = 1 << 20
SIZE = 4 * MiB
SRC = Path(__file__).resolve().parents[2] / "src"
HAVE_QEMU = shutil.which("qemu-nbd") is not None and shutil.which("qemu-img") is not None
needs_qemu = pytest.mark.skipif(
    not HAVE_QEMU, reason="qemu-nbd and qemu-img are not installed (Debian package qemu-utils)")


# --- a scripted NBD server --------------------------------------------------------

def recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        got = s.recv(n - len(out))
        assert got, "the client closed the connection"
        out += got
    return out


ALL_FLAGS = (nbd.FLAG_HAS_FLAGS | nbd.FLAG_SEND_FLUSH | nbd.FLAG_SEND_FUA | nbd.FLAG_SEND_TRIM
             | nbd.FLAG_SEND_WRITE_ZEROES)


def handshake(s: socket.socket, *, size: int = SIZE, flags: int = ALL_FLAGS,
              max_payload: int = 0, refuse: int = 0) -> None:
    """The server's side of the handshake: INFO_EXPORT (and BLOCK_SIZE), ACK."""
    s.sendall(struct.pack(">QQH", nbd.NBDMAGIC, nbd.IHAVEOPT,
                          nbd.FLAG_FIXED_NEWSTYLE | nbd.FLAG_NO_ZEROES))
    assert struct.unpack(">I", recv_exact(s, 4))[0] == (nbd.FLAG_C_FIXED_NEWSTYLE
                                                        | nbd.FLAG_C_NO_ZEROES)
    magic, option, length = struct.unpack(">QII", recv_exact(s, 16))
    data = recv_exact(s, length)
    assert (magic, option) == (nbd.IHAVEOPT, nbd.OPT_GO)
    (name_len,) = struct.unpack_from(">I", data)
    assert data[4 + name_len :] == b"\0\0"  # no info requests

    def reply(rtype: int, payload: bytes) -> None:
        s.sendall(struct.pack(">QIII", nbd.OPT_REPLY_MAGIC, nbd.OPT_GO, rtype, len(payload))
                  + payload)

    if refuse:
        reply(refuse, b"no export named " + data[4 : 4 + name_len])
        assert struct.unpack(">QII", recv_exact(s, 16))[1] == nbd.OPT_ABORT
        return
    reply(nbd.REP_INFO, struct.pack(">HQH", nbd.INFO_EXPORT, size, flags))
    if max_payload:
        reply(nbd.REP_INFO, struct.pack(">HIII", nbd.INFO_BLOCK_SIZE, 1, 4096, max_payload))
    reply(nbd.REP_ACK, b"")


def request(s: socket.socket) -> tuple[int, int, int, int, int, bytes]:
    """(flags, type, handle, offset, length, data) of the next request."""
    magic, flags, cmd, handle, offset, length = struct.unpack(">IHHQQI", recv_exact(s, 28))
    assert magic == nbd.REQUEST_MAGIC
    data = recv_exact(s, length) if cmd == nbd.CMD_WRITE else b""
    return flags, cmd, handle, offset, length, data


def reply(s: socket.socket, handle: int, error: int = 0, data: bytes = b"",
          magic: int = nbd.SIMPLE_REPLY_MAGIC) -> None:
    s.sendall(struct.pack(">IIQ", magic, error, handle) + data)


class FakeServer:
    """``script`` plays the server on one end of a socketpair, in a thread."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.client_end, self.server_end = socket.socketpair()
        self.client_end.settimeout(10)  # a client bug fails the test instead of hanging it
        self.server_end.settimeout(10)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script: Callable[[socket.socket], None]) -> None:
        try:
            script(self.server_end)
        except BaseException as e:
            self.error = e

    def finish(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.server_end.close()
        if self.error is not None:
            raise self.error


def test_handshake_and_commands_on_the_wire() -> None:
    seen: list[tuple[int, int, int, int, bytes]] = []

    def script(s: socket.socket) -> None:
        handshake(s, size=SIZE + 100)
        for _ in range(6):
            flags, cmd, handle, offset, length, data = request(s)
            seen.append((flags, cmd, offset, length, data))
            reply(s, handle, data=b"R" * length if cmd == nbd.CMD_READ else b"")
        assert request(s)[1] == nbd.CMD_DISC

    server = FakeServer(script)
    client = NbdClient(server.client_end, "disk0")
    assert (client.size, client.read_only, client.can_flush, client.can_trim) == (
        SIZE + 100, False, True, True)
    assert client.read(512, 1024) == b"R" * 1024
    client.write(0, b"abc")
    client.write(4096, b"fua", fua=True)
    client.flush()
    client.trim(8192, 4096)
    client.write_zeroes(0, 512, may_trim=False)
    client.close()
    client.close()  # idempotent
    server.finish()
    assert seen == [
        (0, nbd.CMD_READ, 512, 1024, b""),
        (0, nbd.CMD_WRITE, 0, 3, b"abc"),
        (nbd.CMD_FLAG_FUA, nbd.CMD_WRITE, 4096, 3, b"fua"),
        (0, nbd.CMD_FLUSH, 0, 0, b""),
        (0, nbd.CMD_TRIM, 8192, 4096, b""),
        (nbd.CMD_FLAG_NO_HOLE, nbd.CMD_WRITE_ZEROES, 0, 512, b""),
    ]
    with pytest.raises(NbdError) as e:
        client.read(0, 1)
    assert e.value.errno == errno.EIO


def test_long_requests_are_split() -> None:
    seen: list[tuple[int, int, int]] = []

    def script(s: socket.socket) -> None:
        handshake(s, size=8 << 30, max_payload=4096)
        while True:
            _, cmd, handle, offset, length, _ = request(s)
            if cmd == nbd.CMD_DISC:
                return
            seen.append((cmd, offset, length))
            reply(s, handle, data=bytes([offset // 4096]) * length
                  if cmd == nbd.CMD_READ else b"")

    server = FakeServer(script)
    client = NbdClient(server.client_end)
    assert client.max_payload == 4096
    assert client.read(0, 10000) == b"\0" * 4096 + b"\1" * 4096 + b"\2" * 1808
    client.write(4096, bytes(4097))
    client.trim(0, 3 << 30)
    client.close()
    server.finish()
    assert seen == [(nbd.CMD_READ, 0, 4096), (nbd.CMD_READ, 4096, 4096),
                    (nbd.CMD_READ, 8192, 1808),
                    (nbd.CMD_WRITE, 4096, 4096), (nbd.CMD_WRITE, 8192, 1),
                    (nbd.CMD_TRIM, 0, 1 << 30), (nbd.CMD_TRIM, 1 << 30, 1 << 30),
                    (nbd.CMD_TRIM, 2 << 30, 1 << 30)]


@pytest.mark.parametrize(("error", "expected"), [
    (1, errno.EPERM), (5, errno.EIO), (28, errno.ENOSPC), (95, errno.EOPNOTSUPP),
    (108, errno.ESHUTDOWN), (999, errno.EINVAL)])
def test_error_replies_are_oserrors_and_the_connection_lives_on(error: int,
                                                                expected: int) -> None:
    def script(s: socket.socket) -> None:
        handshake(s)
        handle = request(s)[2]
        reply(s, handle, error)  # an error reply to a read carries no data
        handle = request(s)[2]
        reply(s, handle, data=b"ok")
        assert request(s)[1] == nbd.CMD_DISC

    server = FakeServer(script)
    client = NbdClient(server.client_end)
    with pytest.raises(OSError) as e:
        client.read(0, 2)
    assert e.value.errno == expected
    assert client.broken is None
    assert client.read(0, 2) == b"ok"
    client.close()
    server.finish()


@pytest.mark.parametrize("fault", ["handle", "magic", "structured", "short", "silent"])
def test_bad_replies_break_the_connection(fault: str) -> None:
    release = threading.Event()

    def script(s: socket.socket) -> None:
        handshake(s)
        handle = request(s)[2]
        if fault == "handle":
            reply(s, handle + 1, data=b"xx")
        elif fault == "magic":
            reply(s, handle, data=b"xx", magic=0x12345678)
        elif fault == "structured":
            reply(s, handle, magic=nbd.STRUCTURED_REPLY_MAGIC)
        elif fault == "short":
            reply(s, handle, data=b"x")
            s.shutdown(socket.SHUT_WR)
        else:
            release.wait(10)  # say nothing until the client has given up

    server = FakeServer(script)
    if fault == "silent":
        server.client_end.settimeout(0.2)
    client = NbdClient(server.client_end)
    with pytest.raises(OSError) as e:
        client.read(0, 2)
    want = {"short": errno.ECONNRESET, "silent": errno.ETIMEDOUT}.get(fault, errno.EPROTO)
    assert e.value.errno == want
    assert client.broken
    release.set()
    with pytest.raises(NbdError, match="unusable"):  # at once, nothing sent
        client.write(0, b"x")
    client.close()
    server.finish()


def test_bad_arguments_keep_and_interruptions_break_the_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def script(s: socket.socket) -> None:
        handshake(s)
        handle = request(s)[2]
        reply(s, handle, data=b"ok")
        request(s)  # the interrupted read (a reply to it would never be read)

    server = FakeServer(script)
    client = NbdClient(server.client_end)
    with pytest.raises(struct.error):
        client.read(-1, 2)  # nothing sent
    assert client.broken is None
    assert client.read(0, 2) == b"ok"

    def interrupted(sock: socket.socket, length: int) -> bytes:
        raise KeyboardInterrupt

    monkeypatch.setattr(nbd, "_recv_exact", interrupted)
    with pytest.raises(KeyboardInterrupt):
        client.read(0, 2)
    assert client.broken == "KeyboardInterrupt"  # the unread reply would desynchronise it
    client.close()
    server.finish()


def test_refused_export() -> None:
    server = FakeServer(lambda s: handshake(s, refuse=nbd.REP_ERR | 6))
    with pytest.raises(NbdError, match="no such export: no export named nope") as e:
        NbdClient(server.client_end, "nope")
    assert e.value.errno == errno.ENOENT
    server.finish()


def test_not_an_nbd_server() -> None:
    def script(s: socket.socket) -> None:
        s.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        s.shutdown(socket.SHUT_WR)

    server = FakeServer(script)
    with pytest.raises(NbdError, match="not an NBD server"):
        NbdClient(server.client_end)
    server.finish()


def test_commands_the_export_does_not_allow_are_not_sent() -> None:
    def script(s: socket.socket) -> None:
        handshake(s, flags=nbd.FLAG_HAS_FLAGS | nbd.FLAG_READ_ONLY)
        assert request(s)[1] == nbd.CMD_DISC  # nothing before the disconnect

    server = FakeServer(script)
    client = NbdClient(server.client_end)
    assert client.read_only and not client.can_flush
    calls: list[Callable[[], None]] = [lambda: client.write(0, b"x"),
                                       lambda: client.trim(0, 512),
                                       lambda: client.write_zeroes(0, 512)]
    for call in calls:
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EROFS
    client.flush()  # no write cache, nothing to flush
    image = NbdImage(client)
    assert image.read_only
    with pytest.raises(OSError, match="read-only"):
        image.discard(0, 512)
    image.close()
    server.finish()


def test_qemu_nbd_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = qemu_nbd_argv("qemu-nbd", "nbd:disk.qcow2", "qcow2", "/run/x/nbd.sock")
    assert argv == ["qemu-nbd", "--socket=/run/x/nbd.sock", "--format=qcow2", "--persistent",
                    "--shared=1", "--cache=writeback", "--aio=threads", "--discard=unmap",
                    "--", f"{tmp_path}/nbd:disk.qcow2"]  # absolute: no protocol prefix
    ro = qemu_nbd_argv("qemu-nbd", "/d.qcow2", "qcow2", "/s", read_only=True, cache="none")
    assert "--read-only" in ro and "--cache=none" in ro
    with pytest.raises(ValueError, match="cache mode 'unsafe'"):
        qemu_nbd_argv("qemu-nbd", "/d", "qcow2", "/s", cache="unsafe")  # type: ignore[arg-type]


def test_missing_qemu_nbd_names_the_package(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="install the qemu-utils package"):
        open_image(tmp_path / "disk.qcow2", "qcow2")


def test_unsupported_formats(tmp_path: Path) -> None:
    for fmt in ("vhd", "qcow", "qed", ""):
        with pytest.raises(ValueError, match=r"^disk format .* is not supported: pyxen serves "
                                             "raw and qcow2 images$"):
            open_image(tmp_path / "disk", fmt)
    raw = tmp_path / "disk.img"
    raw.write_bytes(bytes(4096))
    image = open_image(raw, "raw", read_only=True)
    assert isinstance(image, DiskImage) and image.read_only and image.sectors == 8
    image.close()


# --- a real qemu-nbd ----------------------------------------------------------------

def qemu_img(*args: str | Path) -> str:
    done = subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def contents(path: Path, fmt: str = "qcow2", *, shared: bool = False) -> bytes:
    """The image's guest-visible bytes, read by qemu-img (``shared``: while served)."""
    out = path.with_suffix(".raw-out")
    qemu_img("convert", *(["-U"] if shared else []), "-f", fmt, "-O", "raw", path, out)
    data = out.read_bytes()
    out.unlink()
    return data


def allocated(path: Path, start: int, length: int) -> list[bool]:
    """Whether each extent of qemu-img map overlapping the range holds data."""
    extents = json.loads(qemu_img("map", "-U", "--output=json", path))
    return [bool(e["data"]) for e in extents
            if e["start"] < start + length and e["start"] + e["length"] > start]


@pytest.fixture
def qcow2(tmp_path: Path) -> Path:
    path = tmp_path / "disk.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", path, str(SIZE))
    return path


@pytest.fixture
def image(qcow2: Path) -> Iterator[NbdImage]:
    with open_nbd_image(qcow2) as img:
        yield img


@needs_qemu
def test_open_image_serves_qcow2(qcow2: Path) -> None:
    image = open_image(qcow2, "qcow2")
    try:
        assert isinstance(image, NbdImage)
        assert image.server is not None and image.server.process.poll() is None
        assert (image.size, image.sectors, image.read_only) == (SIZE, SIZE // 512, False)
        client = image.client
        assert client.can_flush and client.can_fua and client.can_trim
        assert client.can_write_zeroes and client.broken is None
    finally:
        image.close()
    assert image.server.process.returncode == 0  # SIGTERM: a clean exit
    assert not os.path.exists(image.server.dir)
    image.close()  # idempotent


@needs_qemu
def test_read_write_round_trip(image: NbdImage) -> None:
    assert image.read(0, SIZE) == bytes(SIZE)  # a new qcow2 reads as zeroes
    data = pattern(1, 3 * MiB + 1000)  # unaligned, and more than one cluster
    image.write(513, data)
    assert image.read(513, len(data)) == data
    assert image.read(0, 513) == bytes(513)
    image.write(SIZE - 512, b"E" * 512)  # the last sector
    assert image.read(SIZE - 1024, 1024) == bytes(512) + b"E" * 512
    with pytest.raises(OSError) as e:  # beyond the end: qemu's EINVAL, not a broken session
        image.read(SIZE, 512)
    assert e.value.errno == errno.EINVAL
    assert image.read(SIZE - 512, 512) == b"E" * 512


@needs_qemu
def test_flush_puts_writes_in_the_file(image: NbdImage, qcow2: Path) -> None:
    """After a flush, another reader of the file (qemu-img, sharing it) sees the
    writes: the data and qcow2's metadata (L2 tables, refcounts) are in the file."""
    image.write(2 * MiB, b"F" * 65536)
    image.flush()
    assert contents(qcow2, shared=True)[2 * MiB : 2 * MiB + 65536] == b"F" * 65536
    image.write(0, b"U" * 4096, fua=True)  # durable on its own
    assert contents(qcow2, shared=True)[:4096] == b"U" * 4096
    assert "No errors were found" in qemu_img("check", "-U", qcow2)


@needs_qemu
def test_trim_deallocates_clusters(image: NbdImage, qcow2: Path) -> None:
    image.write(MiB, pattern(2, MiB))
    image.flush()
    assert allocated(qcow2, MiB, MiB) == [True]
    image.client.trim(MiB, MiB)  # whole 64 KiB clusters
    image.flush()
    assert not any(allocated(qcow2, MiB, MiB))
    assert "No errors were found" in qemu_img("check", "-U", qcow2)


@needs_qemu
def test_discard_reads_as_zeroes(image: NbdImage, qcow2: Path) -> None:
    data = pattern(3, 2 * MiB)
    image.write(0, data)
    image.discard(1000, MiB)  # unaligned at both ends: partly deallocated, partly zeroed
    expected = data[:1000] + bytes(MiB) + data[1000 + MiB :]
    assert image.read(0, 2 * MiB) == expected
    image.discard(0, 0)
    image.flush()
    assert allocated(qcow2, 128 * 1024, 768 * 1024) == [False]  # whole clusters freed
    assert "No errors were found" in qemu_img("check", "-U", qcow2)


@needs_qemu
def test_read_only(qcow2: Path) -> None:
    with open_nbd_image(qcow2) as rw_image:
        rw_image.write(0, b"before")
    with open_nbd_image(qcow2, read_only=True) as image:
        assert image.read_only and image.client.read_only  # qemu-nbd --read-only says so
        calls: list[Callable[[], None]] = [lambda: image.write(0, b"x"), image.flush,
                                           lambda: image.discard(0, 512)]
        for call in calls:
            with pytest.raises(OSError) as e:
                call()
            assert e.value.errno == errno.EROFS
        image.client.flags &= ~nbd.FLAG_READ_ONLY  # send it anyway: qemu refuses too
        with pytest.raises(OSError) as e:
            image.client.write(0, b"x")
        assert e.value.errno in (errno.EPERM, errno.EINVAL)  # qemu 7.2 says EINVAL
        assert image.read(0, 6) == b"before"  # the session survives the refusal
        with open_nbd_image(qcow2, read_only=True) as other:  # readers share the image
            assert other.read(0, 6) == b"before"
    assert contents(qcow2)[:6] == b"before"


@needs_qemu
def test_data_outlives_the_server(qcow2: Path) -> None:
    data = pattern(4, SIZE)
    with open_nbd_image(qcow2) as image:
        image.write(0, data)
        image.discard(MiB, 4096)
    expected = data[:MiB] + bytes(4096) + data[MiB + 4096 :]
    assert contents(qcow2) == expected  # not shared: qemu-nbd released its lock
    with open_nbd_image(qcow2) as image:
        assert image.read(0, SIZE) == expected
    assert "No errors were found" in qemu_img("check", qcow2)


@needs_qemu
def test_backing_file(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base_data = pattern(5, SIZE)
    base.write_bytes(base_data)
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay)
    with open_nbd_image(overlay) as image:
        assert image.size == SIZE
        assert image.read(0, SIZE) == base_data
        image.write(4096, b"O" * 8192)
        image.discard(MiB, 65536)  # must hide the base's data, not expose it
        expected = (base_data[:4096] + b"O" * 8192 + base_data[12288:MiB] + bytes(65536)
                    + base_data[MiB + 65536 :])
        assert image.read(0, SIZE) == expected
    assert base.read_bytes() == base_data  # writes went to the overlay only
    assert contents(overlay) == expected
    assert "No errors were found" in qemu_img("check", overlay)


@pytest.fixture(params=list(Abi), ids=lambda a: a.name)
def abi(request: pytest.FixtureRequest) -> Abi:
    value: Abi = request.param
    return value


@needs_qemu
def test_backend_serves_a_qcow2_disk(image: NbdImage, qcow2: Path, abi: Abi,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The request path of test_blkback_requests.py, on a qcow2 disk: ring,
    writes, indirect read, flush, barrier, discard."""
    flushes: list[int] = []
    real_flush = image.client.flush

    def flush() -> None:
        flushes.append(1)
        real_flush()

    monkeypatch.setattr(image.client, "flush", flush)
    area = [memoryview(bytearray(PAGE_SIZE)) for _ in range(2)]
    front, back = FrontRing(area, abi.entry_size), BackRing(area, abi.entry_size)
    pages = FakePages()
    be = Backend(image, pages, abi)
    assert be.discard
    for i in range(40):
        pages.grant(i, pattern(100 + i, PAGE_SIZE), read_only=True)
        front.put_request(rw(abi, BlkifOp.WRITE, 8 * i, [(i, 0, 7)], req_id=i))
    front.put_request(rw(abi, BlkifOp.FLUSH_DISKCACHE, 0, [], req_id=40))
    assert front.push_requests()
    answered = []
    while back.final_check_for_requests():
        for slot in back.take_requests():
            back.put_response(be.handle(slot))
        back.push_responses()
        answered += [response(abi, r) for r in front.take_responses()]
    assert answered == [(i, BlkifOp.WRITE, BlkifRsp.OKAY) for i in range(40)] + [
        (40, BlkifOp.FLUSH_DISKCACHE, BlkifRsp.OKAY)]
    written = b"".join(pattern(100 + i, PAGE_SIZE) for i in range(40))
    assert flushes == [1]
    assert contents(qcow2, shared=True)[: len(written)] == written  # flushed: in the file

    nr = 200  # an indirect read of one sector per page, across two 64 KiB clusters
    segs = [(1000 + i, i % 8, i % 8) for i in range(nr)]
    for g, _, _ in segs:
        pages.grant(g)
    rsp = be.handle(indirect(abi, BlkifOp.READ, 100, nr, indirect_pages(pages, segs, 5000)))
    assert response(abi, rsp) == (ID, BlkifOp.READ, BlkifRsp.OKAY)
    got = b"".join(bytes(pages.pages[1000 + i][(i % 8) * 512 : (i % 8 + 1) * 512])
                   for i in range(nr))
    assert got == written[100 * 512 : (100 + nr) * 512]

    pages.grant(7000, b"B" * PAGE_SIZE, read_only=True)
    rsp = be.handle(rw(abi, BlkifOp.WRITE_BARRIER, 4, [(7000, 0, 3)]))
    assert response(abi, rsp) == (ID, BlkifOp.WRITE_BARRIER, BlkifRsp.OKAY)
    assert flushes == [1, 1]
    assert response(abi, be.handle(discard(abi, 16, 24)))[2] == BlkifRsp.OKAY
    pages.grant(7001)
    rsp = be.handle(rw(abi, BlkifOp.READ, 0, [(7001, 0, 7)]))
    assert response(abi, rsp)[2] == BlkifRsp.OKAY
    assert pages.pages[7001] == written[:2048] + b"B" * 2048
    rsp = be.handle(rw(abi, BlkifOp.READ, 16, [(7001, 0, 7)]))
    assert pages.pages[7001] == bytes(PAGE_SIZE)  # discarded
    rsp = be.handle(rw(abi, BlkifOp.READ, SIZE // 512, [(7001, 0, 0)]))  # off the disk
    assert response(abi, rsp)[2] == BlkifRsp.ERROR


@needs_qemu
def test_backend_on_a_read_only_qcow2_disk(qcow2: Path, abi: Abi) -> None:
    pages = FakePages()
    pages.grant(1, b"W" * PAGE_SIZE)
    with open_nbd_image(qcow2, read_only=True) as image:
        be = Backend(image, pages, abi)
        assert not be.discard
        for slot in (rw(abi, BlkifOp.WRITE, 0, [(1, 0, 7)]),
                     rw(abi, BlkifOp.FLUSH_DISKCACHE, 0, [])):
            assert response(abi, be.handle(slot))[2] == BlkifRsp.ERROR
        assert response(abi, be.handle(discard(abi, 0, 8)))[2] == BlkifRsp.EOPNOTSUPP
        assert response(abi, be.handle(rw(abi, BlkifOp.READ, 0, [(1, 0, 7)])))[2] \
            == BlkifRsp.OKAY
        assert pages.pages[1] == bytes(PAGE_SIZE)


@needs_qemu
def test_qemu_nbd_killed_mid_session(image: NbdImage, abi: Abi) -> None:
    assert image.server is not None
    image.write(0, b"x" * 512)
    image.server.process.kill()
    image.server.process.wait()
    with pytest.raises(OSError):
        image.read(0, 512)
    assert image.client.broken
    pages = FakePages()
    pages.grant(1)
    be = Backend(image, pages, abi)
    for slot in (rw(abi, BlkifOp.READ, 0, [(1, 0, 7)]), rw(abi, BlkifOp.WRITE, 0, [(1, 0, 7)]),
                 rw(abi, BlkifOp.FLUSH_DISKCACHE, 0, []), discard(abi, 0, 8)):
        assert response(abi, be.handle(slot))[2] == BlkifRsp.ERROR
    assert "unusable" in be.last_error
    image.close()
    assert image.server.process.returncode == -signal.SIGKILL


@needs_qemu
def test_hung_qemu_nbd_times_out(qcow2: Path) -> None:
    with open_nbd_image(qcow2, timeout=0.5) as image:
        assert image.server is not None
        os.kill(image.server.pid, signal.SIGSTOP)
        try:
            with pytest.raises(OSError) as e:
                image.read(0, 512)
            assert e.value.errno == errno.ETIMEDOUT
        finally:
            os.kill(image.server.pid, signal.SIGCONT)
        with pytest.raises(NbdError, match="unusable: no reply"):
            image.read(0, 512)


@needs_qemu
def test_qemu_nbd_failing_to_start_says_why(qcow2: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # where the sockets go
    with open_nbd_image(qcow2), pytest.raises(OSError, match=r"exited with status 1: .*lock"):
        open_nbd_image(qcow2)  # qemu's image lock: one writer
    with pytest.raises(OSError, match=r"exited with status 1: .*No such file"):
        open_nbd_image(tmp_path / "missing.qcow2")
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(4096))
    with pytest.raises(OSError, match=r"exited with status 1: .*qcow2"):
        open_nbd_image(raw, "qcow2")  # never probed: a raw file is not a qcow2 image
    assert list(private.iterdir()) == []  # every failed start cleaned up after itself


CHILD = """
import sys
from pyxen.services.blkback.nbd import open_nbd_image
image = open_nbd_image(sys.argv[1])
print(image.server.pid, flush=True)
sys.stdin.read()
"""


@needs_qemu
@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs os.pidfd_open (Linux 5.3)")
def test_qemu_nbd_dies_with_its_parent(qcow2: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(tmp_path)}  # its socket dir

    parent = subprocess.Popen([sys.executable, "-c", CHILD, str(qcow2)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    pidfd = os.pidfd_open(pid)
    try:
        parent.kill()  # no chance to clean up
        parent.wait()
        readable, _, _ = select.select([pidfd], [], [], 30)
        assert readable, f"qemu-nbd {pid} outlived its parent"
    finally:
        os.close(pidfd)
        assert parent.stdin is not None and parent.stdout is not None
        parent.stdin.close()
        parent.stdout.close()
    with open_nbd_image(qcow2) as image:  # and it let go of the image
        assert image.read(0, 512) == bytes(512)
