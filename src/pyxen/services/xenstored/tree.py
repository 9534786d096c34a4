"""The node store: a flat map from absolute path to an immutable :class:`Node`.

Design:

* A node record holds its value (bytes), its permissions, the names of its
  children in creation order (DIRECTORY lists them in that order, as C
  xenstored does) and a *generation*: a number taken from one
  :class:`GenerationCounter` each time the record is rewritten (value,
  permissions or child list).  DIRECTORY_PART reports it, and transactions
  detect conflicts by comparing generations.
* Records are frozen, so copying the map (``dict(nodes)``) is a consistent
  snapshot that shares every record: a transaction starts with such a copy
  and works on it privately.  A snapshot :class:`Tree` created with
  ``track=True`` remembers, for every path it touched (read, write or
  delete, existing or not), the generation the path had when the
  transaction started (``None`` for an absent node) and which paths it
  modified.
* ``owners`` counts nodes per owning domain (``perms[0].domid``) for the
  entries quota; it is kept exact by :meth:`put` and :meth:`delete`.

Invariants: the root exists; every non-root node's parent exists and lists
it exactly once among its children; ``owners`` matches the records.
Permission checks and quotas live in :mod:`.access`, not here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from .paths import ROOT, basename, join, parent_of
from .permissions import DEFAULT_PERMS, Perms
from .quotas import RECORD_HEADER_SIZE, RECORD_PERM_SIZE


@dataclass(frozen=True, slots=True)
class Node:
    """One node record."""

    value: bytes
    perms: Perms
    children: tuple[str, ...] = ()
    generation: int = 0

    def record_size(self) -> int:
        """Size C xenstored gives the record for ``quota_max_entry_size``."""
        return (RECORD_HEADER_SIZE + RECORD_PERM_SIZE * len(self.perms) + len(self.value)
                + sum(len(c) + 1 for c in self.children))

    def children_payload(self) -> bytes:
        """Child names, each NUL-terminated (the DIRECTORY reply)."""
        return b"".join(c.encode("latin-1") + b"\0" for c in self.children)


class GenerationCounter:
    """Source of unique, increasing generation numbers."""

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def next(self) -> int:
        self.value += 1
        return self.value


# Nodes C xenstored creates at start (``setup_structure``): the root, /tool
# and /tool/xenstored, all with permissions "n0".  /local/domain is created
# by the toolstack (xen-init-dom0 / libxl), not by xenstored.
INITIAL_PATHS = (ROOT, "/tool", "/tool/xenstored")


class Tree:
    """Path -> Node map with generations, owner counts and access tracking."""

    def __init__(self, nodes: dict[str, Node], counter: GenerationCounter,
                 owners: Counter[int] | None = None, track: bool = False) -> None:
        self.nodes = nodes
        self.counter = counter
        if owners is None:
            owners = Counter(n.perms[0].domid for n in nodes.values())
        self.owners = owners
        self.track = track
        #: path -> generation at snapshot time (None: absent); tracked trees only
        self.first_seen: dict[str, int | None] = {}
        #: modified paths in order of first modification; tracked trees only
        self.modified: dict[str, None] = {}
        #: set when a record changes; the server saves the state and clears it
        self.dirty = False

    @classmethod
    def initial(cls, counter: GenerationCounter | None = None) -> Tree:
        counter = counter or GenerationCounter()
        nodes: dict[str, Node] = {}
        for path in INITIAL_PATHS:
            nodes[path] = Node(b"", DEFAULT_PERMS, (), counter.next())
            if path != ROOT:
                parent = nodes[parent_of(path)]
                nodes[parent_of(path)] = replace(parent, children=(*parent.children,
                                                                   basename(path)))
        return cls(nodes, counter)

    def snapshot(self) -> Tree:
        """A private, tracking copy (a transaction's view)."""
        return Tree(dict(self.nodes), self.counter, Counter(self.owners), track=True)

    def _touch(self, path: str) -> None:
        if self.track and path not in self.first_seen:
            node = self.nodes.get(path)
            self.first_seen[path] = None if node is None else node.generation

    def get(self, path: str) -> Node | None:
        """The record at ``path`` (an access, for a tracking tree)."""
        self._touch(path)
        return self.nodes.get(path)

    def peek(self, path: str) -> Node | None:
        """The record at ``path``, not recorded as an access."""
        return self.nodes.get(path)

    def put(self, path: str, node: Node) -> Node:
        """Store ``node`` at ``path`` with a fresh generation; returns it."""
        self._touch(path)
        old = self.nodes.get(path)
        if old is not None:
            self.owners[old.perms[0].domid] -= 1
        node = replace(node, generation=self.counter.next())
        self.nodes[path] = node
        self.owners[node.perms[0].domid] += 1
        if self.track:
            self.modified[path] = None
        self.dirty = True
        return node

    def delete(self, path: str) -> None:
        """Remove the record at ``path`` (children and parent untouched)."""
        self._touch(path)
        old = self.nodes.pop(path, None)
        if old is not None:
            self.owners[old.perms[0].domid] -= 1
        if self.track:
            self.modified[path] = None
        self.dirty = True

    def owned_by(self, domid: int) -> int:
        return self.owners.get(domid, 0)

    def subtree(self, path: str) -> list[str]:
        """``path`` and every node below it, parents before children."""
        out: list[str] = []
        stack = [path]
        while stack:
            p = stack.pop()
            node = self.nodes.get(p)
            if node is None:
                continue
            out.append(p)
            stack.extend(join(p, c) for c in reversed(node.children))
        return out
