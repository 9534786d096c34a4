"""--state: the tree, the introduced domains and the special permissions
survive a save/load round trip; bad files are refused with a reason."""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path

import pytest
from test_xenstored_harness import Client

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.cli import build
from pyxen.services.xenstored.core import Xenstore
from pyxen.services.xenstored.domains import DomainChannel
from pyxen.services.xenstored.guest import GuestConnection
from pyxen.services.xenstored.persistence import StateError, load, save
from pyxen.services.xenstored.server import Server


def test_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "state"
    c = Client(Xenstore())
    c.write("/a/b", b"\x00\xff\x80 binary")
    c.write("/a/c", "text")
    c.set_perms("/a/c", "r5", "b7")
    c.set_perms("@releaseDomain", "n0", "r9")
    c.request(T.INTRODUCE, b"9\x00777\x003\0")
    save(str(state), c.xs)
    assert not (tmp_path / "state.tmp").exists()

    introduced: list[tuple[int, int, int]] = []

    def hook(domid: int, mfn: int, evtchn: int) -> DomainChannel | None:
        introduced.append((domid, mfn, evtchn))
        return None

    xs2 = build(str(state), hook)
    c2 = Client(xs2)
    c2.watch("@introduceDomain", "i")
    assert c2.read("/a/b") == b"\x00\xff\x80 binary"
    assert c2.get_perms("/a/c") == ["r5", "b7"]
    assert c2.directory("/") == ["tool", "a"]
    assert c2.directory("/a") == ["b", "c"]
    assert introduced == [(9, 777, 3)]
    assert c2.request(T.IS_DOMAIN_INTRODUCED, b"9\0") == b"T\0"
    assert xs2.special_perms["@releaseDomain"] == c.xs.special_perms["@releaseDomain"]
    assert xs2.tree.nodes == c.xs.tree.nodes
    # Generations keep increasing after a restart.
    c2.write("/a/d", "")
    assert xs2.tree.nodes["/a/d"].generation > max(n.generation for n in c.xs.tree.nodes.values())
    assert not xs2.dirty or xs2.tree.dirty


@pytest.mark.parametrize("content", [
    "not json", "{}", '{"format": 1}',
    '{"format": 1, "generation": 3, "nodes": {}}',
    '{"format": 1, "generation": 3, "nodes": {"/": {"value": "", "perms": ["n0"], '
    '"children": ["gone"], "generation": 1}}}',
    '{"format": 1, "generation": 3, "nodes": {"/": {"value": "", "perms": ["q0"], '
    '"children": [], "generation": 1}}}',
])
def test_bad_state_files_are_refused(tmp_path: Path, content: str) -> None:
    state = tmp_path / "state"
    state.write_text(content)
    with pytest.raises(StateError, match=str(state)):
        load(str(state))


def test_orphans_are_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    save(str(state), Xenstore())
    raw = json.loads(state.read_text())
    raw["nodes"]["/orphan"] = {"value": "", "perms": ["n0"], "children": [], "generation": 9}
    state.write_text(json.dumps(raw))
    with pytest.raises(StateError, match="unreachable"):
        load(str(state))


def test_missing_state_file_starts_empty(tmp_path: Path) -> None:
    xs = build(str(tmp_path / "absent"))
    assert Client(xs).directory("/") == ["tool"]


def test_restored_rings_are_served(tmp_path: Path) -> None:
    """A domain restored from the state file gets its ring attached before
    the event loop exists; the loop must still watch its event fd."""
    state = tmp_path / "state"
    c = Client(Xenstore())
    c.request(T.INTRODUCE, b"4\x00100\x001\0")
    save(str(state), c.xs)
    page = mmap.mmap(-1, 4096)
    fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    try:
        xs = build(str(state), lambda d, m, e: DomainChannel(memoryview(page), lambda: None, fd))
        server = Server(xs, str(tmp_path / "socket"))
        guest = xs.domains[4].connection
        assert isinstance(guest, GuestConnection)
        assert server.selector.get_key(fd).data is guest
        assert guest in server.busy
        server.selector.close()
    finally:
        os.close(fd)
