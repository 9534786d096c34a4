"""pyxen's xenstored as a real process, driven by Debian's C xenstore
clients (xenstore-utils, libxenstore 4.17) through XENSTORED_PATH, and by
raw sockets for what the tools cannot send (garbage, partial messages).

No KVM needed: the directory-wide KVM prerequisite is overridden here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("xenstore-read", "xenstore-write", "xenstore-ls", "xenstore-rm", "xenstore-chmod",
         "xenstore-watch", "xenstore-list", "xenstore-exists")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"Debian's xenstore-utils are not installed (missing {MISSING}); "
                          "apt-get install xenstore-utils")

HEADER = struct.Struct("<IIII")
XS_READ, XS_WRITE, XS_CONTROL, XS_ERROR = 2, 11, 0, 16
START_TIMEOUT = 30.0  # generous: only a bound on a hang, not a measurement


@pytest.fixture(autouse=True)
def _integration_prerequisites() -> None:
    """Replaces the directory's KVM/guest-build prerequisite: none needed."""


class Daemon:
    """One xenstored process on a socket in a temporary directory."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.socket = str(tmp / "xs.sock")
        self.state = str(tmp / "state.json")
        self.log = str(tmp / "xenstored.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = dict(os.environ, XENSTORED_PATH=self.socket,
                        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"),
                                                                 os.environ.get("PYTHONPATH")])))

    def start(self) -> None:
        if os.path.exists(self.socket):  # left behind by a SIGKILLed daemon
            os.unlink(self.socket)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyxen.services.xenstored", "--socket", self.socket,
             "--state", self.state, "--log", self.log],
            env=self.env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self.socket):  # appears once it accepts
            if self.proc.poll() is not None:
                stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
                pytest.fail(f"xenstored exited with {self.proc.returncode}: {stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"xenstored did not create {self.socket}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        status = self.proc.wait(timeout=START_TIMEOUT)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        return status

    def tool(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=START_TIMEOUT, check=False)
        if check and proc.returncode != 0:
            pytest.fail(f"{argv} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(START_TIMEOUT)
        s.connect(self.socket)
        return s


@pytest.fixture
def xsd(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path)
    daemon.start()
    yield daemon
    if daemon.proc is not None:
        daemon.stop(signal.SIGKILL)


def recv_message(s: socket.socket) -> tuple[int, int, int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    msg_type, req_id, tx_id, length = HEADER.unpack(exactly(16))
    return msg_type, req_id, tx_id, exactly(length)


def test_write_read_exists_list(xsd: Daemon) -> None:
    xsd.tool("xenstore-write", "/vm/name", "guest-1", "/vm/memory", "512")
    assert xsd.tool("xenstore-read", "/vm/name", "/vm/memory").stdout == "guest-1\n512\n"
    assert xsd.tool("xenstore-list", "/vm").stdout == "name\nmemory\n"
    assert xsd.tool("xenstore-exists", "/vm/name").returncode == 0
    assert xsd.tool("xenstore-exists", "/vm/nope", check=False).returncode == 1
    missing = xsd.tool("xenstore-read", "/vm/nope", check=False)
    assert missing.returncode == 1 and "couldn't read path /vm/nope" in missing.stderr


def test_ls_format(xsd: Daemon) -> None:
    xsd.tool("xenstore-write", "/local/domain/3/name", "web", "/local/domain/3/control/x", "")
    out = xsd.tool("xenstore-ls").stdout
    assert out == ('tool = ""\n xenstored = ""\nlocal = ""\n domain = ""\n  3 = ""\n'
                   '   name = "web"\n   control = ""\n    x = ""\n')
    assert xsd.tool("xenstore-ls", "-f", "/local/domain/3").stdout == (
        '/local/domain/3/name = "web"\n/local/domain/3/control = ""\n'
        '/local/domain/3/control/x = ""\n')


def test_chmod_and_ls_permissions(xsd: Daemon) -> None:
    xsd.tool("xenstore-write", "/p/node", "v")
    xsd.tool("xenstore-chmod", "/p/node", "r5", "b7")
    out = xsd.tool("xenstore-ls", "-p", "/p").stdout
    assert out.startswith('node = "v"') and out.rstrip().endswith("(r5,b7)")
    xsd.tool("xenstore-chmod", "-r", "/p", "n0", "w3")
    assert xsd.tool("xenstore-ls", "-p", "/p").stdout.rstrip().endswith("(n0,w3)")


def test_rm(xsd: Daemon) -> None:
    xsd.tool("xenstore-write", "/r/a/b", "1", "/r/c", "2")
    xsd.tool("xenstore-rm", "/r/a")
    assert xsd.tool("xenstore-list", "/r").stdout == "c\n"
    xsd.tool("xenstore-rm", "/r/absent")
    assert xsd.tool("xenstore-rm", "/no/such/parent", check=False).returncode == 1
    assert xsd.tool("xenstore-rm", "/", check=False).returncode == 1
    assert xsd.tool("xenstore-list", "/").stdout == "tool\nr\n"


def test_watch_prints_registration_and_one_change(xsd: Daemon) -> None:
    xsd.tool("xenstore-write", "/w/x", "0")
    watcher = subprocess.Popen(["xenstore-watch", "-n", "2", "/w"], env=xsd.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline() == "/w\n"  # fires once on registration
        xsd.tool("xenstore-write", "/w/x", "1")
        assert watcher.stdout.readline() == "/w/x\n"
        assert watcher.wait(timeout=START_TIMEOUT) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
        watcher.communicate()


def test_large_directory_goes_through_directory_part(xsd: Daemon) -> None:
    names = [f"child-with-a-long-name-{i:04d}" for i in range(400)]  # ~12 KiB of names
    args: list[str] = []
    for n in names:
        args += [f"/big/{n}", n[-4:]]
    xsd.tool("xenstore-write", *args)
    assert xsd.tool("xenstore-list", "/big").stdout.split() == names
    assert len(xsd.tool("xenstore-ls", "/big").stdout.splitlines()) == 400


def test_control_messages(xsd: Daemon) -> None:
    with xsd.connect() as s:
        s.sendall(HEADER.pack(XS_CONTROL, 1, 0, 6) + b"check\0")
        assert recv_message(s) == (XS_CONTROL, 1, 0, b"OK\0")
        s.sendall(HEADER.pack(XS_CONTROL, 2, 0, 5) + b"help\0")
        assert b"print\t<string>\n" in recv_message(s)[3]
        s.sendall(HEADER.pack(XS_CONTROL, 3, 0, 5) + b"nope\0")
        assert recv_message(s) == (XS_ERROR, 3, 0, b"EINVAL\0")


def test_xenstore_control_tool(xsd: Daemon) -> None:
    """Debian ships xenstore-control in xen-utils-4.17 (/usr/bin has only a
    wrapper link); XENSTORE_CONTROL may name a usable binary."""
    control = os.environ.get("XENSTORE_CONTROL") or shutil.which("xenstore-control")
    if control is None or not os.path.exists(os.path.realpath(control)):
        pytest.skip("no usable xenstore-control (install xen-utils-4.17 or set "
                    "XENSTORE_CONTROL)")
    assert xsd.tool(control, "check").stdout.strip() == "OK"
    assert xsd.tool(control, "print", "hello").stdout.strip() == "OK"
    assert "memreport" in xsd.tool(control, "help").stdout
    assert "hello" in Path(xsd.log).read_text()


def test_garbage_and_huge_headers_do_not_disturb_other_clients(xsd: Daemon) -> None:
    xsd.tool("xenstore-write", "/alive", "yes")
    keep = xsd.connect()
    keep.sendall(HEADER.pack(XS_READ, 1, 0, 7)[:10])  # a partial header, finished later
    garbage = xsd.connect()
    garbage.sendall(bytes(range(256)) * 4)
    huge = xsd.connect()
    huge.sendall(HEADER.pack(XS_WRITE, 1, 0, 100000) + b"x" * 100)
    for bad in (garbage, huge):
        assert bad.recv(100) == b""  # disconnected
        bad.close()
    assert xsd.tool("xenstore-read", "/alive").stdout == "yes\n"
    keep.sendall(HEADER.pack(XS_READ, 1, 0, 7)[10:])
    for byte in b"/alive\0":  # one byte per send
        keep.sendall(bytes([byte]))
    assert recv_message(keep) == (XS_READ, 1, 0, b"yes")
    keep.close()


def test_many_clients_at_once(xsd: Daemon) -> None:
    clients = [xsd.connect() for _ in range(30)]
    for i, s in enumerate(clients):
        payload = f"/many/{i}\0".encode() + str(i).encode()
        s.sendall(HEADER.pack(XS_WRITE, i, 0, len(payload)) + payload)
    for i, s in enumerate(clients):
        assert recv_message(s) == (XS_WRITE, i, 0, b"OK\0")
        s.close()
    assert len(xsd.tool("xenstore-list", "/many").stdout.split()) == 30


def test_state_survives_sigkill(xsd: Daemon) -> None:
    xsd.tool("xenstore-write", "/persist/me", "kept")
    xsd.tool("xenstore-chmod", "/persist/me", "r4")
    # The reply came after the state was saved: a SIGKILL now loses nothing.
    assert xsd.stop(signal.SIGKILL) == -signal.SIGKILL
    xsd.start()
    assert xsd.tool("xenstore-read", "/persist/me").stdout == "kept\n"
    assert xsd.tool("xenstore-ls", "-p", "/persist").stdout.rstrip().endswith("(r4)")


def test_sigterm_exits_cleanly_and_removes_the_socket(xsd: Daemon) -> None:
    xsd.tool("xenstore-write", "/bye", "1")
    assert xsd.stop(signal.SIGTERM) == 0
    assert not os.path.exists(xsd.socket)
    assert "stopped" in Path(xsd.log).read_text()


def test_which_introduced_answers_a_batch_like_one_request_each(xsd: Daemon) -> None:
    """The daemon's reconcile asks about hundreds of domains at once (pipelined
    IS_DOMAIN_INTRODUCED, in batches): the answers match one request each."""
    from pyxen.control.xenstore import PIPELINE_DEPTH, XenstoreClient

    client = XenstoreClient(Path(xsd.socket))
    try:
        introduced = {1, 2, 3, PIPELINE_DEPTH + 5, 2 * PIPELINE_DEPTH + 1}
        for domid in introduced:
            client.introduce(domid, 0x1000 + domid, 5)
        asked = range(1, 3 * PIPELINE_DEPTH)
        assert client.which_introduced(asked) == introduced
        assert {d for d in asked if client.is_introduced(d)} == introduced
        assert client.which_introduced([]) == set()
        client.write("/still/in/step", "yes")  # the connection is in step afterwards
        assert client.read("/still/in/step") == b"yes"
    finally:
        client.close()


def test_a_write_batch_is_applied_in_order_and_reports_its_first_failure(xsd: Daemon) -> None:
    from pyxen.control.xenstore import WriteBatch, XenstoreClient, XenstoreError

    client = XenstoreClient(Path(xsd.socket))
    try:
        batch = WriteBatch()
        batch.rm("/batch")  # missing: harmless, as XenstoreClient.rm
        batch.mkdir("/batch")
        batch.write("/batch/a", "1")
        batch.set_perms("/batch/a", ["n5"])
        batch.write("/batch/a", "2")  # in order: the last write wins
        client.apply(batch)
        assert client.read("/batch/a") == b"2"
        assert "(n5)" in xsd.tool("xenstore-ls", "-p", "/batch").stdout

        batch = WriteBatch()
        batch.write("/batch/b", "x")
        batch.write("/batch//bad", "y")  # EINVAL
        batch.write("/batch/c", "z")  # still applied: the batch was sent whole
        with pytest.raises(XenstoreError) as failed:
            client.apply(batch)
        assert failed.value.code == "EINVAL"
        assert (client.read("/batch/b"), client.read("/batch/c")) == (b"x", b"z")
    finally:
        client.close()


def test_a_child_list_longer_than_one_reply_is_read_in_parts(xsd: Daemon) -> None:
    """/local/domain with ~1000 four-digit domain ids is E2BIG for DIRECTORY: the
    client reads it with DIRECTORY_PART (the daemon's reconcile failed on it)."""
    from pyxen.control.xenstore import WriteBatch, XenstoreClient, XenstoreError

    names = [str(1000 + i) for i in range(1200)]
    client = XenstoreClient(Path(xsd.socket))
    try:
        batch = WriteBatch()
        for name in names:
            batch.write(f"/big/{name}", "")
        client.apply(batch)
        with pytest.raises(XenstoreError) as whole:
            client.request(1, b"/big\0", "/big")  # XS_DIRECTORY
        assert whole.value.code == "E2BIG"
        assert sorted(client.directory("/big")) == names
        assert client.children("/nothere") == []
        client.write("/small/a", "")
        assert client.children("/small") == [b"a"]
    finally:
        client.close()


def test_directories_in_one_batch_match_one_request_each(xsd: Daemon) -> None:
    """A destroy lists a domain's backend directories together (missing ones are
    empty, a list too long for one reply is read in parts)."""
    from pyxen.control.xenstore import WriteBatch, XenstoreClient

    client = XenstoreClient(Path(xsd.socket))
    try:
        batch = WriteBatch()
        for name in (str(1000 + i) for i in range(1200)):
            batch.write(f"/dirs/big/{name}", "")
        batch.write("/dirs/small/1", "")
        batch.write("/dirs/small/2", "")
        client.apply(batch)
        paths = ["/dirs/small", "/dirs/none", "/dirs/big", "/dirs/small/1"]
        assert client.directories(paths) == [client.directory(p) for p in paths]
        assert client.directories(paths)[:2] == [["1", "2"], []]
        assert client.directories([]) == []
    finally:
        client.close()


def test_a_release_in_a_batch_is_harmless_for_an_unknown_domain(xsd: Daemon) -> None:
    from pyxen.control.xenstore import WriteBatch, XenstoreClient

    client = XenstoreClient(Path(xsd.socket))
    try:
        client.introduce(7, 0x1007, 5)
        batch = WriteBatch()
        batch.release(7)
        batch.release(8)  # never introduced: ENOENT, not an error here
        batch.write("/after/release", "1")
        client.apply(batch)
        assert client.which_introduced([7, 8]) == set()
        assert client.read("/after/release") == b"1"
    finally:
        client.close()
