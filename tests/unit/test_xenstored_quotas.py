"""Quotas with C xenstored 4.12's defaults; domain 0 is exempt."""

from __future__ import annotations

import pytest
from test_xenstored_harness import Client, XsError

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.core import Xenstore
from pyxen.services.xenstored.quotas import DEFAULT_QUOTAS


def guest_home(domid: int = 5) -> tuple[Client, Client]:
    dom0 = Client(Xenstore())
    dom0.write(f"/local/domain/{domid}", "")
    dom0.set_perms(f"/local/domain/{domid}", f"n{domid}")
    return dom0, Client(dom0.xs, domid)


def test_defaults_are_c_xenstoreds() -> None:
    q = DEFAULT_QUOTAS
    assert (q.entries_per_domain, q.max_entry_size, q.watches_per_domain,
            q.transactions_per_connection, q.perms_per_node) == (1000, 2048, 128, 10, 5)


def test_entries_per_domain() -> None:
    dom0, guest = guest_home()
    # The guest owns its home; spread the nodes so no child list is too big.
    for i in range(999):
        guest.write(f"d{i // 100}/{i % 100}", "")  # creates 10 directories too
        if guest.xs.tree.owned_by(5) >= 1000:
            break
    assert guest.xs.tree.owned_by(5) == 1000
    with pytest.raises(XsError, match="ENOSPC"):
        guest.write("one-more", "")
    # Creating a node and its missing parents is all or nothing.
    with pytest.raises(XsError, match="ENOSPC"):
        guest.write("x/y/z", "")
    with pytest.raises(XsError, match="ENOENT"):
        dom0.read("/local/domain/5/x")
    guest.rm("d0/0")
    guest.write("fits-again", "")
    for i in range(2000):  # dom0 is exempt
        dom0.write(f"/dom0/d{i // 100}/{i % 100}", "")


def test_entry_size() -> None:
    dom0, guest = guest_home()
    # Record: 24 header + 8 per permission + value + child names.
    guest.write("v", b"x" * (2048 - 24 - 8 - 1))
    with pytest.raises(XsError, match="ENOSPC"):
        guest.write("v", b"x" * (2048 - 24 - 8))
    assert len(guest.read("v")) == 2048 - 24 - 8 - 1
    dom0.write("/local/domain/5/v", b"x" * 4000)  # dom0 is exempt


def test_child_list_counts_towards_the_parents_size() -> None:
    _, guest = guest_home()
    names = [f"child-{i:03d}-{'p' * 40}" for i in range(60)]
    with pytest.raises(XsError, match="ENOSPC"):
        for n in names:
            guest.write(f"dir/{n}", "")
    assert guest.xs.tree.nodes["/local/domain/5/dir"].record_size() < 2048


def test_watches_per_domain() -> None:
    _, guest = guest_home()
    # C checks "count > quota" before adding: 129 fit.
    for i in range(129):
        guest.watch(f"w{i}", "t")
    with pytest.raises(XsError, match="E2BIG"):
        guest.watch("one-more", "t")
    guest.unwatch("w0", "t")
    guest.watch("one-more", "t")


def test_perms_per_node() -> None:
    _, guest = guest_home()
    guest.write("p", "")
    guest.set_perms("p", "n5", "r1", "r2", "r3", "r4")
    with pytest.raises(XsError, match="ENOSPC"):
        guest.set_perms("p", "n5", "r1", "r2", "r3", "r4", "r6")


def test_oversized_request_payload_is_a_protocol_error() -> None:
    from pyxen.services.xenstored.errors import ProtocolError
    from pyxen.services.xenstored.wire import HEADER, MessageReader

    reader = MessageReader()
    with pytest.raises(ProtocolError):
        reader.feed(HEADER.pack(T.WRITE, 1, 0, 4097))
    with pytest.raises(ProtocolError):
        reader.feed(b"anything")  # out of sync for good
