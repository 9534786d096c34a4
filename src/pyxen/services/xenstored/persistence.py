"""Saving and loading xenstored's state (``--state FILE``).

Design: a snapshot plus an append-only journal.  ``FILE`` is a JSON
snapshot; ``FILE.journal`` holds the changes since, one JSON line per save
(the records of the paths rewritten or removed, the generation counter,
the special permissions, which are small, and the records of the domains
introduced, reset or released since the line before).  A save after a change
therefore writes O(records changed), not the whole store
(which it did before: ~1 MB per change at 10,000 nodes).  A node with many
children (``DELTA_MIN_CHILDREN``: /local/domain, /vm) is written in the
journal with ``children_delta`` -- the names removed and the names appended
since the record last written for it -- instead of its whole child list,
when the new list is the old one less some names plus some at the end (how
xenstored changes it); otherwise in full.  So creating or destroying a
domain journals O(1) bytes, not its siblings' names (~80 KB at 2000
domains).  The journal keeps the child lists it last wrote for such nodes
(references to the tree's tuples) to compute the deltas.  When the journal
has grown past :data:`COMPACT_RATIO` times the snapshot's size (and
:data:`COMPACT_MIN` bytes), the next save compacts: a new snapshot, then an
empty journal; each journal byte pays for at most half a snapshot byte, so
the cost stays amortised O(change).

Both files carry an *epoch*: the snapshot's, and the journal's header line.
A journal whose epoch differs from the snapshot's is stale (a compaction
was interrupted after the new snapshot was in place) and is ignored; a
truncated last line (the process died mid-append) is ignored too.  Loading
reads the snapshot and replays the journal.

The snapshot is JSON: the node records (value as a latin-1 string, so any byte
round-trips; permissions as their "r5" strings; children in order; the
generation), the generation counter, the introduced domains (other than
domain 0) with their mfn and event channel, and the permissions of the
special watch names.  Connections, watches and transactions are not saved:
they die with the process, as with C xenstored.

:func:`save` is atomic: it writes ``FILE.tmp`` and renames it over
``FILE``, so a reader (or a restarted xenstored) sees the old or the new
state, never a mix.  It does not fsync: the state survives the death of
the process (SIGKILL included) but not a crash of the host.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import XenstoreError
from .paths import ROOT, is_valid_nodename, join
from .permissions import Perms, parse_perm
from .tree import GenerationCounter, Node, Tree

if TYPE_CHECKING:
    from .core import Xenstore

FORMAT = 1
#: Never compact a journal smaller than this (a small store is cheap to
#: rewrite, but there is no point rewriting it every few changes).
COMPACT_MIN = 64 * 1024
#: Compact once the journal is this many times the snapshot's size.  With 2000
#: domains a compaction rewrites ~10 MB; when creating or destroying a domain
#: journalled ~80 KB (whole child lists, before the deltas), 1x made compaction
#: a quarter of xenstored's time.  2x halves the rewrites, for a load that
#: reads up to 3x.
COMPACT_RATIO = 2
#: Nodes with at least this many children are journalled as child deltas.
DELTA_MIN_CHILDREN = 64


class StateError(Exception):
    """The state file cannot be used; the message says why and where."""


@dataclass
class SavedDomain:
    domid: int
    mfn: int
    evtchn: int


@dataclass
class SavedState:
    tree: Tree
    domains: list[SavedDomain] = field(default_factory=list)
    special_perms: dict[str, Perms] = field(default_factory=dict)


@functools.lru_cache(maxsize=4096)
def _perm_strings(perms: Perms) -> tuple[str, ...]:
    """("n0", "r5") for a node's permissions: cached, since most nodes share a few
    permission tuples and a snapshot of a large store converts every node's."""
    return tuple(str(p) for p in perms)


def _parse_perms(strings: Any, where: str) -> Perms:
    if not isinstance(strings, list) or not strings:
        raise StateError(f"{where}: permissions must be a non-empty list")
    try:
        return tuple(parse_perm(str(s).encode()) for s in strings)
    except XenstoreError as err:
        raise StateError(f"{where}: {err}") from err


def _record(n: Node, children: bool = True) -> dict[str, Any]:
    rec = {"value": n.value.decode("latin-1"), "perms": _perm_strings(n.perms),
           "generation": n.generation}
    if children:
        rec["children"] = list(n.children)
    return rec


def _children_delta(before: tuple[str, ...], after: tuple[str, ...]
                    ) -> dict[str, list[str]] | None:
    """``after`` as ``before`` less some names plus some appended, or None if it is
    not that (or the delta would not be much smaller than the list)."""
    removed: list[str] = []
    if after[:len(before)] == before:  # appended only (or unchanged): the usual case
        kept = len(before)
    else:
        # Match ``after`` against ``before`` in order: the names of ``before`` left
        # over went (a name removed and added again is at the end of ``after``).
        kept = 0
        for c in before:
            if kept < len(after) and after[kept] == c:
                kept += 1
            else:
                removed.append(c)
    added = list(after[kept:])
    if 2 * (len(removed) + len(added)) > len(after):
        return None
    return {"removed": removed, "added": added}


