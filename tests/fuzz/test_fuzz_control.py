"""The control socket under hostile clients: framing on a real socket, and every operation.

* Framing: random byte streams (length prefixes that lie, frames that are
  not JSON or not objects, valid requests in between) are written to a
  real :class:`ControlServer` on a Unix socket, then the client half-closes.
  Everything the server sends back must be well-formed replies (length,
  JSON object, protocol version) until it closes the connection, and the
  server must still answer ``hello`` on a new connection afterwards.
* Requests: random requests (known and unknown ops, arguments of every JSON
  type, domids that exist or not) go through ``ControlServer.handle`` with
  one real paused domain present.  Every reply is a success or an error
  with an errno name, never the internal-error answer (EIO "internal
  error"), and pyxen never logs a bug.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz.stats import count
from pyxen.control.manager import DomainManager, request_from_dict
from pyxen.control.protocol import MAX_MESSAGE, MAX_REPLY, PROTOCOL_VERSION, ControlError
from pyxen.control.server import OPS, ControlServer
from pyxen.hv.hypervisor import Hypervisor
from pyxen.hv.vcpu import install_kick_handler

# Stands for the domid of the example's domain (domids are not reused at once).
THE_DOMAIN = "<the domain>"
HELLO = Path(__file__).resolve().parents[2] / "guests" / "build" / "hello.elf"


class Daemon:
    def __init__(self) -> None:
        self.log = io.StringIO()
        self.hv = Hypervisor(io.StringIO(), self.log)
        self.manager = DomainManager(self.hv)
        self.dir = Path(tempfile.mkdtemp(prefix="pyxen-fuzz-control-"))
        self.server = ControlServer(self.hv, self.manager, self.dir / "control.sock")
        self.server.start()

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)  # a server that stops answering fails the test, not hangs it
        sock.connect(str(self.server.path))
        return sock

    def close(self) -> None:
        self.server.close()
        for domid in self.manager.domids():
            self.manager.destroy(domid)
        self.hv.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("/dev/kvm is not usable here")
    if not HELLO.exists():
        pytest.skip(f"{HELLO} is not built (make -C guests)")
    install_kick_handler()
    d = Daemon()
    try:
        yield d
    finally:
        d.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except ConnectionResetError:  # the server closed with our bytes unread
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def _replies(sock: socket.socket) -> list[dict[str, Any]]:
    """Every reply until the server closes; each one checked."""
    out = []
    while (head := _recv_exact(sock, 4)) is not None:
        (size,) = struct.unpack(">I", head)
        assert size <= MAX_REPLY
        body = _recv_exact(sock, size)
        assert body is not None, "a reply cut short"
        reply = json.loads(body)
        assert isinstance(reply, dict) and reply["v"] == PROTOCOL_VERSION, reply
        assert reply["ok"] or reply["error"]["code"] != "EIO", reply
        out.append(reply)
    return out


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 64), 1 << 64) | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10)
KEYS = ["domid", "name", "kib", "port", "local_port", "gfn", "ref", "handle", "readonly",
        "reason", "force", "timeout", "index", "config", "paused", "clear", "params", "vcpu",
        "hard", "soft", "action", "pool", "cpus", "sched", "format", "path"]
ARG_VALUES = st.one_of(json_values, st.integers(-2, 8), st.sampled_from([1, 0x7FEF, 0x7FF0]),
                       st.floats(0, 0.01))


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    """A create request's config: plausible fields with any values, or junk."""
    cfg = draw(st.dictionaries(st.sampled_from(
        ["name", "kernel", "ramdisk", "cmdline", "vcpus", "maxvcpus", "memory_mib",
         "maxmem_mib", "max_event_channels", "domid", "on_poweroff", "cpus", "cpu_weight",
         "cap", "pool"]), ARG_VALUES, max_size=6))
    if draw(st.booleans()):
        cfg["name"] = draw(st.sampled_from(["fuzz-a", "fuzz-b", "Domain-0", "x/y", ""]))
        cfg["kernel"] = str(HELLO) if draw(st.booleans()) else "/nonexistent.elf"
        cfg["memory_mib"] = draw(st.integers(1, 32))  # host memory is not what is fuzzed
        cfg.pop("maxmem_mib", None)
    return cfg


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(sorted(OPS)) if draw(st.integers(0, 9)) else st.text(max_size=10))
    args: dict[str, Any] = draw(st.dictionaries(st.sampled_from(KEYS), ARG_VALUES, max_size=4))
    if draw(st.booleans()):
        args["domid"] = draw(st.sampled_from([0, THE_DOMAIN, THE_DOMAIN, 1, 0x7FF0]))
    if op == "create":
        args["config"] = draw(configs())
    if op in ("wait", "shutdown"):  # they may block for this long: keep it short
        args["timeout"] = draw(st.floats(0, 0.01))
    if op == "trace":
        args.pop("path", None)  # a path is written by the hypervisor: not here
    request: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": draw(st.integers(0, 1 << 40)),
                               "op": op, "args": args}
    if draw(st.integers(0, 19)) == 0:  # sometimes a broken envelope
        request[draw(st.sampled_from(["v", "id", "op", "args"]))] = draw(json_values)
    return request


