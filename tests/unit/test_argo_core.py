"""Argo's rules (hv/argo/core.py) without KVM: rings in plain host memory.

Each domain here is an ``Endpoint`` whose ring pages are an anonymous mmap;
messages come from a bytes buffer.  The guest-facing decoding is tested with
real guests (tests/integration/test_argo.py).
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from collections.abc import Callable, Iterator

import pytest

from pyxen.abi.argo import XEN_ARGO_DOMID_ANY as ANY
from pyxen.abi.argo import ArgoRingFlags as F
from pyxen.abi.errno import XenErrno
from pyxen.hv.argo import ring as R
from pyxen.hv.argo.config import ArgoConfig
from pyxen.hv.argo.core import Argo
from pyxen.hv.argo.policy import DEFAULT_DOMU_LABEL, FlaskPolicy
from pyxen.hv.errors import HypercallError

PAGE = 4096


class Memory:
    """Ring pages: one anonymous mapping per ring, released when the ring is."""

    def __init__(self) -> None:
        self.maps: list[mmap.mmap] = []
        self.released = 0

    def pages(self, length: int) -> Callable[[], tuple[list[int], Callable[[], None]]]:
        def make() -> tuple[list[int], Callable[[], None]]:
            n = R.npages(length)
            mm = mmap.mmap(-1, n * PAGE)
            self.maps.append(mm)
            base = ctypes.addressof(ctypes.c_char.from_buffer(mm))

            def release() -> None:
                self.released += 1
            return [base + i * PAGE for i in range(n)], release
        return make

    def header(self, ring: int = -1) -> tuple[int, int]:
        rx, tx = struct.unpack_from("<II", self.maps[ring], 0)
        return rx, tx

    def set_rx(self, rx: int, ring: int = -1) -> None:
        struct.pack_into("<I", self.maps[ring], 0, rx)


ON = ArgoConfig(enabled=True, mac_permissive=True)


class World:
    def __init__(self, config: ArgoConfig = ON,
                 policy: FlaskPolicy | None = None) -> None:
        self.log: list[str] = []
        self.domains = {0, 1, 2, 3}
        self.argo = Argo(config, self.log.append, lambda d: d in self.domains)
        if policy is not None:
            self.argo.set_policy(policy)
        self.signals: dict[int, int] = {d: 0 for d in self.domains}
        for d in sorted(self.domains):
            self.argo.attach(d, DEFAULT_DOMU_LABEL, self._signal(d))
        self.mem = Memory()
        self._payloads: list[ctypes.Array[ctypes.c_char]] = []

    def _signal(self, d: int) -> Callable[[], None]:
        def signal() -> None:
            self.signals[d] += 1
        return signal

    def register(self, domid: int, aport: int, partner: int, length: int,
                 fail_exist: bool = False) -> None:
        self.argo.register(domid, aport, partner, 0, length, R.npages(length), fail_exist,
                           self.mem.pages(length))

    def send(self, src: int, dst: int, aport: int, *payloads: bytes, src_aport: int = 7,
             message_type: int = 0, src_domid: int | None = None) -> int:
        bufs = [ctypes.create_string_buffer(p, len(p)) for p in payloads]
        self._payloads += bufs
        return self.argo.sendv(src, src_aport, src if src_domid is None else src_domid, 0,
                               aport, dst, 0, [len(p) for p in payloads], [0] * len(payloads),
                               message_type,
                               lambda i: [(ctypes.addressof(bufs[i]), len(payloads[i]))])


def errno_of(fn: Callable[[], object]) -> int:
    with pytest.raises(HypercallError) as e:
        fn()
    return e.value.errno


@pytest.fixture
def world() -> Iterator[World]:
    yield World()


def test_register_rules(world: World) -> None:
    a = world.argo
    assert errno_of(lambda: a.register(1, 1, 2, 0, 1, 1, False, world.mem.pages(48))) \
        == XenErrno.EINVAL
    assert errno_of(lambda: a.register(1, 1, 2, 1, 48, 1, False, world.mem.pages(48))) \
        == XenErrno.EINVAL  # pad
    assert errno_of(lambda: world.register(1, 1, 9, 48)) == XenErrno.ESRCH
    world.register(1, 1, 2, 256)
    assert errno_of(lambda: world.register(1, 1, 2, 256, fail_exist=True)) == XenErrno.EEXIST
    assert errno_of(lambda: world.register(1, 1, 2, 512)) == XenErrno.EEXIST
    world.register(1, 1, 2, 256)  # re-registration replaces the pages
    assert world.mem.released == 1
    assert errno_of(lambda: a.unregister(1, 2, 2, 0)) == XenErrno.ENOENT
    a.unregister(1, 1, 2, 0)
    assert world.mem.released == 2


def test_wildcard_needs_mac_permissive() -> None:
    w = World(ArgoConfig(True, False))
    assert errno_of(lambda: w.register(1, 1, ANY, 48)) == XenErrno.EPERM


def test_ring_count_limit(world: World) -> None:
    for port in range(R.MAX_RINGS_PER_DOMAIN):
        world.register(1, port, 2, 48)
    assert errno_of(lambda: world.register(1, 999, 2, 48)) == XenErrno.ENOSPC


def test_send_to_own_ring_layout(world: World) -> None:
    world.register(1, 5, ANY, 256)
    assert world.send(1, 1, 5, b"hello", src_aport=77, message_type=0xABCD,
                      src_domid=ANY) == 5
    assert world.mem.header() == (0, 32)  # tx: 16 + 5 rounded up
    mm = world.mem.maps[-1]
    length, aport, domid, pad, mtype = struct.unpack_from("<IIHHI", mm, 64)
    assert (length, aport, domid, pad, mtype) == (21, 77, 1, 0, 0xABCD)
    assert mm[80:85] == b"hello"
    assert world.signals[1] == 1


def test_source_cannot_be_forged(world: World) -> None:
    world.register(2, 5, ANY, 256)
    assert errno_of(lambda: world.send(1, 2, 5, b"x", src_domid=3)) == XenErrno.EPERM
    assert errno_of(lambda: world.send(1, 9, 5, b"x")) == XenErrno.ESRCH
    assert errno_of(lambda: world.send(1, 2, 6, b"x")) == XenErrno.ECONNREFUSED


def test_exact_match_before_wildcard(world: World) -> None:
    world.register(3, 5, ANY, 256)  # maps[0]
    world.register(3, 5, 1, 256)  # maps[1]: only for domain 1
    world.send(1, 3, 5, b"one")
    world.send(2, 3, 5, b"two")
    assert world.mem.header(1)[1] == 32 and world.mem.header(0)[1] == 32
    assert world.mem.maps[1][80:83] == b"one" and world.mem.maps[0][80:83] == b"two"
    # A unicast ring for domain 1 never takes domain 2's messages.
    world.argo.unregister(3, 5, ANY, 0)
    assert errno_of(lambda: world.send(2, 3, 5, b"x")) == XenErrno.ECONNREFUSED


def test_message_wraps_and_iovs_concatenate(world: World) -> None:
    world.register(2, 5, 1, 128)
    world.send(1, 2, 5, b"a" * 60)  # 16 + 60 -> tx 80
    world.mem.set_rx(80)  # consumed
    world.send(1, 2, 5, b"0123456789", b"", b"abcdefghijklmnopqrstuvwxyz0123")  # 40 bytes
    mm = world.mem.maps[-1]
    # header at 80..96, payload 96..128 then wraps to 0..8
    assert mm[64 + 96:64 + 128] == b"0123456789abcdefghijklmnopqrstuv"
    assert mm[64:64 + 8] == b"wxyz0123"
    assert world.mem.header()[1] == 16


def test_full_ring_queues_a_space_notification(world: World) -> None:
    world.register(2, 5, 1, 128)
    assert world.send(1, 2, 5, b"x" * 64) == 64  # 80 bytes used, 48 free
    assert errno_of(lambda: world.send(1, 2, 5, b"y" * 32)) == XenErrno.EAGAIN
    assert errno_of(lambda: world.send(1, 2, 5, b"y" * 113)) == XenErrno.EMSGSIZE
    signals = world.signals[1]
    world.argo.notify_pending(2)  # nothing consumed yet: nobody woken
    assert world.signals[1] == signals
    world.mem.set_rx(80)
    world.argo.notify_pending(2)
    assert world.signals[1] == signals + 1
    assert world.send(1, 2, 5, b"y" * 32) == 32


def test_bogus_rx_ptr_never_lets_a_write_leave_the_ring(world: World) -> None:
    world.register(2, 5, 1, 64)  # one page: bytes 128.. must stay untouched
    mm = world.mem.maps[-1]
    mm[128:] = b"\xee" * (PAGE - 128)
    for rx in (1, 17, 63, 64, 65, 0xFFFF_FFFF, 0x8000_0000):
        world.mem.set_rx(rx)
        try:
            world.send(1, 2, 5, b"z" * 16)
        except HypercallError as e:
            assert e.errno in (XenErrno.EAGAIN, XenErrno.EBUSY)
        assert mm[128:] == b"\xee" * (PAGE - 128)
        assert world.mem.header()[1] % 16 == 0 and world.mem.header()[1] < 64


def test_query_flags(world: World) -> None:
    world.register(2, 5, 1, 256)
    q = world.argo.query(1, 2, 5, 0)
    assert q.flags == F.EXISTS | F.EMPTY | F.SUFFICIENT and q.max_message_size == 224
    assert world.argo.query(1, 2, 6, 0).flags == 0
    assert world.argo.query(3, 2, 5, 0).flags == 0  # not its ring
    assert world.argo.query(1, 2, 5, 225).flags == F.EXISTS | F.EMPTY | F.EMSGSIZE
    world.send(1, 2, 5, b"q" * 100)
    q = world.argo.query(1, 2, 5, 200)  # not now: a wait is queued
    assert q.flags == F.EXISTS
    world.register(3, 5, ANY, 256)
    assert world.argo.query(1, 3, 5, 0).flags == F.EXISTS | F.SHARED | F.EMPTY | F.SUFFICIENT


def test_waiters_per_ring_are_bounded() -> None:
    w = World()
    w.domains |= set(range(4, 40))
    for d in range(4, 40):
        w.signals[d] = 0
        w.argo.attach(d, DEFAULT_DOMU_LABEL, lambda: None)
    w.register(1, 5, ANY, 64)
    w.send(2, 1, 5, b"f" * 16)  # 32 bytes used: a 16-byte message no longer fits
    results = []
    for d in range(4, 4 + R.MAX_PENDING_PER_RING + 1):
        results.append(errno_of(lambda d=d: w.send(d, 1, 5, b"g" * 16)))
    assert results[:-1] == [XenErrno.EAGAIN] * R.MAX_PENDING_PER_RING
    assert results[-1] == XenErrno.EBUSY
    assert w.argo.query(39, 1, 5, 32).flags & F.EBUSY


def test_teardown_removes_partner_rings_and_waits(world: World) -> None:
    world.register(2, 5, 1, 64)  # only domain 1 may send here
    world.register(3, 5, ANY, 64)
    world.send(2, 3, 5, b"f" * 16)
    assert errno_of(lambda: world.send(1, 3, 5, b"g" * 16)) == XenErrno.EAGAIN
    world.domains.discard(1)
    world.argo.detach(1)
    assert errno_of(lambda: world.argo.unregister(2, 5, 1, 0)) == XenErrno.ENOENT
    assert world.argo.endpoint(1) is None
    ring = world.argo.endpoint(3).rings  # type: ignore[union-attr]
    assert all(not r.pending for r in ring.values())


def test_argo_off_and_policy() -> None:
    off = World(ArgoConfig(False))
    assert errno_of(lambda: off.argo.enabled_for(1)) == XenErrno.EOPNOTSUPP
    assert off.argo.endpoint(1) is None
    policy = FlaskPolicy.parse("""
        type domU_t, domain_type;
        allow domain_type xen_t:argo enable;
        allow domain_type domain_type:argo register_single_source;
    """)
    w = World(policy=policy)
    w.register(2, 5, 1, 64)
    assert errno_of(lambda: w.send(1, 2, 5, b"x")) == XenErrno.EPERM
    assert errno_of(lambda: w.argo.query(1, 2, 5, 0)) == XenErrno.EPERM
    assert errno_of(lambda: w.register(1, 5, ANY, 64)) == XenErrno.EPERM
    assert any("denied { send }" in line for line in w.log)
    w.argo.set_policy(FlaskPolicy.parse("allow domain_type domain_type:argo send;"))
    assert w.send(1, 2, 5, b"x") == 1
    # enable is asked on every call and at creation
    assert errno_of(lambda: w.argo.enabled_for(1)) == XenErrno.EPERM


def test_failed_reregistration_drops_the_ring(world: World) -> None:
    """Xen removes a ring whose re-registration fails, whatever the failure: a bad
    page (-EINVAL) or a gfn list it cannot read (-EFAULT, a guest fault here)."""
    from pyxen.memory import MemoryFault

    for failure in (HypercallError(XenErrno.EINVAL), MemoryFault(0x1000)):
        world.register(1, 1, 2, 256)

        def broken(failure: Exception = failure) -> tuple[list[int], Callable[[], None]]:
            raise failure
        with pytest.raises(type(failure)):
            world.argo.register(1, 1, 2, 0, 256, R.npages(256), False, broken)
        assert errno_of(lambda: world.argo.unregister(1, 1, 2, 0)) == XenErrno.ENOENT
