"""The node store: a flat map from absolute path to an immutable :class:`Node`.

Design:

* A node record holds its value (bytes), its permissions, the names of its
  children in creation order (DIRECTORY lists them in that order, as C
  xenstored does) and a *generation*: a number taken from one
  :class:`GenerationCounter` each time the record is rewritten (value,
  permissions or child list).  DIRECTORY_PART reports it, and transactions
  detect conflicts by comparing generations.
* Records are frozen, so a transaction never needs a copy of the map: it
  reads the global :class:`Tree` through a view (:mod:`.transactions`).
  While transactions are open, the tree keeps the record each changed path
  had before the change in its :class:`~.versions.VersionHistory`, so a
  view can still see the store as it was when its transaction started.
* ``owners`` counts nodes per owning domain (``perms[0].domid``) for the
  entries quota; it is kept exact by :meth:`Tree.put` and
  :meth:`Tree.delete`.
* ``changed`` collects the paths rewritten or removed since the state was
  last saved, for the incremental state journal (:mod:`.persistence`).

:class:`NodeStore` is what request handlers and :mod:`.access` work on:
the global tree, or a transaction's view of it.

Invariants: the root exists; every non-root node's parent exists and lists
it exactly once among its children; ``owners`` matches the records.
Permission checks and quotas live in :mod:`.access`, not here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Protocol

from .paths import ROOT, basename, join, parent_of
from .permissions import DEFAULT_PERMS, Perms
from .quotas import RECORD_HEADER_SIZE, RECORD_PERM_SIZE
from .versions import VersionHistory


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
        """Child names, each NUL-terminated (the DIRECTORY reply).  One join: a
        listing of /local/domain with 2000 domains is asked for in parts, and each
        part builds it again."""
        if not self.children:
            return b""
        return ("\0".join(self.children) + "\0").encode("latin-1")


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


class NodeStore(Protocol):
    """Node access shared by the global tree and a transaction's view."""

    counter: GenerationCounter

    def get(self, path: str) -> Node | None:
        """The record at ``path`` (a transaction records the access)."""

    def peek(self, path: str) -> Node | None:
        """The record at ``path``, not recorded as an access."""

    def put(self, path: str, node: Node) -> Node:
        """Store ``node`` at ``path`` with a fresh generation; returns it."""

    def delete(self, path: str) -> None:
        """Remove the record at ``path`` (children and parent untouched)."""

    def owned_by(self, domid: int) -> int:
        """Nodes owned by ``domid``."""


class Tree:
    """The global path -> Node map, with generations and owner counts."""

    def __init__(self, nodes: dict[str, Node], counter: GenerationCounter,
                 owners: Counter[int] | None = None) -> None:
        self.nodes = nodes
        self.counter = counter
        if owners is None:
            owners = Counter(n.perms[0].domid for n in nodes.values())
        self.owners = owners
        #: start-time versions for the open transactions
        self.history = VersionHistory()
        #: paths rewritten or removed since the last save
        self.changed: set[str] = set()

    @property
    def dirty(self) -> bool:
        """Records changed since the state was last saved."""
        return bool(self.changed)

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

    def get(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def peek(self, path: str) -> Node | None:
        return self.nodes.get(path)

    def put(self, path: str, node: Node) -> Node:
        old = self.nodes.get(path)
        generation = self.counter.next()
        if self.history.active:
            self.history.record(path, old, generation)
        if old is not None:
            self.owners[old.perms[0].domid] -= 1
        node = replace(node, generation=generation)
        self.nodes[path] = node
        self.owners[node.perms[0].domid] += 1
        self.changed.add(path)
        return node

    def delete(self, path: str) -> None:
        old = self.nodes.pop(path, None)
        if old is None:
            return
        if self.history.active:
            # Stamped with the last generation given out: every transaction
            # started before this deletion took a number at or below it.
            self.history.record(path, old, self.counter.value)
        self.owners[old.perms[0].domid] -= 1
        self.changed.add(path)

    def owned_by(self, domid: int) -> int:
        return self.owners.get(domid, 0)


def subtree(store: NodeStore, path: str) -> list[str]:
    """``path`` and every node below it in ``store``, parents before children."""
    out: list[str] = []
    stack = [path]
    while stack:
        p = stack.pop()
        node = store.peek(p)
        if node is None:
            continue
        out.append(p)
        stack.extend(join(p, c) for c in reversed(node.children))
    return out
