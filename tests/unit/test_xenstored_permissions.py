"""Permissions: owner, n/r/w/b, ACL entries, inheritance, dom0 privilege."""

from __future__ import annotations

import pytest
from test_xenstored_harness import Client, XsError

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.core import Xenstore
from pyxen.services.xenstored.permissions import READ, WRITE, Caller, Perm, access_for


@pytest.fixture
def dom0() -> Client:
    return Client(Xenstore())


def test_access_rules() -> None:
    perms = (Perm(5, READ), Perm(7, WRITE), Perm(8, 0))
    assert access_for(Caller(5, False), perms) == 7  # owner: all
    assert access_for(Caller(7, False), perms) == WRITE
    assert access_for(Caller(8, False), perms) == 0
    assert access_for(Caller(9, False), perms) == READ  # the default
    assert access_for(Caller(9, False, target=5), perms) == 7  # acts for the owner
    assert access_for(Caller(0, True), ((Perm(5, 0)),)) == 7


def test_default_none_hides_nodes_from_guests(dom0: Client) -> None:
    dom0.write("/secret", "x")
    guest = Client(dom0.xs, 5)
    with pytest.raises(XsError, match="EACCES"):
        guest.read("/secret")
    with pytest.raises(XsError, match="EACCES"):
        guest.write("/secret", "y")
    # An absent node below an unreadable one is EACCES, not ENOENT.
    with pytest.raises(XsError, match="EACCES"):
        guest.read("/secret/absent")


@pytest.mark.parametrize("perm,can_read,can_write", [
    ("n0", False, False), ("r0", True, False), ("w0", False, True), ("b0", True, True)])
def test_default_access_letters(dom0: Client, perm: str, can_read: bool,
                                can_write: bool) -> None:
    dom0.write("/n", "v")
    dom0.set_perms("/n", perm)
    guest = Client(dom0.xs, 5)
    if can_read:
        assert guest.read("/n") == b"v"
    else:
        with pytest.raises(XsError, match="EACCES"):
            guest.read("/n")
    if can_write:
        guest.write("/n", "w")
        assert dom0.read("/n") == b"w"
    else:
        with pytest.raises(XsError, match="EACCES"):
            guest.write("/n", "w")


def test_acl_entry_overrides_default(dom0: Client) -> None:
    dom0.write("/n", "v")
    dom0.set_perms("/n", "r0", "n5", "b6")
    with pytest.raises(XsError, match="EACCES"):
        Client(dom0.xs, 5).read("/n")
    Client(dom0.xs, 6).write("/n", "six")
    assert Client(dom0.xs, 9).read("/n") == b"six"
    assert dom0.get_perms("/n") == ["r0", "n5", "b6"]


def test_created_nodes_inherit_and_unprivileged_creator_owns(dom0: Client) -> None:
    dom0.write("/local/domain/5", "")
    dom0.set_perms("/local/domain/5", "n0", "b5", "r9")
    guest = Client(dom0.xs, 5)
    guest.write("/local/domain/5/a/b", "x")
    assert dom0.get_perms("/local/domain/5/a") == ["n5", "b5", "r9"]
    assert dom0.get_perms("/local/domain/5/a/b") == ["n5", "b5", "r9"]
    # Domain 0 creating keeps the inherited owner.
    dom0.write("/local/domain/5/c", "")
    assert dom0.get_perms("/local/domain/5/c") == ["n0", "b5", "r9"]


def test_owner_may_set_perms_but_not_give_away(dom0: Client) -> None:
    dom0.write("/o", "")
    dom0.set_perms("/o", "n5")
    owner = Client(dom0.xs, 5)
    owner.set_perms("/o", "r5", "b6")
    assert dom0.get_perms("/o") == ["r5", "b6"]
    with pytest.raises(XsError, match="EACCES"):
        Client(dom0.xs, 6).set_perms("/o", "b5")  # write access is not ownership


def test_dom0_may_do_anything(dom0: Client) -> None:
    dom0.write("/x", "")
    dom0.set_perms("/x", "n5")
    dom0.write("/x", "mine")
    dom0.set_perms("/x", "b9")
    dom0.rm("/x")


def test_bad_permission_strings(dom0: Client) -> None:
    dom0.write("/x", "")
    for bad in (b"/x\0", b"/x\0q5\0"):
        with pytest.raises(XsError, match="EINVAL"):
            dom0.request(T.SET_PERMS, bad)
    dom0.request(T.SET_PERMS, b"/x\0r0x10\0")  # strtol(.., 0), as in C
    assert dom0.get_perms("/x") == ["r16"]


def test_privileged_only_operations(dom0: Client) -> None:
    guest = Client(dom0.xs, 5)
    for t, payload in ((T.INTRODUCE, b"6\x001\x002\0"), (T.RELEASE, b"6\0"),
                       (T.IS_DOMAIN_INTRODUCED, b"6\0"), (T.CONTROL, b"check\0"),
                       (T.SET_TARGET, b"5\x006\0"), (T.RESUME, b"6\0")):
        with pytest.raises(XsError, match="EACCES"):
            guest.request(t, payload)


def test_set_target_lets_a_domain_act_as_its_target(dom0: Client) -> None:
    dom0.request(T.INTRODUCE, b"5\x001\x001\0")
    dom0.request(T.INTRODUCE, b"6\x001\x001\0")
    dom0.write("/t", "v")
    dom0.set_perms("/t", "n6")
    dm = dom0.xs.domains[5].connection
    assert dom0.request(T.SET_TARGET, b"5\x006\0") == b"OK\0"
    assert access_for(dm.caller, dom0.xs.tree.nodes["/t"].perms) & READ