def _domains(xs: Xenstore) -> list[dict[str, int]]:
    return [{"domid": d.domid, "mfn": d.mfn, "evtchn": d.evtchn}
            for d in xs.domains.values() if d.domid != 0]


def _domain_changes(xs: Xenstore) -> dict[str, dict[str, int] | None]:
    """A journal line's domain records: domid -> its record, or None once released."""
    out: dict[str, dict[str, int] | None] = {}
    for domid in sorted(xs.domains_changed - {0}):
        d = xs.domains.get(domid)
        out[str(domid)] = None if d is None else {"mfn": d.mfn, "evtchn": d.evtchn}
    return out


def _special(xs: Xenstore) -> dict[str, tuple[str, ...]]:
    return {k: _perm_strings(v) for k, v in xs.special_perms.items()}


def save(path: str, xs: Xenstore, epoch: int = 0) -> int:
    """Write a snapshot of ``xs`` to ``path`` atomically; returns its size."""
    state = {
        "format": FORMAT,
        "epoch": epoch,
        "generation": xs.tree.counter.value,
        "nodes": {p: _record(n) for p, n in xs.tree.nodes.items()},
        "domains": _domains(xs),
        "special_perms": _special(xs),
    }
    # json.dumps, not json.dump: dump always takes the pure-Python encoder (it
    # streams), dumps the C one, ~4x faster for a store of 50,000 nodes.
    text = json.dumps(state, separators=(",", ":"))
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(text)
    os.replace(tmp, path)
    return len(text)


class StateJournal:
    """Incremental saving to ``path`` (snapshot) and ``path.journal``.

    The first :meth:`save` of a process writes a snapshot (with an epoch
    above the one loaded) and starts a journal; later ones append the
    changes recorded in ``xs.tree.changed``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.journal_path = f"{path}.journal"
        self.epoch: int | None = None  # None until this process's first snapshot
        self.snapshot_size = 0
        self.journal_size = 0
        #: bytes written so far (snapshots and journal), for tests and benches
        self.bytes_written = 0
        # The child lists last written (snapshot or journal) of the nodes with
        # at least DELTA_MIN_CHILDREN children: what their deltas are against.
        self._children: dict[str, tuple[str, ...]] = {}

    def save(self, xs: Xenstore) -> None:
        """Persist what changed since the last save (OSError: try later)."""
        if (self.epoch is None
                or self.journal_size > max(COMPACT_RATIO * self.snapshot_size, COMPACT_MIN)):
            self.compact(xs)
            return
        tree = xs.tree
        batch = {"generation": tree.counter.value,
                 "nodes": {p: self._journal_record(p, tree.nodes.get(p))
                           for p in sorted(tree.changed)},
                 "special_perms": _special(xs)}
        if xs.domains_changed:  # only the domains that came, went or were reset:
            batch["domain_changes"] = _domain_changes(xs)  # the whole table made it O(N)
        line = json.dumps(batch, separators=(",", ":")) + "\n"
        try:
            with open(self.journal_path, "a", encoding="ascii") as f:
                f.write(line)
        except OSError:
            self.epoch = None  # a torn line may be left: compact next time
            raise
        self.journal_size += len(line)
        self.bytes_written += len(line)

    def _journal_record(self, path: str, node: Node | None) -> dict[str, Any] | None:
        """``path``'s journal record (None: removed), its child list as a delta
        where that is shorter."""
        if node is None:
            self._children.pop(path, None)
            return None
        before = self._children.get(path)
        delta = None if before is None else _children_delta(before, node.children)
        rec = _record(node, children=delta is None)
        if delta is not None:
            rec["children_delta"] = delta
        if len(node.children) >= DELTA_MIN_CHILDREN:
            self._children[path] = node.children
        else:
            self._children.pop(path, None)
        return rec

    def compact(self, xs: Xenstore) -> None:
        """A new snapshot, then an empty journal of the same epoch."""
        epoch = (self.epoch if self.epoch is not None else _loaded_epoch(self.path)) + 1
        self._children = {p: n.children for p, n in xs.tree.nodes.items()
                          if len(n.children) >= DELTA_MIN_CHILDREN}
        self.snapshot_size = save(self.path, xs, epoch)
        header = json.dumps({"format": FORMAT, "epoch": epoch}) + "\n"
        tmp = f"{self.journal_path}.tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(header)
        os.replace(tmp, self.journal_path)
        self.epoch = epoch
        self.journal_size = len(header)
        self.bytes_written += self.snapshot_size + len(header)


def _loaded_epoch(path: str) -> int:
    """The epoch of the snapshot at ``path`` (0 if none or unreadable)."""
    try:
        with open(path, encoding="ascii") as f:
            return int(json.load(f).get("epoch", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def load(path: str) -> SavedState:
    """Read a state file written by :func:`save`; StateError if unusable."""
    try:
        with open(path, encoding="ascii") as f:
            raw = json.load(f)
    except (OSError, ValueError) as err:
        raise StateError(f"{path}: {err}") from err
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise StateError(f"{path}: not a pyxen xenstored state file (format {FORMAT})")
    try:
        counter = GenerationCounter(int(raw["generation"]))
        nodes: dict[str, Node] = {}
        for p, rec in dict(raw["nodes"]).items():
            _apply(path, nodes, p, rec)
        domains = {d.domid: d for d in _parse_domains(raw.get("domains", []))}
        special = {str(k): _parse_perms(v, f"{path}: {k}")
                   for k, v in dict(raw.get("special_perms", {})).items()}
        for batch in _journal(path, int(raw.get("epoch", 0))):
            where = f"{path}.journal"
            counter = GenerationCounter(int(batch["generation"]))
            for p, rec in dict(batch["nodes"]).items():
                _apply(where, nodes, p, rec)
            if "domains" in batch:  # a whole table (journals of pyxen before 2026-12)
                domains = {d.domid: d for d in _parse_domains(batch["domains"])}
            for key, rec in dict(batch.get("domain_changes", {})).items():
                if rec is None:
                    domains.pop(int(key), None)
                else:
                    domains[int(key)] = SavedDomain(int(key), int(rec["mfn"]),
                                                    int(rec["evtchn"]))
            special = {str(k): _parse_perms(v, f"{where}: {k}")
                       for k, v in dict(batch["special_perms"]).items()}
    except (KeyError, TypeError, ValueError) as err:
        raise StateError(f"{path}: malformed state: {err!r}") from err
    _check(path, nodes)
    return SavedState(Tree(nodes, counter), list(domains.values()), special)


def _apply(where: str, nodes: dict[str, Node], p: str, rec: Any) -> None:
    """Set (or, for a null record, remove) node ``p`` from a saved record."""
    if not is_valid_nodename(p):
        raise StateError(f"{where}: invalid node path {p!r}")
    if rec is None:
        nodes.pop(p, None)
        return
    if "children_delta" in rec:
        children = _apply_delta(where, nodes, p, rec["children_delta"])
    else:
        children = tuple(str(c) for c in rec["children"])
    nodes[p] = Node(str(rec["value"]).encode("latin-1"),
                    _parse_perms(rec["perms"], f"{where}: {p}"),
                    children, int(rec["generation"]))


def _apply_delta(where: str, nodes: dict[str, Node], p: str, delta: Any) -> tuple[str, ...]:
    """The child list a ``children_delta`` record gives, from the node's record before."""
    before = nodes.get(p)
    if before is None:
        raise StateError(f"{where}: a child delta for {p}, which does not exist")
    if not isinstance(delta, dict) or not all(
            isinstance(delta.get(k), list) and all(isinstance(c, str) for c in delta[k])
            for k in ("removed", "added")):
        raise StateError(f"{where}: {p}: malformed child delta")
    gone = set(delta["removed"])
    return tuple(c for c in before.children if c not in gone) + tuple(delta["added"])


