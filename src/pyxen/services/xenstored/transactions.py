"""Transactions: private snapshots committed with optimistic conflict checks.

Design: TRANSACTION_START copies the node map (records are immutable, so
this is a consistent snapshot sharing every record) into a tracking
:class:`~.tree.Tree`.  Every request carrying the transaction id reads and
writes that private tree, so the transaction sees the store as it was at
start plus its own changes.  The tree remembers the start-time generation
of each path it touched, existing or not.

Commit (``TRANSACTION_END "T"``) fails with EAGAIN if any touched path's
current generation in the global tree differs from its start-time one
(changed, created or removed meanwhile).  This is the rule of C xenstored's
``finalize_transaction`` with one difference, stated here because it is
deliberate: C remembers a node's generation at its *first access* within the
transaction, we at transaction start; a node changed between start and first
access therefore makes our commit fail where C's succeeds.  A transaction
that saw stale data must not commit, which is what a snapshot promises.

On success the modified records are copied into the global tree (each with
a fresh generation), removed ones deleted, and the modified paths returned
for watch events, which are only sent now ("events from a transaction are
delivered only on commit").  An abort just drops the snapshot.

Invariant: a transaction's tree is never visible to other requests.
"""

from __future__ import annotations

from .errors import XenstoreError
from .quotas import Quotas
from .tree import Node, Tree


class Transaction:
    """One open transaction of a connection."""

    def __init__(self, tx_id: int, base: Tree) -> None:
        self.id = tx_id
        self.tree = base.snapshot()
        self._start_owners = dict(self.tree.owners)
        # C xenstored consumes a generation number per transaction start.
        base.counter.next()

    def commit(self, target: Tree, quotas: Quotas,
               privileged: frozenset[int] = frozenset({0})) -> dict[str, Node | None]:
        """Apply to ``target`` or raise EAGAIN (conflict) / ENOSPC (entries
        quota).  Returns modified path -> record before the commit."""
        for path, generation in self.tree.first_seen.items():
            current = target.peek(path)
            if (None if current is None else current.generation) != generation:
                raise XenstoreError("EAGAIN", f"{path} changed during the transaction")
        # Entries quota, checked on the final counts: C xenstored checks the
        # counts at commit too (``transaction_fix_domains``).
        for domid, count in self.tree.owners.items():
            grown = count - self._start_owners.get(domid, 0)
            if grown > 0 and domid not in privileged and \
                    target.owned_by(domid) + grown > quotas.entries_per_domain:
                raise XenstoreError("ENOSPC", f"entries quota of domain {domid}")
        before: dict[str, Node | None] = {p: target.peek(p) for p in self.tree.modified}
        for path in self.tree.modified:
            node = self.tree.peek(path)
            if node is None:
                if target.peek(path) is not None:
                    target.delete(path)
            else:
                target.put(path, node)
        return before
