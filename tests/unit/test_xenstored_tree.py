"""Basic node operations of xenstored: read, write, mkdir, rm, directory,
paths, and the wire encoding of errors."""

from __future__ import annotations

import pytest
from test_xenstored_harness import Client, XsError

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.core import Xenstore


@pytest.fixture
def c() -> Client:
    return Client(Xenstore())


def test_initial_nodes_are_those_c_xenstored_creates(c: Client) -> None:
    assert c.directory("/") == ["tool"]
    assert c.directory("/tool") == ["xenstored"]
    assert c.get_perms("/") == ["n0"]
    assert c.read("/tool/xenstored") == b""


def test_write_creates_missing_parents_and_keeps_binary_values(c: Client) -> None:
    c.write("/a/b/c", b"\x00\xffbin\n")
    assert c.read("/a/b/c") == b"\x00\xffbin\n"
    assert c.read("/a/b") == b""
    assert c.directory("/") == ["tool", "a"]
    c.write("/a/b/c", "new")
    assert c.read("/a/b/c") == b"new"


def test_directory_lists_children_in_creation_order(c: Client) -> None:
    for name in ("zeta", "alpha", "mid"):
        c.write(f"/d/{name}", "")
    assert c.directory("/d") == ["zeta", "alpha", "mid"]


def test_mkdir_of_existing_node_keeps_its_value(c: Client) -> None:
    c.write("/m", "v")
    c.mkdir("/m")
    assert c.read("/m") == b"v"
    c.mkdir("/m/n/o")
    assert c.directory("/m/n") == ["o"]


def test_rm_is_recursive_and_absent_node_with_parent_is_fine(c: Client) -> None:
    c.write("/r/a/b", "1")
    c.write("/r/c", "2")
    c.rm("/r/a")
    assert c.directory("/r") == ["c"]
    with pytest.raises(XsError, match="ENOENT"):
        c.read("/r/a/b")
    c.rm("/r/absent")
    with pytest.raises(XsError, match="ENOENT"):
        c.rm("/no/parent")
    with pytest.raises(XsError, match="EINVAL"):
        c.rm("/")


@pytest.mark.parametrize("path", ["", "/a/", "/a//b", "/a b", "/ä", "@foo", "/" + "x" * 3072])
def test_invalid_paths_are_einval(c: Client, path: str) -> None:
    with pytest.raises(XsError, match="EINVAL"):
        c.request(T.WRITE, path.encode("latin-1") + b"\0v")


def test_longest_absolute_path_is_accepted(c: Client) -> None:
    path = "/" + "x" * 3071
    c.write(path, "ok")
    assert c.read(path) == b"ok"


def test_relative_paths_are_under_the_callers_home(c: Client) -> None:
    c.write("rel/x", "1")
    assert c.read("/local/domain/0/rel/x") == b"1"
    guest = Client(c.xs, 7)
    c.write("/local/domain/7", "")
    c.set_perms("/local/domain/7", "n7")
    guest.write("data", "g")
    assert c.read("/local/domain/7/data") == b"g"


def test_argument_count_errors(c: Client) -> None:
    with pytest.raises(XsError, match="EINVAL"):
        c.request(T.READ, b"/tool")  # no NUL
    with pytest.raises(XsError, match="EINVAL"):
        c.request(T.READ, b"/tool\0extra\0")
    with pytest.raises(XsError, match="EINVAL"):
        c.request(T.WRITE, b"no-nul-at-all")


def test_unknown_and_reply_only_types_are_enosys(c: Client) -> None:
    for t in (T.WATCH_EVENT, T.ERROR, 20, T.TYPE_COUNT, 0xFFFF):
        with pytest.raises(XsError, match="ENOSYS"):
            c.request(t, b"")


def test_reply_over_payload_max_is_e2big(c: Client) -> None:
    for i in range(300):
        c.mkdir(f"/big/child-with-a-long-name-{i:04d}")
    with pytest.raises(XsError, match="E2BIG"):
        c.directory("/big")


def test_untranslatable_error_is_sent_as_einval(c: Client) -> None:
    # An unprivileged owner may not give its node away: C xenstored's EPERM,
    # which xsd_errors cannot carry.
    c.write("/local/domain/3/x", "")
    c.set_perms("/local/domain/3/x", "b3")
    guest = Client(c.xs, 3)
    with pytest.raises(XsError) as err:
        guest.set_perms("/local/domain/3/x", "b4")
    assert err.value.name == "EINVAL"


def test_get_domain_path(c: Client) -> None:
    assert c.request(T.GET_DOMAIN_PATH, b"12\0") == b"/local/domain/12\0"
    assert c.request(T.GET_DOMAIN_PATH, b"junk\0") == b"/local/domain/0\0"
    assert c.request(T.GET_DOMAIN_PATH, b"-1\0") == b"/local/domain/4294967295\0"