def _parse_domains(raw: Any) -> list[SavedDomain]:
    return [SavedDomain(int(d["domid"]), int(d["mfn"]), int(d["evtchn"])) for d in raw]


def _journal(path: str, epoch: int) -> list[dict[str, Any]]:
    """The batches of ``path``'s journal if it belongs to snapshot ``epoch``."""
    try:
        with open(f"{path}.journal", encoding="ascii") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise StateError(f"{path}.journal: {err}") from err
    try:
        header = json.loads(lines[0])
    except ValueError:
        return []  # torn while being created: the snapshot is complete
    if not isinstance(header, dict) or header.get("epoch") != epoch:
        return []  # a stale journal of an earlier snapshot
    batches: list[dict[str, Any]] = []
    # The text after the last newline is a line being appended when the
    # process died: ignored.  Every complete line must parse.
    for number, line in enumerate(lines[1:-1], start=2):
        try:
            batch = json.loads(line)
        except ValueError as err:
            raise StateError(f"{path}.journal: line {number}: {err}") from err
        if not isinstance(batch, dict):
            raise StateError(f"{path}.journal: line {number}: not a change record")
        batches.append(batch)
    return batches


def _check(path: str, nodes: dict[str, Node]) -> None:
    """The tree invariants: a root, every child present, no orphans."""
    if ROOT not in nodes:
        raise StateError(f"{path}: no root node")
    reached = {ROOT}
    stack = [ROOT]
    while stack:
        p = stack.pop()
        for child in nodes[p].children:
            c = join(p, child)
            if c not in nodes or c in reached:
                raise StateError(f"{path}: bad child {child!r} of {p}")
            reached.add(c)
            stack.append(c)
    if len(reached) != len(nodes):
        raise StateError(f"{path}: {len(nodes) - len(reached)} unreachable nodes")
