"""Domain 0's Argo endpoint through the control socket (control/argo_ops.py, pyxen.argo).

A real ``Hypervisor`` (KVM, no guests) and a real ``ControlServer`` on a Unix
socket in a temporary directory; clients are ``pyxen.argo.Socket`` and raw
``ControlClient`` requests.  Domain 0 sends to its own rings (it exists and
has Argo state), so every path but a guest's is covered here; guests are in
tests/integration/test_argo_host.py.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import select
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyxen import argo
from pyxen.abi.argo import XEN_ARGO_DOMID_ANY as ANY
from pyxen.abi.argo import ArgoRingFlags as F
from pyxen.control.client import ControlClient
from pyxen.control.manager import DomainManager
from pyxen.control.protocol import PROTOCOL_VERSION, ControlError
from pyxen.control.server import SERVICE_OPS, ControlServer
from pyxen.control.session import Role, Session
from pyxen.hv.argo import ring as R
from pyxen.hv.argo.config import ArgoConfig
from pyxen.hv.argo.policy import DEFAULT_DOMU_LABEL
from pyxen.hv.hypervisor import Hypervisor

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="a Hypervisor needs a usable /dev/kvm")

SMALL = 256  # a ring of 256 data bytes: 7 messages of 16 bytes fill it


class Daemon:
    def __init__(self, config: ArgoConfig) -> None:
        self.log = io.StringIO()
        self.hv = Hypervisor(io.StringIO(), self.log, argo=config)
        self.dir = Path(tempfile.mkdtemp(prefix="pyxen-argo-host-"))
        self.server = ControlServer(self.hv, DomainManager(self.hv), self.dir / "control.sock")
        self.server.start()

    def socket(self, port: int | None, partner: int = ANY, ring_len: int = argo.DEFAULT_RING_LEN
               ) -> argo.Socket:
        return argo.Socket(port, partner, ring_len, run_dir=self.dir)

    def client(self) -> ControlClient:
        return ControlClient(self.server.path)

    def dom0_rings(self) -> int:
        endpoint = self.hv.argo.endpoint(0)
        assert endpoint is not None
        return len(endpoint.rings)

    def close(self) -> None:
        self.server.close()
        self.hv.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        assert "pyxen bug" not in self.log.getvalue(), self.log.getvalue()


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon(ArgoConfig(enabled=True, mac_permissive=True))
    yield d
    d.close()


def wait_until(predicate: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def open_fds() -> dict[int, str]:
    """This process's descriptors and what they are (the listing's own one left out)."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


# -- host to host ---------------------------------------------------------------------


def test_dom0_sends_to_its_own_ring(daemon: Daemon) -> None:
    with daemon.socket(5000) as rx, daemon.socket(None) as tx:
        assert tx.send(b"hello", (0, 5000), message_type=7, from_port=9) == 5
        assert rx.recv(timeout=5) == argo.Message(b"hello", 0, 9, 7)
        assert rx.send(b"", (0, 5000)) == 0  # an empty message is a header alone
        assert rx.recv(timeout=5) == argo.Message(b"", 0, 5000, 0)


def test_messages_wrap_around_a_small_ring_intact(daemon: Daemon) -> None:
    with daemon.socket(1, ring_len=SMALL) as rx, daemon.socket(None) as tx:
        for i in range(200):
            data = bytes((i + k) % 256 for k in range(i % 150))
            tx.send(data, (0, 1), message_type=i, timeout=5)
            assert rx.recv(timeout=5) == argo.Message(data, 0, 0, i)


def test_a_full_ring_makes_the_sender_wait_for_the_receiver(daemon: Daemon) -> None:
    with daemon.socket(1, ring_len=SMALL) as rx, daemon.socket(None) as tx:
        sent: list[int] = []

        def sender() -> None:
            for i in range(40):
                tx.send(i.to_bytes(16, "little"), (0, 1), timeout=10)
                sent.append(i)

        thread = threading.Thread(target=sender)
        thread.start()
        wait_until(lambda: len(sent) >= 6, "the ring to fill")
        time.sleep(0.2)
        assert len(sent) < 40  # it waits: EAGAIN, then the space notification
        got = [int.from_bytes(rx.recv(timeout=10).data, "little") for _ in range(40)]
        thread.join(10)
        assert got == list(range(40)) and sent == got


def test_send_to_a_full_ring_times_out(daemon: Daemon) -> None:
    with (daemon.socket(1, ring_len=SMALL) as _rx, daemon.socket(None) as tx,
          pytest.raises(TimeoutError)):
        for _ in range(20):
            tx.send(bytes(16), (0, 1), timeout=0.2)


