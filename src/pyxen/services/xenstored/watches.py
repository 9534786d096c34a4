"""Watches: which registered (path, token) pairs an event reaches.

A watch on P matches a change to P or to any node below it (C ``is_child``;
every name counts as below the root, so a watch on "/" also sees the
"@introduceDomain"/"@releaseDomain" events, as with C xenstored).  A removal
also reaches watches set *below* the removed node, with the watch's own path
(C xenstored 4.12.0 ``fire_watches(.., recurse=true)``): a watcher learns
that its node went away with an ancestor.

A watch registered with a relative path reports relative event paths: the
caller's home prefix and the following '/' are cut off.
"""

from __future__ import annotations

from dataclasses import dataclass

from .paths import is_child


@dataclass(frozen=True, slots=True)
class Watch:
    """A registered watch; ``path`` is canonical ("/..." or "@...")."""

    path: str
    token: bytes
    #: the home prefix the path was relative to, None for an absolute watch
    relative_to: str | None = None

    def event_path(self, name: str) -> str:
        """``name`` as this watch reports it."""
        prefix = self.relative_to
        if prefix is None or not name.startswith(prefix):
            return name
        rest = name[len(prefix):]
        return rest[1:] if rest.startswith("/") else rest

    def match(self, name: str, removal: bool) -> str | None:
        """The absolute path to report for a change of ``name``, or None.

        For a removal, a watch below ``name`` reports its own path."""
        if is_child(name, self.path):
            return name
        if removal and not name.startswith("@") and is_child(self.path, name):
            return self.path
        return None
