"""The control socket's trust boundary (control/server.py "Peers and roles", protocol.py).

A real ControlServer on a real Unix socket; the hypervisor and domain
manager are left out (``None``): every check here runs before an operation
would reach them, which is the point -- a refused peer, a service asking for
a toolstack operation and a malformed request never get that far."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pyxen.abi.xen import DOMID_FIRST_RESERVED
from pyxen.control import page_ops
from pyxen.control.client import CONTROL_FD_ENV, ControlClient
from pyxen.control.protocol import ControlError, ProtocolError, RequestError, decode
from pyxen.control.server import SERVICE_OPS, ControlServer
from pyxen.control.session import MAX_MAPPINGS, Role, Session, mapping_limit
from pyxen.memory import PAGE_SIZE, Gfn, PageKind
from pyxen.memory.physmap import GuestMemory

SRC = Path(__file__).resolve().parents[2] / "src"


class _Console:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture
def server() -> Iterator[ControlServer]:
    base = Path(tempfile.mkdtemp(prefix="pyxen-ctl-"))
    base.chmod(0o755)  # so that another uid can reach the socket at all
    srv = ControlServer(SimpleNamespace(console=_Console()), None,  # type: ignore[arg-type]
                        base / "control.sock")
    (base / "control.sock").chmod(0o666)
    srv.start()
    yield srv
    srv.close()
    base.rmdir()


def _frame(obj: Any) -> bytes:
    data = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return struct.pack(">I", len(data)) + data


def _reply(sock: socket.socket) -> dict[str, Any]:
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection instead of replying"
        buf += chunk
    result: dict[str, Any] = json.loads(buf[4:])
    return result


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
def test_a_peer_of_another_uid_is_refused(server: ControlServer) -> None:
    # A forked child (the interpreter under /root is not nobody's to run) takes
    # uid 65534, connects, sends hello and passes back the raw bytes it gets.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(server.path))
                with contextlib.suppress(OSError):
                    s.sendall(_frame({"v": 1, "id": 1, "op": "hello", "args": {}}))
                s.settimeout(60)
                os.write(write_end, json.dumps(_reply(s)).encode())  # one frame
            status = 0
        except BaseException as e:
            os.write(2, f"child: {e!r}\n".encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        raw = pipe.read()
    assert os.waitpid(pid, 0)[1] == 0
    reply = json.loads(raw)
    assert reply["ok"] is False and reply["error"]["code"] == "EACCES", reply
    assert "uid 65534" in reply["error"]["message"]


def test_root_or_the_daemons_uid_is_a_toolstack(server: ControlServer) -> None:
    with ControlClient(server.path) as client:
        hello = client.call("hello")
    assert hello["role"] == "toolstack" and "destroy" in hello["ops"]


def test_a_service_connection_cannot_change_domains(server: ControlServer) -> None:
    with ControlClient(server.path, server.attach_service("consoled")) as client:
        hello = client.call("hello")
        assert hello["role"] == "service" and set(hello["ops"]) == SERVICE_OPS
        for op, args in (("create", {"config": {"name": "x"}}), ("destroy", {"domid": 1}),
                         ("rename", {"domid": 1, "name": "y"}), ("pause", {"domid": 1}),
                         ("unpause", {"domid": 1}), ("shutdown", {"domid": 1}),
                         ("mem_set", {"domid": 1, "memory_mib": 1})):
            with pytest.raises(ControlError) as e:
                client.call(op, **args)
            assert e.value.code == "EPERM", (op, e.value.message)
    assert not server.hv.console.lines  # refused before any handler ran


def test_a_service_finds_its_inherited_connection(server: ControlServer) -> None:
    theirs = server.attach_service("xenstored")
    env = dict(os.environ, PYTHONPATH=str(SRC), **{CONTROL_FD_ENV: str(theirs.fileno())})
    env["PYXEN_RUN_DIR"] = "/nonexistent"  # control.sock is not where it connects
    script = textwrap.dedent(f"""
        import os
        from pyxen.control.client import ControlClient
        with ControlClient.connect() as client:
            print(client.call("hello")["role"], {CONTROL_FD_ENV!r} in os.environ)
    """)
    child = subprocess.run([sys.executable, "-c", script], env=env, pass_fds=[theirs.fileno()],
                           capture_output=True, text=True, timeout=60, check=False)
    theirs.close()
    assert child.stdout.split() == ["service", "False"], child.stderr


def test_deeply_nested_json_gets_an_error_reply(server: ControlServer) -> None:
    deep = b'{"v": 1, "id": 7, "op": "hello", "args": {"x": ' + b"[" * 100_000 \
        + b"]" * 100_000 + b"}}"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(server.path))
        sock.sendall(_frame(deep))
        reply = _reply(sock)
        assert reply["ok"] is False and reply["error"]["code"] == "EINVAL", reply
        assert "nested" in reply["error"]["message"]
        # The stream is intact: the next request is answered.
        sock.sendall(_frame({"v": 1, "id": 8, "op": "hello", "args": {}}))
        assert _reply(sock)["ok"] is True
    assert not server.hv.console.lines


def test_replies_may_be_larger_than_requests(server: ControlServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A listing of thousands of domains is over the 1 MiB request limit: replies
    go up to MAX_REPLY, and a result beyond that is an E2BIG reply, not a closed
    connection."""
    import pyxen.control.server as server_module
    from pyxen.control.protocol import MAX_MESSAGE

    big = "x" * (2 * MAX_MESSAGE)
    monkeypatch.setitem(server_module.OPS, "big", lambda srv, session, args: big)
    with ControlClient(server.path) as client:
        assert client.call("big") == big
        monkeypatch.setattr(server_module, "MAX_REPLY", MAX_MESSAGE)
        with pytest.raises(ControlError) as too_big:
            client.call("big")
        assert too_big.value.code == "E2BIG"
        assert client.call("hello")["role"] == "toolstack"  # still connected
        with pytest.raises(ProtocolError):  # a request is still at most MAX_MESSAGE
            client.call("hello", pad=big)


