"""Transactions: snapshot isolation, commit and abort, EAGAIN on conflict,
events on commit only, tx id errors and the transaction quota."""

from __future__ import annotations

import pytest
from test_xenstored_harness import Client, XsError

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.core import Xenstore
from pyxen.services.xenstored.quotas import Quotas


@pytest.fixture
def c() -> Client:
    xs = Xenstore()
    client = Client(xs)
    client.write("/t/a", "1")
    client.write("/t/b", "2")
    return client


def test_transaction_sees_a_snapshot_and_its_own_writes(c: Client) -> None:
    tx = c.start()
    c.write("/t/a", "tx", tx)
    assert c.read("/t/a", tx) == b"tx"
    assert c.read("/t/a") == b"1"  # invisible outside until commit
    Client(c.xs).write("/t/new", "outside")
    with pytest.raises(XsError, match="ENOENT"):
        c.read("/t/new", tx)
    assert c.directory("/t", tx) == ["a", "b"]


def test_commit_applies_and_abort_discards(c: Client) -> None:
    tx = c.start()
    c.write("/t/a", "committed", tx)
    c.rm("/t/b", tx)
    c.write("/t/c/d", "new", tx)
    c.end(tx)
    assert c.read("/t/a") == b"committed"
    assert c.directory("/t") == ["a", "c"]
    tx = c.start()
    c.write("/t/a", "aborted", tx)
    c.end(tx, commit=False)
    assert c.read("/t/a") == b"committed"


@pytest.mark.parametrize("change", ["write", "rm", "create-sibling"])
def test_conflict_on_a_node_read_is_eagain(c: Client, change: str) -> None:
    other = Client(c.xs)
    tx = c.start()
    assert c.directory("/t", tx) == ["a", "b"]
    c.read("/t/a", tx)
    c.write("/t/x", "mine", tx)
    if change == "write":
        other.write("/t/a", "other")
    elif change == "rm":
        other.rm("/t/a")
    else:
        other.write("/t/sibling", "")
    with pytest.raises(XsError, match="EAGAIN"):
        c.end(tx)
    with pytest.raises(XsError, match="ENOENT"):
        c.read("/t/x")
    with pytest.raises(XsError, match="ENOENT"):  # the transaction is gone
        c.read("/t/a", tx)


def test_conflict_on_a_node_read_as_absent(c: Client) -> None:
    tx = c.start()
    with pytest.raises(XsError, match="ENOENT"):
        c.read("/t/ghost", tx)
    Client(c.xs).write("/t/ghost", "boo")
    with pytest.raises(XsError, match="EAGAIN"):
        c.end(tx)


def test_unrelated_change_does_not_conflict(c: Client) -> None:
    tx = c.start()
    c.write("/t/a", "tx", tx)
    Client(c.xs).write("/elsewhere", "x")
    c.end(tx)
    assert c.read("/t/a") == b"tx"


def test_second_of_two_interfering_transactions_fails(c: Client) -> None:
    other = Client(c.xs)
    t1 = c.start()
    t2 = other.start()
    c.read("/t/a", t1)
    other.read("/t/b", t2)
    c.write("/t/b", "from-1", t1)
    other.write("/t/a", "from-2", t2)
    c.end(t1)
    with pytest.raises(XsError, match="EAGAIN"):
        other.end(t2)
    assert (c.read("/t/a"), c.read("/t/b")) == (b"1", b"from-1")


def test_watch_events_only_on_commit(c: Client) -> None:
    watcher = Client(c.xs)
    watcher.watch("/t/a", "w")
    watcher.poll_events()
    tx = c.start()
    c.write("/t/a", "x", tx)
    assert watcher.poll_events() == []
    c.end(tx)
    assert watcher.poll_events() == [("/t/a", "w")]
    tx = c.start()
    c.write("/t/a", "y", tx)
    c.end(tx, commit=False)
    assert watcher.poll_events() == []


def test_transaction_id_errors(c: Client) -> None:
    with pytest.raises(XsError, match="ENOENT"):
        c.read("/t/a", tx=999)
    with pytest.raises(XsError, match="ENOENT"):
        c.request(T.TRANSACTION_END, b"T\0")
    tx = c.start()
    with pytest.raises(XsError, match="EBUSY"):
        c.request(T.TRANSACTION_START, b"\0", tx)
    with pytest.raises(XsError, match="EINVAL"):
        c.request(T.TRANSACTION_END, b"X\0", tx)
    assert tx != 0 and c.start() != tx


def test_transactions_are_per_connection(c: Client) -> None:
    tx = c.start()
    with pytest.raises(XsError, match="ENOENT"):
        Client(c.xs).read("/t/a", tx)


def test_transaction_quota_for_guests_only(c: Client) -> None:
    guest = Client(c.xs, 5)
    # C xenstored checks "started > quota": quota + 1 may be open.
    for _ in range(11):
        guest.start()
    with pytest.raises(XsError, match="ENOSPC"):
        guest.start()
    for _ in range(50):
        c.start()


def test_entries_quota_checked_at_commit() -> None:
    c = Client(Xenstore(quotas=Quotas(entries_per_domain=10)))
    for home in ("/local/domain/5", "/other5"):
        c.write(home, "")
        c.set_perms(home, "n5")
    guest = Client(c.xs, 5)
    tx = guest.start()
    for i in range(8):  # 2 owned + 8 = the quota
        guest.write(f"n{i}", "", tx)
    guest.write("/other5/x", "")  # meanwhile, outside the transaction
    with pytest.raises(XsError, match="ENOSPC"):
        guest.end(tx)
    with pytest.raises(XsError, match="ENOENT"):
        c.read("/local/domain/5/n0")


def test_start_copies_nothing_and_keeps_only_needed_versions() -> None:
    # Copy-on-write: a transaction over a 10,000-node store holds no copy of
    # the node map, and the store keeps one old record per path changed
    # while it is open (fails with the old design, which copied the map).
    xs = Xenstore()
    c = Client(xs)
    for i in range(10_000):
        xs.tree.put(f"/n{i}", xs.tree.nodes["/tool"])
    tx = c.start()
    view = c.conn.transactions[tx].tree
    held = sum(len(v) for v in vars(view).values() if isinstance(v, (dict, set, list)))
    assert held == 0
    for i in range(3):
        c.write("/n1", f"v{i}")  # three changes of one path outside
    c.write("/n2", "x")
    assert len(xs.tree.history) == 2  # one version per changed path
    assert c.read("/n1", tx) == b""  # the transaction still sees the start
    c.end(tx, commit=False)
    assert len(xs.tree.history) == 0  # nobody needs the versions any more


def test_overlapping_transactions_each_see_their_start(c: Client) -> None:
    first = c.start()
    c.write("/t/a", "after-first")
    c.rm("/t/b")
    second = c.start()
    c.write("/t/a", "after-second")
    c.write("/t/b", "back")
    assert c.read("/t/a", first) == b"1"
    assert c.read("/t/b", first) == b"2"
    assert c.read("/t/a", second) == b"after-first"
    with pytest.raises(XsError, match="ENOENT"):
        c.read("/t/b", second)
    c.end(first, commit=False)
    assert c.read("/t/a", second) == b"after-first"  # trimming kept its versions
    with pytest.raises(XsError, match="EAGAIN"):
        c.end(second)
    assert len(c.xs.tree.history) == 0