def test_send_errors_are_os_errors_with_xen_errnos(daemon: Daemon) -> None:
    with daemon.socket(1, ring_len=SMALL) as _rx, daemon.socket(None) as tx:
        with pytest.raises(ConnectionRefusedError):
            tx.send(b"x", (0, 2))
        with pytest.raises(ProcessLookupError):  # ESRCH: no domain 5
            tx.send(b"x", (5, 1))
        with pytest.raises(OSError) as e:
            tx.send(bytes(SMALL), (0, 1))
        assert e.value.errno == 90  # EMSGSIZE: never fits this ring


def test_large_messages_go_through_a_large_ring(daemon: Daemon) -> None:
    data = os.urandom(1 << 20)
    with daemon.socket(1, ring_len=4 << 20) as rx, daemon.socket(None) as tx:
        for _ in range(6):  # the ring wraps
            tx.send(data, (0, 1), timeout=10)
            assert rx.recv(timeout=10).data == data


def test_query(daemon: Daemon) -> None:
    with daemon.socket(3, ring_len=SMALL) as rx, daemon.socket(None) as tx:
        q = tx.query((0, 3), 16)
        assert q == argo.Query(F.EXISTS | F.SHARED | F.EMPTY | F.SUFFICIENT, SMALL - 32)
        assert tx.query((0, 4)) == argo.Query(F(0), None)
        assert tx.query((0, 3), SMALL).flags & F.EMSGSIZE
        for _ in range(6):
            tx.send(bytes(16), (0, 3))
        assert not tx.query((0, 3), 64).flags & F.SUFFICIENT  # and a notification is queued
        if select_ready(tx):  # the sends themselves raised domain 0's VIRQ_ARGO
            os.eventfd_read(tx.fileno())
        rx.recv(timeout=5)  # takes all six, then notifies: the queued wait is met
        wait_until(lambda: select_ready(tx), "the space notification")


def select_ready(sock: argo.Socket) -> bool:
    return bool(select.select([sock.fileno()], [], [], 0)[0])


def test_unicast_ring_takes_only_its_partner(daemon: Daemon) -> None:
    with daemon.socket(8, partner=0, ring_len=SMALL) as rx, daemon.socket(None) as tx:
        tx.send(b"from d0", (0, 8))
        assert rx.recv(timeout=5).data == b"from d0"


# -- ownership and release --------------------------------------------------------------


def test_one_connection_cannot_take_or_remove_anothers_ring(daemon: Daemon) -> None:
    with daemon.socket(10) as owner, daemon.client() as other:
        with pytest.raises(ControlError) as e:
            other.call("argo_register", aport=10, partner=ANY, len=SMALL)
        assert e.value.code == "EEXIST"
        with pytest.raises(ControlError) as e:
            other.call("argo_unregister", aport=10, partner=ANY)
        assert e.value.code == "ENOENT"
        owner.send(b"still mine", (0, 10))
        assert owner.recv(timeout=5).data == b"still mine"


def test_a_closed_socket_frees_its_port_at_once(daemon: Daemon) -> None:
    before = daemon.dom0_rings()
    for _ in range(3):
        with daemon.socket(11) as sock:
            assert daemon.dom0_rings() == before + 1
            sock.send(b"x", (0, 11))
        assert daemon.dom0_rings() == before


def test_a_dropped_connection_releases_rings_events_and_buffers(daemon: Daemon) -> None:
    listeners = len(daemon.hv.argo_listeners)
    fds = open_fds()
    client = daemon.client()
    for port in (20, 21, 22):
        _, got = client.call_fds("argo_register", aport=port, partner=ANY, len=SMALL)
        for fd in got:
            os.close(fd)
    client.call("argo_events")
    client.call("argo_tx_buffer", size=1 << 20)
    assert daemon.dom0_rings() == 3
    assert len(daemon.hv.argo_listeners) == listeners + 1
    client.close()  # no unregister: the server releases everything
    wait_until(lambda: daemon.dom0_rings() == 0 and
               len(daemon.hv.argo_listeners) == listeners, "the release")
    wait_until(lambda: open_fds().items() <= fds.items(),
               "the hypervisor's descriptors to close")
    with daemon.socket(20) as again:  # the port is free for someone else
        again.send(b"ok", (0, 20))
        assert again.recv(timeout=5).data == b"ok"


