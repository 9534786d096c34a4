"""Old versions of changed nodes, kept only for as long as an open
transaction may need them (multi-version reads without copying the tree).

A transaction sees the store as it was when it started (its *start*
number, a generation taken from the tree's counter) plus its own changes.
Rather than copying the node map at TRANSACTION_START, the global tree
reports every change made while any transaction is open: before path P
changes, :meth:`VersionHistory.record` gets P's current record (None if it
is absent) and the change's *stamp* (the new record's generation; for a
removal the last generation given out).  A change is later than a start
exactly when its stamp is at or above the start number, because starts and
rewrites draw from the same counter.

P's version at start S is then the record saved by the first change of P
stamped at or above S, or P's live record if P has not changed since S
(:meth:`VersionHistory.version_at`).

Only what some open transaction can ask for is kept:

* a change is recorded only if no saved version of P is already stamped at
  or above the newest open start: otherwise every open transaction already
  has its version of P, and the record being replaced is nobody's;
* versions stamped below the oldest open start are discarded when a
  transaction ends, and everything when the last one ends.

So TRANSACTION_START costs O(1), a change O(1) (amortised), and the memory
held is at most one record per changed path per distinct open start.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tree import Node


class VersionHistory:
    """Saved records of the global tree for its open transactions."""

    def __init__(self) -> None:
        #: start numbers of the open transactions, in increasing order
        self._open: dict[int, None] = {}
        #: path -> [(stamp, record before that change)], stamps increasing
        self._versions: dict[str, list[tuple[int, Node | None]]] = {}
        #: (stamp, path) of every saved version, in stamp order (for trimming)
        self._log: deque[tuple[int, str]] = deque()

    @property
    def active(self) -> bool:
        """True while a transaction is open (changes must be recorded)."""
        return bool(self._open)

    def __len__(self) -> int:
        """Number of saved versions."""
        return len(self._log)

    def open(self, start: int) -> None:
        """A transaction started at ``start`` (greater than any before)."""
        self._open[start] = None

    def close(self, start: int) -> None:
        """The transaction started at ``start`` ended: drop what only it
        could need."""
        self._open.pop(start, None)
        if not self._open:
            self._versions.clear()
            self._log.clear()
            return
        oldest = next(iter(self._open))
        while self._log and self._log[0][0] < oldest:
            _, path = self._log.popleft()
            versions = self._versions[path]
            del versions[0]
            if not versions:
                del self._versions[path]

    def record(self, path: str, old: Node | None, stamp: int) -> None:
        """``path`` is about to change from ``old``; the change is ``stamp``."""
        versions = self._versions.get(path)
        newest_start = next(reversed(self._open))
        if versions and versions[-1][0] >= newest_start:
            return
        if versions is None:
            self._versions[path] = [(stamp, old)]
        else:
            versions.append((stamp, old))
        self._log.append((stamp, path))

    def version_at(self, path: str, start: int) -> tuple[bool, Node | None]:
        """(True, record) if ``path`` changed since ``start`` (the record it
        had then, None if absent), else (False, None): the live record is it."""
        for stamp, old in self._versions.get(path, ()):
            if stamp >= start:
                return True, old
        return False, None
