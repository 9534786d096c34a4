"""Argo (hypercall 39) between real guests: the argo* programs of guests/tests.

Each test starts its own hypervisor with the Argo boot option it needs
(``argo=1,mac-permissive=1`` unless the test is about another setting),
builds the domains with ids allocated ahead (each program is told its
peers' ids on its command line) and requires every program's RESULT line
to be PASS.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integration.domains import Host
from pyxen.abi.xen import ShutdownReason
from pyxen.hv.argo.config import ArgoConfig
from pyxen.hv.domain import Domain

ON = ArgoConfig(enabled=True, mac_permissive=True)


@pytest.fixture
def argo_host() -> Iterator[Host]:
    h = Host(argo=ON)
    try:
        yield h
    finally:
        h.close()


def _run(host: Host, doms: list[tuple[Domain, str]], timeout: float = 120) -> None:
    """Start every domain, wait for all, require poweroff and PASS from each."""
    for d, _ in doms:
        d.start()
    reasons = host.wait_all([d for d, _ in doms], timeout=timeout)
    assert reasons == [ShutdownReason.poweroff] * len(doms), host.describe()
    for d, prog in doms:
        assert host.result(d.domid, prog) == "PASS", f"d{d.domid} {prog}\n{host.describe()}"


def _echo_pair(host: Host, n: int, size: int, extra: str = "") -> list[tuple[Domain, str]]:
    server_id = host.hv.allocate_domid()
    client_id = host.hv.allocate_domid()
    server = host.build("argoecho", f"role=server peer={client_id}", domid=server_id)
    client = host.build("argoecho", f"role=client peer={server_id} n={n} size={size} {extra}",
                        domid=client_id)
    return [(server, "argoecho"), (client, "argoecho")]


@pytest.mark.kvm
def test_argo_echo(argo_host: Host) -> None:
    _run(argo_host, _echo_pair(argo_host, n=100, size=200, extra="rtt=1"))
    assert "rtt_median_ns=" in argo_host.output()


@pytest.mark.kvm
def test_argo_echo_pipelined_small_rings(argo_host: Host) -> None:
    """A window of 8 messages of 500 bytes through 2 KiB rings: both sides meet -EAGAIN."""
    server_id = argo_host.hv.allocate_domid()
    client_id = argo_host.hv.allocate_domid()
    server = argo_host.build("argoecho", f"role=server peer={client_id} ringlen=2048",
                             domid=server_id)
    client = argo_host.build(
        "argoecho", f"role=client peer={server_id} n=150 size=500 window=8 ringlen=2048",
        domid=client_id)
    _run(argo_host, [(server, "argoecho"), (client, "argoecho")])


@pytest.mark.kvm
def test_argo_ring_dies_with_its_partner(argo_host: Host) -> None:
    """The server's unicast ring for the client is removed when the client's
    domain is destroyed (Xen's partner_rings_remove)."""
    server_id = argo_host.hv.allocate_domid()
    client_id = argo_host.hv.allocate_domid()
    server = argo_host.build("argoecho", f"role=server peer={client_id} linger=1",
                             domid=server_id)
    client = argo_host.build("argoecho", f"role=client peer={server_id} n=20 size=32",
                             domid=client_id)
    server.start()
    client.start()
    assert argo_host.wait_all([client], timeout=60) == [ShutdownReason.poweroff], \
        argo_host.describe()
    assert argo_host.result(client_id, "argoecho") == "PASS", argo_host.describe()
    client.destroy()
    assert argo_host.wait_all([server], timeout=60) == [ShutdownReason.poweroff], \
        argo_host.describe()
    assert argo_host.result(server_id, "argoecho") == "PASS", argo_host.describe()


@pytest.mark.kvm
def test_argo_wildcard_ring(argo_host: Host) -> None:
    recv_id = argo_host.hv.allocate_domid()
    send_ids = [argo_host.hv.allocate_domid() for _ in range(3)]
    peers = ",".join(str(i) for i in send_ids)
    recv = argo_host.build("argowild", f"role=recv senders=3 n=40 peers={peers} ringlen=512",
                           domid=recv_id)
    senders = [argo_host.build("argowild", f"role=send peer={recv_id} n=40", domid=i)
               for i in send_ids]
    _run(argo_host, [(recv, "argowild"), *((s, "argowild") for s in senders)])


@pytest.mark.kvm
def test_argo_full_ring_back_pressure(argo_host: Host) -> None:
    recv_id = argo_host.hv.allocate_domid()
    send_id = argo_host.hv.allocate_domid()
    recv = argo_host.build("argofull", f"role=recv peer={send_id} n=200 ringlen=256 delay_ms=2",
                           domid=recv_id)
    send = argo_host.build("argofull", f"role=send peer={recv_id} n=200", domid=send_id)
    _run(argo_host, [(recv, "argofull"), (send, "argofull")])


@pytest.mark.kvm
def test_argo_notify_exactness(argo_host: Host) -> None:
    domid = argo_host.hv.allocate_domid()
    d = argo_host.build("argonotify", f"domid={domid}", domid=domid)
    _run(argo_host, [(d, "argonotify")])


@pytest.mark.kvm
def test_argo_without_mac_permissive() -> None:
    host = Host(argo=ArgoConfig(enabled=True, mac_permissive=False))
    try:
        domid = host.hv.allocate_domid()
        d = host.build("argonotify", f"domid={domid} mac=0", domid=domid)
        _run(host, [(d, "argonotify")])
    finally:
        host.close()


@pytest.mark.kvm
def test_argo_disabled() -> None:
    host = Host(argo=ArgoConfig(enabled=False))
    try:
        d = host.build("argonotify", "expect=disabled")
        _run(host, [(d, "argonotify")])
    finally:
        host.close()


@pytest.mark.kvm
def test_argo_hostile_beside_an_echo_pair(argo_host: Host) -> None:
    pair = _echo_pair(argo_host, n=100, size=64)
    server = pair[0][0]
    bad = argo_host.build("argohostile", f"victim={server.domid}")
    _run(argo_host, [*pair, (bad, "argohostile")], timeout=180)


@pytest.mark.kvm
@pytest.mark.parametrize("mode", ["stream", "rtt"])
def test_argo_bench(argo_host: Host, mode: str) -> None:
    recv_id = argo_host.hv.allocate_domid()
    send_id = argo_host.hv.allocate_domid()
    common = f"mode={mode} size=64 count=300 ringlen=16384"
    recv = argo_host.build("argobench", f"role=recv peer={send_id} {common}", domid=recv_id)
    send = argo_host.build("argobench", f"role=send peer={recv_id} {common}", domid=send_id)
    _run(argo_host, [(recv, "argobench"), (send, "argobench")])
    want = "first_ns=" if mode == "stream" else "median_ns="
    assert want in argo_host.output()