def test_decode_limits() -> None:
    with pytest.raises(RequestError):
        decode(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(RequestError):
        decode(b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}")  # too deep for a request
    with pytest.raises(RequestError):
        decode(b'{"a": ' + b"9" * 5000 + b"}")  # beyond Python's int digit limit
    with pytest.raises(ProtocolError):
        decode(b"[1]")
    assert decode(b'{"a": [[1]]}') == {"a": [[1]]}


def _domain(memory: GuestMemory, **params: int) -> SimpleNamespace:
    return SimpleNamespace(domid=3, memory=memory, lock=threading.Lock(), max_gfn=16,
                           params=dict.fromkeys(page_ops.SERVICE_FRAMES, 0) | params)


def _ops_server(domain: SimpleNamespace) -> SimpleNamespace:
    entry = SimpleNamespace(domain=domain)
    return SimpleNamespace(manager=SimpleNamespace(get=lambda domid: entry))


def test_foreign_map_of_a_grant_mapped_frame_is_refused() -> None:
    """Frame 5 of domain 3 holds a page of another domain's pool (a grant mapping):
    its pool index means nothing in domain 3's pool, so no page of 3 may be handed out."""
    mine, other = GuestMemory(16, 2), GuestMemory(16, 2)
    try:
        mine.map(Gfn(0), 4, 0, PageKind.RAM)
        mine.map_foreign(Gfn(5), other.host_base + 2 * PAGE_SIZE, 2, readonly=False)
        srv = _ops_server(_domain(mine))
        with pytest.raises(ControlError) as e:
            page_ops.foreign_map(srv, Session(), {"domid": 3, "gfn": 5})  # type: ignore[arg-type]
        assert e.value.code == "EINVAL" and "another domain's page" in e.value.message
        with pytest.raises(ControlError) as hole:
            page_ops.foreign_map(srv, Session(), {"domid": 3, "gfn": 9})  # type: ignore[arg-type]
        assert hole.value.code == "EFAULT"
    finally:
        mine.close()
        other.close()


def test_a_service_may_foreign_map_only_the_ring_frames() -> None:
    memory = GuestMemory(16, 2)
    try:
        memory.map(Gfn(0), 16, 0, PageKind.RAM)
        srv = _ops_server(_domain(memory, **{str(p): 0 for p in ()}))
        service = Session(Role.SERVICE, "consoled")
        with pytest.raises(ControlError) as e:
            page_ops.foreign_map(srv, service, {"domid": 3, "gfn": 9})  # type: ignore[arg-type]
        assert e.value.code == "EPERM"
    finally:
        memory.close()


def test_a_service_may_map_a_page_of_every_domain() -> None:
    """consoled and xenstored map every guest's ring through one connection each: past
    1024 domains the toolstack's limit left consoles unattached and every xenstore
    introduction failing with ENOSPC."""
    memory = GuestMemory(16, 2)
    try:
        memory.map(Gfn(0), 4, 0, PageKind.RAM)
        domain = _domain(memory)
        domain.params[page_ops.SERVICE_FRAMES[0]] = 9  # its console ring: a hole here
        srv = _ops_server(domain)
        held = {h: None for h in range(MAX_MAPPINGS)}  # as if mapped already
        toolstack = Session(mappings=dict(held))  # type: ignore[arg-type]
        with pytest.raises(ControlError) as e:
            page_ops.foreign_map(srv, toolstack, {"domid": 3, "gfn": 9})  # type: ignore[arg-type]
        assert e.value.code == "ENOSPC" and f"{MAX_MAPPINGS} pages" in e.value.message
        service = Session(Role.SERVICE, "xenstored", mappings=dict(held))  # type: ignore[arg-type]
        with pytest.raises(ControlError) as past:
            page_ops.foreign_map(srv, service, {"domid": 3, "gfn": 9})  # type: ignore[arg-type]
        assert past.value.code == "EFAULT"  # past the limit, to the frame lookup
        assert mapping_limit(Role.SERVICE) >= 2 * (DOMID_FIRST_RESERVED - 1)
    finally:
        memory.close()
