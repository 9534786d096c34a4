"""Transactions: copy-on-write views committed with optimistic conflict checks.

Design: TRANSACTION_START copies nothing.  It takes a start number from the
tree's generation counter (C xenstored consumes one per start too) and
registers it with the tree's :class:`~.versions.VersionHistory`, which from
then on keeps the old record of every path the store changes.  Requests
carrying the transaction id work on a :class:`TransactionView`: reads look
at the transaction's own changes first, then at the version the path had
at start (the history's, or the live record if the path has not changed
since), so the transaction sees the store as it was at start plus its own
changes.  Writes and removals go into the view's own ``changes`` map only.
The view remembers, for every path it touched (read, write or delete,
existing or not), the generation the path had at start (``None`` if absent).

Commit (``TRANSACTION_END "T"``) fails with EAGAIN if any touched path's
current generation in the global tree differs from its start-time one
(changed, created or removed meanwhile).  This is the rule of C xenstored's
``finalize_transaction`` with one difference, stated here because it is
deliberate: C remembers a node's generation at its *first access* within the
transaction, we at transaction start; a node changed between start and first
access therefore makes our commit fail where C's succeeds.  A transaction
that saw stale data must not commit, which is what a snapshot promises.

The entries quota inside a transaction counts the domain's nodes in the
live tree plus the transaction's own additions (C's ``domain_entry`` in a
transaction), and is checked again at commit on the final counts.

On success the changed records are copied into the global tree (each with
a fresh generation), removed ones deleted, and the changed paths returned
for watch events, which are only sent now ("events from a transaction are
delivered only on commit").  An abort drops the view.  Either way, and
when its connection goes away, :meth:`Transaction.close` tells the history
the transaction no longer needs old versions.

Cost: start O(1); a request in a transaction O(path) plus the records it
touches; commit O(touched paths).  Invariant: a transaction's changes are
never visible to other requests.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from .errors import XenstoreError
from .quotas import Quotas
from .tree import GenerationCounter, Node, Tree


class TransactionView:
    """The store as one transaction sees it (a :class:`~.tree.NodeStore`)."""

    def __init__(self, base: Tree, start: int) -> None:
        self.base = base
        self.start = start
        self.counter: GenerationCounter = base.counter
        #: path -> new record, or None for a removal, in first-change order
        self.changes: dict[str, Node | None] = {}
        #: path -> generation at start (None: absent), for every touched path
        self.first_seen: dict[str, int | None] = {}
        #: nodes gained (lost) per owning domain by the changes
        self.owner_delta: Counter[int] = Counter()

    def _at_start(self, path: str) -> Node | None:
        changed, old = self.base.history.version_at(path, self.start)
        return old if changed else self.base.nodes.get(path)

    def _touch(self, path: str) -> None:
        if path not in self.first_seen:
            node = self._at_start(path)
            self.first_seen[path] = None if node is None else node.generation

    def peek(self, path: str) -> Node | None:
        if path in self.changes:
            return self.changes[path]
        return self._at_start(path)

    def get(self, path: str) -> Node | None:
        self._touch(path)
        return self.peek(path)

    def put(self, path: str, node: Node) -> Node:
        self._touch(path)
        old = self.peek(path)
        if old is not None:
            self.owner_delta[old.perms[0].domid] -= 1
        node = replace(node, generation=self.counter.next())
        self.changes[path] = node
        self.owner_delta[node.perms[0].domid] += 1
        return node

    def delete(self, path: str) -> None:
        self._touch(path)
        old = self.peek(path)
        if old is not None:
            self.owner_delta[old.perms[0].domid] -= 1
        self.changes[path] = None

    def owned_by(self, domid: int) -> int:
        return self.base.owned_by(domid) + self.owner_delta[domid]


class Transaction:
    """One open transaction of a connection."""

    def __init__(self, tx_id: int, base: Tree) -> None:
        self.id = tx_id
        # C xenstored consumes a generation number per transaction start.
        start = base.counter.next()
        base.history.open(start)
        self.tree = TransactionView(base, start)
        self.closed = False

    def close(self) -> None:
        """The transaction is over (committed, aborted or dropped)."""
        if not self.closed:
            self.closed = True
            self.tree.base.history.close(self.tree.start)

    def commit(self, target: Tree, quotas: Quotas,
               privileged: frozenset[int] = frozenset({0})) -> dict[str, Node | None]:
        """Apply to ``target`` or raise EAGAIN (conflict) / ENOSPC (entries
        quota).  Returns changed path -> record before the commit."""
        view = self.tree
        for path, generation in view.first_seen.items():
            current = target.peek(path)
            if (None if current is None else current.generation) != generation:
                raise XenstoreError("EAGAIN", f"{path} changed during the transaction")
        # Entries quota, checked on the final counts: C xenstored checks the
        # counts at commit too (``transaction_fix_domains``).
        for domid, grown in view.owner_delta.items():
            if grown > 0 and domid not in privileged and \
                    target.owned_by(domid) + grown > quotas.entries_per_domain:
                raise XenstoreError("ENOSPC", f"entries quota of domain {domid}")
        before: dict[str, Node | None] = {p: target.peek(p) for p in view.changes}
        for path, node in view.changes.items():
            if node is None:
                target.delete(path)
            else:
                target.put(path, node)
        return before
