"""--state: the tree, the introduced domains and the special permissions
survive a save/load round trip; bad files are refused with a reason."""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_xenstored_harness import Client

from pyxen.abi.xs_wire import XsdSockmsgType as T
from pyxen.services.xenstored.cli import build
from pyxen.services.xenstored.core import Xenstore
from pyxen.services.xenstored.domains import DomainChannel
from pyxen.services.xenstored.guest import GuestConnection
from pyxen.services.xenstored.persistence import (
    COMPACT_MIN,
    StateError,
    StateJournal,
    _children_delta,
    load,
    save,
)
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


def _big_store(n: int) -> Xenstore:
    xs = Xenstore()
    c = Client(xs)
    for i in range(n // 100):
        for j in range(100):
            c.write(f"/local/domain/{i}/key{j}", "some value")
    return xs


def test_a_change_appends_to_the_journal_instead_of_rewriting_the_store(
        tmp_path: Path) -> None:
    # Work per change at 10,000 nodes: the old code rewrote the whole state
    # file (~1 MB, a new inode) on every save; now one journal line is added.
    state = tmp_path / "state"
    xs = _big_store(10_000)
    server = Server(xs, str(tmp_path / "socket"), str(state))
    try:
        server._save()  # the first save of a process is a snapshot
        snapshot = state.stat()
        assert snapshot.st_size > 500_000
        journal = Path(f"{state}.journal")
        journal_size = journal.stat().st_size if journal.exists() else 0
        c = Client(xs)
        for i in range(10):
            c.write(f"/local/domain/3/key{i}", f"changed {i}")
            server._save()
        after = state.stat()
        assert (after.st_ino, after.st_mtime_ns) == (snapshot.st_ino, snapshot.st_mtime_ns)
        assert journal.stat().st_size - journal_size < 10 * 400
    finally:
        server.selector.close()
    restored = build(str(state))
    assert restored.tree.nodes == xs.tree.nodes
    assert Client(restored).read("/local/domain/3/key9") == b"changed 9"


def test_journal_replay_compaction_and_damage(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    journal = StateJournal(state)
    c = Client(Xenstore())
    c.write("/a/b", "1")
    journal.save(c.xs)
    c.xs.mark_clean()
    c.write("/a/c", b"\x00\xff")
    c.rm("/a/b")
    c.set_perms("@introduceDomain", "r3")
    c.request(T.INTRODUCE, b"9\x00777\x003\0")
    journal.save(c.xs)
    c.xs.mark_clean()
    xs2 = build(state)
    assert xs2.tree.nodes == c.xs.tree.nodes
    assert 9 in xs2.domains
    assert xs2.special_perms["@introduceDomain"] == c.xs.special_perms["@introduceDomain"]
    assert xs2.tree.counter.value == c.xs.tree.counter.value

    # A line torn by the process dying mid-append is ignored ...
    with open(f"{state}.journal", "a") as f:
        f.write('{"generation": 99, "nod')
    assert build(state).tree.nodes == c.xs.tree.nodes
    # ... a damaged complete line is refused.
    with open(f"{state}.journal", "a") as f:
        f.write("es\n")
    with pytest.raises(StateError, match=r"journal: line 3"):
        load(state)

    # Compaction: past the snapshot's size (and COMPACT_MIN) the next save
    # writes a new snapshot and an empty journal of the next epoch; the old
    # journal, had it survived, would be stale and ignored.
    stale = Path(f"{state}.journal").read_text()
    journal.journal_size = COMPACT_MIN + 1
    c.write("/a/d", "4")
    journal.save(c.xs)
    assert json.loads(Path(state).read_text())["epoch"] == 2
    assert Path(f"{state}.journal").read_text().count("\n") == 1
    assert build(state).tree.nodes == c.xs.tree.nodes
    Path(f"{state}.journal").write_text(stale)  # epoch 1 next to snapshot 2
    assert build(state).tree.nodes == c.xs.tree.nodes


def test_a_journal_line_carries_only_the_domains_that_changed(tmp_path: Path) -> None:
    """With hundreds of domains, the whole table in a line made each introduction
    O(domains) to save (and the journal, and so its compactions, quadratic)."""
    state = str(tmp_path / "state")
    journal = StateJournal(state)
    c = Client(Xenstore())
    c.request(T.INTRODUCE, b"8\x00555\x002\0")
    journal.save(c.xs)  # the snapshot
    c.xs.mark_clean()
    c.request(T.INTRODUCE, b"9\x00777\x003\0")
    journal.save(c.xs)
    c.xs.mark_clean()
    c.write("/a/e", "5")
    journal.save(c.xs)
    c.xs.mark_clean()
    lines = [json.loads(line) for line in Path(f"{state}.journal").read_text().splitlines()[1:]]
    assert [line.get("domain_changes") for line in lines] == [
        {"9": {"mfn": 777, "evtchn": 3}}, None]
    assert {domid: (d.mfn, d.evtchn) for domid, d in build(state).domains.items()} == {
        0: (0, 0), 8: (555, 2), 9: (777, 3)}
    c.request(T.RELEASE, b"9\0")
    journal.save(c.xs)
    c.xs.mark_clean()
    assert 9 not in build(state).domains


def test_a_journal_of_whole_domain_tables_still_loads(tmp_path: Path) -> None:
    """Journals written before the per-domain records carried the whole table in
    the lines where it changed: a restarted xenstored reads them as before."""
    state = tmp_path / "state"
    c = Client(Xenstore())
    save(str(state), c.xs, epoch=3)
    record = {"generation": c.xs.tree.counter.value, "nodes": {}, "special_perms": {},
              "domains": [{"domid": 4, "mfn": 40, "evtchn": 5}]}
    later = {"generation": c.xs.tree.counter.value, "nodes": {}, "special_perms": {},
             "domain_changes": {"6": {"mfn": 60, "evtchn": 7}}}
    state.with_name("state.journal").write_text(
        json.dumps({"format": 1, "epoch": 3}) + "\n" + json.dumps(record) + "\n"
        + json.dumps(later) + "\n")
    assert sorted(build(str(state)).domains) == [0, 4, 6]


@pytest.mark.parametrize("changes", ['"x"', '[1, 2]', '{"a": {"mfn": 1, "evtchn": 2}}',
                                     '{"5": {"mfn": "x", "evtchn": 2}}', '{"5": 7}',
                                     '{"5": {"evtchn": 2}}'])
def test_a_malformed_domain_record_in_the_journal_is_refused(tmp_path: Path,
                                                             changes: str) -> None:
    state = tmp_path / "state"
    save(str(state), Xenstore(), epoch=1)
    state.with_name("state.journal").write_text(
        '{"format": 1, "epoch": 1}\n{"generation": 1, "nodes": {}, "special_perms": {}, '
        f'"domain_changes": {changes}}}\n')
    with pytest.raises(StateError, match="malformed"):
        load(str(state))


def _journal_lines(state: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in Path(f"{state}.journal").read_text().splitlines()[1:]]


def test_a_big_directory_is_journalled_as_child_deltas(tmp_path: Path) -> None:
    """Creating or destroying a domain changes /local/domain's child list; with
    thousands of domains its whole list in every line made each save O(domains)."""
    state = str(tmp_path / "state")
    journal = StateJournal(state)
    c = Client(Xenstore())
    for i in range(1, 200):
        c.write(f"/local/domain/{i}/name", f"d{i}")
    journal.save(c.xs)  # the snapshot
    c.xs.mark_clean()
    c.write("/local/domain/500/name", "new")  # appended
    journal.save(c.xs)
    c.xs.mark_clean()
    c.rm("/local/domain/7")  # removed from the middle
    c.rm("/local/domain/150")
    c.write("/local/domain/7/name", "again")  # and back, at the end
    journal.save(c.xs)
    c.xs.mark_clean()
    c.write("/local/domain", "a value")  # the node changes, its children do not
    journal.save(c.xs)
    c.xs.mark_clean()
    deltas = [line["nodes"]["/local/domain"] for line in _journal_lines(state)]  # type: ignore[index]
    assert [d.get("children_delta") for d in deltas] == [
        {"removed": [], "added": ["500"]},
        {"removed": ["7", "150"], "added": ["7"]},
        {"removed": [], "added": []}]
    assert all("children" not in d for d in deltas)
    assert max(len(line) for line in Path(f"{state}.journal").read_text().splitlines()) < 1000
    restored = build(state)
    assert restored.tree.nodes == c.xs.tree.nodes  # the order of the children included
    assert restored.tree.nodes["/local/domain"].children[-2:] == ("500", "7")


def test_a_small_directory_or_a_big_change_is_journalled_whole(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    journal = StateJournal(state)
    c = Client(Xenstore())
    for i in range(100):
        c.write(f"/big/{i}", "")
    c.write("/small/a", "")
    journal.save(c.xs)
    c.xs.mark_clean()
    c.write("/small/b", "")  # few children: no delta
    for i in range(100, 300):  # more added than the list keeps: whole
        c.write(f"/big/{i}", "")
    journal.save(c.xs)
    c.xs.mark_clean()
    nodes = _journal_lines(state)[0]["nodes"]
    assert nodes["/small"]["children"] == ["a", "b"]  # type: ignore[index]
    assert len(nodes["/big"]["children"]) == 300  # type: ignore[index]
    assert build(state).tree.nodes == c.xs.tree.nodes


def _journal_with_node_record(state: Path, path: str, delta: object) -> None:
    save(str(state), Xenstore(), epoch=1)
    record = {"value": "", "perms": ["n0"], "generation": 0, "children_delta": delta}
    line = {"generation": 1, "special_perms": {}, "nodes": {path: record}}
    state.with_name("state.journal").write_text(
        json.dumps({"format": 1, "epoch": 1}) + "\n" + json.dumps(line) + "\n")


@pytest.mark.parametrize("delta", ["x", {"removed": []}, {"removed": [1], "added": []},
                                   {"removed": [], "added": "ab"}])
def test_a_malformed_child_delta_is_refused(tmp_path: Path, delta: object) -> None:
    _journal_with_node_record(tmp_path / "state", "/", delta)
    with pytest.raises(StateError, match="child delta"):
        load(str(tmp_path / "state"))


def test_a_child_delta_of_a_missing_node_or_to_a_missing_child_is_refused(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    ghost = {"removed": [], "added": ["ghost"]}
    _journal_with_node_record(state, "/nothere", ghost)
    with pytest.raises(StateError, match="does not exist"):
        load(str(state))
    _journal_with_node_record(state, "/", ghost)
    with pytest.raises(StateError, match="bad child"):
        load(str(state))


@given(st.lists(st.integers(0, 300), unique=True, max_size=150),
       st.lists(st.integers(0, 300), unique=True, max_size=150),
       st.lists(st.integers(0, 300), unique=True, max_size=20))
def test_a_child_delta_always_gives_the_new_list(before_ids: list[int], kept_ids: list[int],
                                                 added_ids: list[int]) -> None:
    """Random lists and the usual changes (removals anywhere, names appended, some
    removed and appended again): a delta, when there is one, rebuilds the list."""
    before = tuple(str(i) for i in before_ids)
    keep = {str(i) for i in kept_ids}
    after = tuple(c for c in before if c in keep)
    after += tuple(c for c in (str(i) for i in added_ids) if c not in after)
    for new in (after, tuple(reversed(after))):  # also a reordering: None or right
        delta = _children_delta(before, new)
        if delta is None:
            continue
        gone = set(delta["removed"])
        assert tuple(c for c in before if c not in gone) + tuple(delta["added"]) == new
