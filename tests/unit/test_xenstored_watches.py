"""Watches: the registration event, events at and below the watched path,
removals, relative paths, special watches, unwatch and reset."""

from __future__ import annotations

import pytest
from test_xenstored_harness import Client, XsError

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.core import Xenstore


@pytest.fixture
def c() -> Client:
    return Client(Xenstore())


def test_watch_fires_once_on_registration_after_the_reply(c: Client) -> None:
    msgs = c.raw(T.WATCH, b"/w\0tok\0")
    assert [m.type for m in msgs] == [T.WATCH, T.WATCH_EVENT]
    assert msgs[1].payload == b"/w\0tok\0"
    assert (msgs[1].req_id, msgs[1].tx_id) == (0, 0)


def test_events_for_writes_at_and_below_not_beside(c: Client) -> None:
    c.watch("/w", "t")
    c.poll_events()
    c.write("/w", "1")
    c.write("/w/a/b", "2")
    c.write("/wx", "3")  # not below /w
    c.write("/other", "4")
    assert c.poll_events() == [("/w", "t"), ("/w/a/b", "t")]


def test_event_goes_to_every_watching_connection(c: Client) -> None:
    other = Client(c.xs)
    other.watch("/w", "o")
    c.watch("/w/x", "c")
    other.poll_events()
    c.poll_events()
    c.write("/w/x", "1")
    assert other.poll_events() == [("/w/x", "o")]
    assert c.poll_events() == [("/w/x", "c")]


def test_removal_reaches_watches_above_and_below(c: Client) -> None:
    c.write("/r/a/b", "1")
    c.watch("/r", "up")
    c.watch("/r/a/b", "down")
    c.watch("/r/a/b/never-existed", "deep")
    c.poll_events()
    c.rm("/r/a")
    assert sorted(c.poll_events()) == [("/r/a", "up"), ("/r/a/b", "down"),
                                       ("/r/a/b/never-existed", "deep")]


def test_mkdir_of_existing_node_fires_nothing(c: Client) -> None:
    c.write("/m", "")
    c.watch("/m", "t")
    c.poll_events()
    c.mkdir("/m")
    assert c.poll_events() == []
    c.set_perms("/m", "r0")
    assert c.poll_events() == [("/m", "t")]


def test_relative_watch_reports_relative_paths(c: Client) -> None:
    c.watch("dev", "rel")
    assert c.poll_events() == [("dev", "rel")]
    c.write("/local/domain/0/dev/vbd", "x")
    c.write("dev", "y")
    assert c.poll_events() == [("dev/vbd", "rel"), ("dev", "rel")]


def test_guest_relative_watch_and_permission_filter(c: Client) -> None:
    c.write("/local/domain/5", "")
    c.set_perms("/local/domain/5", "n0", "r5")
    guest = Client(c.xs, 5)
    guest.watch("data", "g")
    guest.watch("/secret", "s")
    assert guest.poll_events() == [("data", "g"), ("/secret", "s")]
    c.write("/local/domain/5/data/x", "1")
    c.write("/secret/x", "no")  # perms n0: the guest may not know
    assert guest.poll_events() == [("data/x", "g")]


def test_special_watches_introduce_and_release(c: Client) -> None:
    c.watch("@introduceDomain", "i")
    c.watch("@releaseDomain", "r")
    c.poll_events()
    c.request(T.INTRODUCE, b"3\x00100\x005\0")
    assert c.poll_events() == [("@introduceDomain", "i")]
    c.request(T.RELEASE, b"3\0")
    assert c.poll_events() == [("@releaseDomain", "r")]
    c.write("/x", "")
    assert c.poll_events() == []


def test_guests_need_permission_for_special_watches(c: Client) -> None:
    guest = Client(c.xs, 5)
    c.request(T.INTRODUCE, b"5\x001\x001\0")
    guest.watch("@releaseDomain", "r")
    guest.poll_events()
    c.request(T.INTRODUCE, b"6\x001\x001\0")
    c.request(T.RELEASE, b"6\0")
    assert guest.poll_events() == []
    c.set_perms("@releaseDomain", "n0", "r5")
    c.request(T.INTRODUCE, b"6\x001\x001\0")
    c.request(T.RELEASE, b"6\0")
    assert guest.poll_events() == [("@releaseDomain", "r")]


def test_duplicate_watch_and_unwatch(c: Client) -> None:
    c.watch("/w", "t")
    with pytest.raises(XsError, match="EEXIST"):
        c.watch("/w", "t")
    c.watch("/w", "t2")
    c.unwatch("/w", "t")
    with pytest.raises(XsError, match="ENOENT"):
        c.unwatch("/w", "t")
    c.poll_events()
    c.write("/w", "")
    assert c.poll_events() == [("/w", "t2")]


def test_reset_watches_drops_watches_and_transactions(c: Client) -> None:
    c.watch("/w", "t")
    tx = c.start()
    assert c.request(T.RESET_WATCHES, b"") == b"OK\0"
    c.poll_events()
    c.write("/w", "")
    assert c.poll_events() == []
    with pytest.raises(XsError, match="ENOENT"):
        c.read("/tool", tx)


def test_watch_ignores_tx_id_and_checks_arguments(c: Client) -> None:
    assert c.request(T.WATCH, b"/w\0t\0", tx_id=1234) == b"OK\0"
    for bad in (b"/w\0", b"/w\0t\0x\0", b"/w//x\0t\0"):
        with pytest.raises(XsError, match="EINVAL"):
            c.request(T.WATCH, bad)


def test_only_connections_with_watches_are_looked_at(c: Client) -> None:
    """A change looks only at the store's index of watching connections: it follows
    WATCH, UNWATCH of the last watch, RESET_WATCHES and the connection's end."""
    idle = [Client(c.xs) for _ in range(50)]
    assert list(c.xs.watching) == []
    c.watch("/w", "a")
    c.watch("/w", "b")
    idle[3].watch("/w", "i")
    assert list(c.xs.watching) == [c.conn, idle[3].conn]
    c.unwatch("/w", "a")
    assert c.conn in c.xs.watching  # one watch left
    c.unwatch("/w", "b")
    assert list(c.xs.watching) == [idle[3].conn]
    c.watch("/w", "again")
    assert idle[3].request(T.RESET_WATCHES, b"") == b"OK\0"
    assert list(c.xs.watching) == [c.conn]
    for client in (c, *idle):
        client.poll_events()
    c.write("/w", "1")
    assert c.poll_events() == [("/w", "again")]
    assert all(client.poll_events() == [] for client in idle)
    c.xs.remove_connection(c.conn)
    assert list(c.xs.watching) == []
