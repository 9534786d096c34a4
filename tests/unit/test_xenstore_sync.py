"""control/xenstore_sync.py: a domain that ends while it is being introduced.

The race is between a guest vCPU powering off and the reconcile thread's
INTRODUCE, a window of a few milliseconds that a real guest hits only now and
then; here the xenstore client ends the domain inside ``introduce`` (as the
guest would), so the interleaving is the same every run.  Everything else is
the real XenstoreSync.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pyxen.abi.hvm import HvmParam
from pyxen.abi.xs_wire import XsdSockmsgType
from pyxen.control.protocol import ControlError
from pyxen.control.xenstore import WriteBatch, XenstoreError
from pyxen.control.xenstore_sync import XenstoreSync


class _Domain:
    def __init__(self, domid: int, xenstore: bool = True) -> None:
        self.domid = domid
        self.name = f"d{domid}"
        self.handle = bytes(16)
        self.params = {i: 0 for i in range(64)}
        if xenstore:  # as the builder sets a domain up (HVM_PARAM_STORE_PFN/_EVTCHN)
            self.params[HvmParam.STORE_PFN] = 0xFEFFC
            self.params[HvmParam.STORE_EVTCHN] = 1
        self.max_pages = self.tot_pages = 4096
        self.shutdown_reason: int | None = None
        self.dying = False
        self.hvm_xenstore: dict[str, str] = {}


class _Managed:
    def __init__(self, domain: _Domain) -> None:
        self.domain = domain
        self.request = SimpleNamespace(disks=(), nics=())


class _Console:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, text: str) -> None:
        self.lines.append(text)


class _Hv:
    def __init__(self) -> None:
        self.console = _Console()


class _Manager:
    def __init__(self, domains: list[_Domain]) -> None:
        self.domains = {d.domid: d for d in domains}
        self.hv = _Hv()
        self.generation = 0  # DomainManager's: bumped when a domain comes or goes

    def domids(self) -> list[int]:
        return sorted(self.domains)

    def live_domains(self) -> dict[int, _Domain]:
        return dict(self.domains)

    def get(self, domid: int) -> _Managed:
        if domid not in self.domains:
            raise ControlError("ESRCH", f"domain {domid} does not exist")
        return _Managed(self.domains[domid])


class _Client:
    """xenstored's side: ``fail`` maps a domid to what happens at its INTRODUCE."""

    def __init__(self, manager: _Manager, fail: dict[int, str]) -> None:
        self.manager, self.fail = manager, fail
        self.introduced: set[int] = set()
        self.released: list[int] = []
        self.asked = 0  # IS_DOMAIN_INTRODUCED requests

    def is_introduced(self, domid: int) -> bool:
        self.asked += 1
        return domid in self.introduced

    def which_introduced(self, domids: list[int]) -> set[int]:
        return {domid for domid in domids if self.is_introduced(domid)}

    def introduce(self, domid: int, mfn: int, evtchn: int) -> None:
        how = self.fail.get(domid)
        if how == "powers off":  # the guest shut down and on_poweroff destroyed it
            self.manager.domains.pop(domid).shutdown_reason = 0
        if how is not None:
            raise XenstoreError("EINVAL", f"introduce {domid}")
        self.introduced.add(domid)

    def release(self, domid: int) -> None:
        self.released.append(domid)
        self.introduced.discard(domid)

    def apply(self, batch: WriteBatch) -> None:  # in order; only RELEASE matters here
        for msg_type, payload, _what, _harmless in batch.messages:
            if msg_type == XsdSockmsgType.RELEASE:
                self.release(int(payload.rstrip(b"\0")))

    def children(self, path: str) -> list[bytes]:  # of /local/domain
        return [str(d).encode() for d in sorted(self.introduced)]

    def __getattr__(self, name: str) -> Any:  # write, mkdir, rm, set_perms, close
        return lambda *args: None


def _sync(manager: _Manager, client: _Client) -> XenstoreSync:
    sync = XenstoreSync(manager, Path("/nonexistent"))  # type: ignore[arg-type]
    sync._client = lambda: client  # type: ignore[method-assign, assignment, return-value]
    return sync