def test_partner_teardown_retires_the_ring_and_a_later_owner_keeps_its_own(
        daemon: Daemon) -> None:
    argo_state = daemon.hv.argo
    argo_state._exists = lambda d: d in (0, 7)  # a stand-in domain 7 with Argo state
    argo_state.attach(7, DEFAULT_DOMU_LABEL, lambda: None)
    first = daemon.client()
    _, fds = first.call_fds("argo_register", aport=30, partner=7, len=SMALL)
    os.close(fds[0])
    argo_state.detach(7)  # domain 7 destroyed: the ring whose partner it was goes
    assert daemon.dom0_rings() == 0
    argo_state.attach(7, DEFAULT_DOMU_LABEL, lambda: None)  # a new domain 7
    with daemon.socket(30, partner=7, ring_len=SMALL) as second:
        with pytest.raises(ControlError) as e:  # the first connection's ring is gone
            first.call("argo_unregister", aport=30, partner=7)
        assert e.value.code == "ENOENT"
        first.close()
        time.sleep(0.2)
        assert daemon.dom0_rings() == 1  # the first's release left the second's ring
        assert second.query((0, 30)).flags == F(0)  # (a ring for domain 7's messages only)


def test_argo_ops_are_not_for_services(daemon: Daemon) -> None:
    assert not {op for op in SERVICE_OPS if op.startswith("argo") or op == "loadpolicy"}
    reply, _ = daemon.server.handle({"v": PROTOCOL_VERSION, "id": 1, "op": "argo_events",
                                     "args": {}}, Session(Role.SERVICE, "xenstored"))
    assert reply["error"]["code"] == "EPERM"


# -- untrusted rings and hostile requests --------------------------------------------------


def test_a_corrupt_tx_pointer_raises_not_hangs(daemon: Daemon) -> None:
    with daemon.socket(40, ring_len=SMALL) as sock:
        ring = sock._ring
        assert ring is not None
        struct.pack_into("<I", ring, 4, 17)  # not on a slot
        with pytest.raises(argo.CorruptRing):
            sock.recv(timeout=1)
        struct.pack_into("<I", ring, 4, SMALL)  # past the end
        with pytest.raises(argo.CorruptRing):
            sock.recv(timeout=1)


def test_a_corrupt_message_header_raises(daemon: Daemon) -> None:
    with daemon.socket(41, ring_len=SMALL) as sock:
        ring = sock._ring
        assert ring is not None
        for bad_len in (0, 15, 1000, 0xFFFF_FFFF):
            struct.pack_into("<IIHHI", ring, R.RING_HEADER, bad_len, 1, 0, 0, 0)
            struct.pack_into("<I", ring, 4, 32)
            with pytest.raises(argo.CorruptRing):
                sock.recv(timeout=1)


def test_the_hypervisor_sanitises_a_hostile_rx_pointer(daemon: Daemon) -> None:
    with daemon.socket(42, ring_len=SMALL) as rx, daemon.socket(None) as tx:
        ring = rx._ring
        assert ring is not None
        for bogus in (0xFFFF_FFFF, SMALL, 7, 0x8000_0000):
            struct.pack_into("<I", ring, 0, bogus)
            with contextlib.suppress(TimeoutError):
                tx.send(b"y", (0, 42), timeout=0.05)
        tx_ptr = struct.unpack_from("<I", ring, 4)[0]
        assert tx_ptr < SMALL and tx_ptr % 16 == 0


def test_the_ring_file_cannot_be_resized_by_the_client(daemon: Daemon) -> None:
    with daemon.client() as client:
        _, fds = client.call_fds("argo_register", aport=43, partner=ANY, len=SMALL)
        fd = fds[0]
        try:
            size = os.fstat(fd).st_size
            assert size == R.npages(SMALL) * R.PAGE_SIZE
            for new in (0, size * 2):
                with pytest.raises(PermissionError):
                    os.ftruncate(fd, new)
            mapping = mmap.mmap(fd, size)
            mapping.close()
        finally:
            os.close(fd)
        _, fds = client.call_fds("argo_tx_buffer", size=100)
        try:
            assert os.fstat(fds[0]).st_size == R.PAGE_SIZE
            with pytest.raises(PermissionError):
                os.ftruncate(fds[0], 0)
        finally:
            os.close(fds[0])


BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("argo_register", {"aport": 1, "len": 47}, "EINVAL"),
    ("argo_register", {"aport": 1, "len": 100}, "EINVAL"),  # not whole slots
    ("argo_register", {"aport": 1, "len": R.MAX_RING_LEN + 16}, "EINVAL"),
    ("argo_register", {"aport": 1, "len": 1 << 62}, "EINVAL"),
    ("argo_register", {"aport": -1, "len": SMALL}, "EINVAL"),
    ("argo_register", {"aport": 1 << 32, "len": SMALL}, "EINVAL"),
    ("argo_register", {"aport": True, "len": SMALL}, "EINVAL"),
    ("argo_register", {"aport": "1", "len": SMALL}, "EINVAL"),
    ("argo_register", {"aport": 1.0, "len": SMALL}, "EINVAL"),
    ("argo_register", {"aport": 1, "len": None}, "EINVAL"),
    ("argo_register", {"aport": 1, "partner": 0x7FF0, "len": SMALL}, "EINVAL"),
    ("argo_register", {"aport": 1, "partner": -1, "len": SMALL}, "EINVAL"),
    ("argo_register", {"aport": 1, "partner": 9, "len": SMALL}, "ESRCH"),
    ("argo_unregister", {"aport": 1}, "ENOENT"),
    ("argo_unregister", {"aport": [], "partner": ANY}, "EINVAL"),
    ("argo_tx_buffer", {"size": 0}, "EINVAL"),
    ("argo_tx_buffer", {"size": R.MAX_RING_LEN + 1}, "EINVAL"),
    ("argo_tx_buffer", {"size": -5}, "EINVAL"),
    ("argo_tx_buffer", {}, "EINVAL"),
    ("argo_send", {"src_aport": 1, "dst_domid": 0, "dst_aport": 1, "len": 1}, "EINVAL"),
    ("argo_notify", {"entries": {}}, "EINVAL"),
    ("argo_notify", {"entries": [1]}, "EINVAL"),
    ("argo_notify", {"entries": [{"domid": 0}]}, "EINVAL"),
    ("argo_notify", {"entries": [{"domid": 0, "aport": 1, "space_required": -1}]}, "EINVAL"),
    ("argo_notify", {"entries": [{"domid": 0, "aport": 1}] * 257}, "EACCES"),
    ("loadpolicy", {"text": 5}, "EINVAL"),
    ("loadpolicy", {"text": "", "source": "x\n(d1) RESULT forged: PASS"}, "EINVAL"),
    ("loadpolicy", {"text": "allow a b:argo { fly };"}, "EINVAL"),
]


@pytest.mark.parametrize(("op", "args", "code"), BAD_REQUESTS)
def test_hostile_requests_are_refused(daemon: Daemon, op: str, args: dict[str, Any],
                                      code: str) -> None:
    with daemon.client() as client:
        with pytest.raises(ControlError) as e:
            client.call(op, **args)
        assert e.value.code == code, e.value.message
    assert daemon.dom0_rings() == 0


def test_send_stays_inside_the_transmit_buffer(daemon: Daemon) -> None:
    with daemon.socket(50) as _rx, daemon.client() as client:
        client.call("argo_tx_buffer", size=4096)
        base = {"src_aport": 0, "dst_domid": 0, "dst_aport": 50}
        for offset, length in ((0, 4097), (4096, 1), (1, 4096), (-1, 1), (0, -1),
                               (1 << 40, 1)):
            with pytest.raises(ControlError) as e:
                client.call("argo_send", offset=offset, len=length, **base)
            assert e.value.code == "EINVAL"
        assert client.call("argo_send", offset=4000, len=96, **base) == {"len": 96}
        for key, value in (("dst_domid", 1 << 16), ("dst_domid", -1), ("message_type", 1 << 32),
                           ("src_aport", None)):
            with pytest.raises(ControlError) as e:
                client.call("argo_send", offset=0, len=1, **{**base, key: value})
            assert e.value.code == "EINVAL"


# -- configuration and policy ---------------------------------------------------------------


def test_argo_off_refuses_everything() -> None:
    d = Daemon(ArgoConfig())
    try:
        with d.client() as client:
            for op, args in (("argo_register", {"aport": 1, "len": SMALL}),
                             ("argo_events", {}), ("argo_tx_buffer", {"size": 1}),
                             ("argo_notify", {})):
                with pytest.raises(ControlError) as e:
                    client.call(op, **args)
                assert e.value.code == "EOPNOTSUPP"
    finally:
        d.close()


def test_wildcard_rings_need_mac_permissive() -> None:
    d = Daemon(ArgoConfig(enabled=True))
    try:
        with pytest.raises(PermissionError):
            d.socket(1)
        with d.socket(1, partner=0) as sock:  # a unicast ring is fine
            sock.send(b"a", (0, 1))
            assert sock.recv(timeout=5).data == b"a"
    finally:
        d.close()


def test_loadpolicy_replaces_the_policy_at_run_time(daemon: Daemon) -> None:
    with daemon.socket(60) as sock, daemon.client() as client:
        sock.send(b"allowed", (0, 60))
        deny_send = ("allow domain_type xen_t:argo { enable register_any_source };\n"
                     "allow domain_type domain_type:argo register_single_source;\n")
        assert client.call("loadpolicy", text=deny_send, source="nosend.te") == {"rules": 3}
        with pytest.raises(PermissionError):
            sock.send(b"denied", (0, 60))
        assert "avc: denied { send }" in daemon.log.getvalue()
        client.call("loadpolicy", text=deny_send + "allow dom0_t dom0_t:argo send;\n")
        sock.send(b"allowed again", (0, 60))
        assert [sock.recv(timeout=5).data for _ in range(2)] == [b"allowed", b"allowed again"]