def _one_domain(daemon: Daemon) -> int:
    """Exactly one managed domain, paused, named fuzz-a; its domid."""
    for domid in daemon.manager.domids():
        # A domain an example shut down is destroyed by its on_poweroff action, on
        # a thread of its own: it may go between domids() and this destroy.
        with contextlib.suppress(ControlError):
            daemon.manager.destroy(domid)
    return daemon.manager.create(request_from_dict(
        {"name": "fuzz-a", "kernel": str(HELLO), "memory_mib": 16}), paused=True).domid


@given(st.lists(requests(), min_size=1, max_size=8))
def test_requests(daemon: Daemon, reqs: list[dict[str, Any]]) -> None:
    daemon.log.seek(0)
    daemon.log.truncate()
    domid = _one_domain(daemon)
    for request in reqs:
        count("control")
        args = request.get("args")
        if isinstance(args, dict) and args.get("domid") == THE_DOMAIN:
            args["domid"] = domid
        reply, fds = daemon.server.handle(request)
        for fd in fds:
            os.close(fd)
        assert reply["v"] == PROTOCOL_VERSION
        if reply["ok"]:
            event(f"ok {request.get('op')}")
        else:
            error = reply["error"]
            assert isinstance(error["code"], str) and error["code"].startswith("E"), reply
            assert error["code"] != "EIO", (request, reply, daemon.log.getvalue())
            event(f"{error['code']}")
        json.dumps(reply)  # a reply must be sendable
    assert "pyxen bug" not in daemon.log.getvalue(), daemon.log.getvalue()


frames = st.one_of(
    st.builds(lambda r: _frame(json.dumps(r).encode()), requests()),
    st.builds(_frame, st.binary(max_size=40)),
    st.builds(lambda v: _frame(json.dumps(v).encode()), json_values),
    st.builds(lambda n, body: struct.pack(">I", n) + body,
              st.sampled_from([0, 1, MAX_MESSAGE, MAX_MESSAGE + 1, 0xFFFF_FFFF]),
              st.binary(max_size=20)),
    st.binary(max_size=12),
)


@given(st.lists(frames, max_size=6))
def test_framing(daemon: Daemon, stream: list[bytes]) -> None:
    count("control-frames", len(stream))
    daemon.log.seek(0)
    daemon.log.truncate()
    with daemon.connect() as sock:
        sock.sendall(b"".join(stream))
        sock.shutdown(socket.SHUT_WR)
        _replies(sock)
    with daemon.connect() as sock:
        sock.sendall(_frame(json.dumps({"v": 1, "id": 7, "op": "hello", "args": {}}).encode()))
        sock.shutdown(socket.SHUT_WR)
        replies = _replies(sock)
        assert [r["ok"] for r in replies] == [True], replies
    assert "pyxen bug" not in daemon.log.getvalue(), daemon.log.getvalue()