def test_a_domain_gone_before_its_introduction_is_not_an_error() -> None:
    quick, other = _Domain(1), _Domain(2)
    manager = _Manager([quick, other])
    client = _Client(manager, {1: "powers off"})
    _sync(manager, client).reconcile()
    assert manager.hv.console.lines == []
    assert client.introduced == {2}  # the rest of the round went on


def test_an_introduce_failure_of_a_live_domain_is_reported_once_and_retried(
        monkeypatch: Any) -> None:
    """xenstored refusing one domain (it could not map the ring: past 1024 domains
    that was every new one) must not keep the others out, nor fill the log."""
    import pyxen.control.xenstore_sync as xs

    clock = [1000.0]
    monkeypatch.setattr(xs.time, "monotonic", lambda: clock[0])
    manager = _Manager([_Domain(2), _Domain(3), _Domain(4)])
    client = _Client(manager, {3: "refused"})
    sync = _sync(manager, client)
    sync.reconcile()
    assert client.introduced == {2, 4}  # the rest of the round went on
    assert manager.hv.console.lines == [
        "xenstore: d3 is not in xenstore: introduce 3: EINVAL (trying again every 10 s)"]
    for _ in range(5):
        clock[0] += 1
        manager.generation += 1  # other domains come and go
        sync.reconcile()
    assert len(manager.hv.console.lines) == 1 and client.introduced == {2, 4}
    del client.fail[3]  # xenstored can take it now
    clock[0] += xs.FULL_CHECK_SECONDS
    sync.reconcile()
    assert client.introduced == {2, 3, 4} and len(manager.hv.console.lines) == 1


def test_a_domain_without_xenstore_is_not_introduced() -> None:
    """A dom0less domain without xen,enhanced has no store page (STORE_PFN 0)."""
    manager = _Manager([_Domain(4, xenstore=False), _Domain(5)])
    client = _Client(manager, {})
    _sync(manager, client).reconcile()
    assert client.introduced == {5}
    assert manager.hv.console.lines == []


def test_a_round_with_nothing_changed_asks_xenstored_nothing_per_domain(monkeypatch: Any
                                                                        ) -> None:
    """Hundreds of idle domains: the per-second round is one DIRECTORY request until
    the domain list moves, xenstored's listing disagrees, or a full check is due."""
    import pyxen.control.xenstore_sync as xs

    clock = [1000.0]
    monkeypatch.setattr(xs.time, "monotonic", lambda: clock[0])
    manager = _Manager([_Domain(d) for d in range(1, 6)])
    client = _Client(manager, {})
    sync = _sync(manager, client)
    sync.reconcile()
    assert client.introduced == {1, 2, 3, 4, 5} and client.asked == 5
    clock[0] += 1
    sync.reconcile()
    assert client.asked == 5  # nothing moved
    manager.domains[6] = _Domain(6)
    manager.generation += 1
    sync.reconcile()  # asks about the new domain only
    assert client.introduced == {1, 2, 3, 4, 5, 6} and client.asked == 6
    del manager.domains[2]
    manager.generation += 1
    sync.reconcile()  # releases the gone one (a RELEASE in its batch: no question)
    assert client.introduced == {1, 3, 4, 5, 6} and client.asked == 6
    assert client.released == [2]
    client.introduced.discard(3)  # xenstored lost a domain (restarted without it)
    sync.reconcile()
    assert 3 in client.introduced and client.asked == 11
    clock[0] += xs.FULL_CHECK_SECONDS
    sync.reconcile()
    assert client.asked == 16  # the periodic full check


def test_a_domain_id_that_comes_back_as_another_domain_is_introduced_again() -> None:
    manager = _Manager([_Domain(1), _Domain(2)])
    client = _Client(manager, {})
    sync = _sync(manager, client)
    sync.reconcile()
    manager.domains[2] = _Domain(2)  # destroyed and created again between two rounds
    manager.generation += 1
    sync.reconcile()
    assert client.released == [2] and client.introduced == {1, 2}
    assert sync.introduced[2] is manager.domains[2]
