"""Permission-checked operations on a :class:`~.tree.NodeStore` (the
global tree or a transaction's view), with quotas.

These are the semantics of C xenstored's ``get_node``, ``create_node``,
``do_write``, ``do_mkdir``, ``do_rm`` and ``do_set_perms``
(``xenstored_core.c``), on canonical, already validated paths:

* A missing or unreadable node gives ENOENT only if the caller has the
  requested access to the nearest existing ancestor, EACCES otherwise, so
  that errors leak nothing about nodes the caller may not see.
* A created node (and each missing parent created with it) inherits the
  permissions of its nearest existing ancestor; when an unprivileged domain
  creates it, that domain becomes the owner (``construct_node``: "Inherit
  permissions, except unprivileged domains own what they create").  A
  privileged creator keeps the inherited owner.
* Each operation checks everything before changing anything, so a failed
  request leaves the tree as it was.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import XenstoreError
from .paths import ROOT, ancestors, basename, parent_of
from .permissions import OWNER, READ, WRITE, Caller, Perm, Perms, access_for
from .quotas import Quotas
from .tree import Node, NodeStore, subtree


def lookup(tree: NodeStore, caller: Caller, path: str, need: int) -> Node:
    """The node at ``path`` if ``caller`` has every bit of ``need`` on it."""
    node = tree.get(path)
    if node is not None and access_for(caller, node.perms) & need == need:
        return node
    error = "ENOENT" if node is None else "EACCES"
    for anc_path in ancestors(path):
        anc = tree.get(anc_path)
        if anc is not None:
            if access_for(caller, anc.perms) & need:
                raise XenstoreError(error, path)
            break
    raise XenstoreError("EACCES", path)


def _check_size(tree: NodeStore, caller: Caller, quotas: Quotas, node: Node) -> None:
    if not caller.privileged and node.record_size() >= quotas.max_entry_size:
        raise XenstoreError("ENOSPC", "node record too large")


def _create(tree: NodeStore, caller: Caller, quotas: Quotas, path: str, value: bytes) -> None:
    missing = [path]
    parent_path = parent_of(path)
    parent = tree.get(parent_path)
    while parent is None:
        missing.append(parent_path)
        parent_path = parent_of(parent_path)
        parent = tree.get(parent_path)
    perms: Perms = parent.perms
    if not caller.privileged:
        perms = (Perm(caller.domid, perms[0].access), *perms[1:])
        if tree.owned_by(caller.domid) + len(missing) > quotas.entries_per_domain:
            raise XenstoreError("ENOSPC", "entries quota")
    new_parent = replace(parent, children=(*parent.children, basename(missing[-1])))
    records: list[tuple[str, Node]] = [(parent_path, new_parent)]
    for i in range(len(missing) - 1, -1, -1):
        children = (basename(missing[i - 1]),) if i > 0 else ()
        records.append((missing[i], Node(value if i == 0 else b"", perms, children)))
    for _, node in records:
        _check_size(tree, caller, quotas, node)
    for p, node in records:
        tree.put(p, node)


def write(tree: NodeStore, caller: Caller, quotas: Quotas, path: str, value: bytes) -> None:
    """XS_WRITE: set the value, creating the node and missing parents."""
    try:
        node = lookup(tree, caller, path, WRITE)
    except XenstoreError as err:
        if err.name != "ENOENT":
            raise
        _create(tree, caller, quotas, path, value)
        return
    new = replace(node, value=value)
    _check_size(tree, caller, quotas, new)
    tree.put(path, new)


def mkdir(tree: NodeStore, caller: Caller, quotas: Quotas, path: str) -> bool:
    """XS_MKDIR: create an empty node; an existing node is fine (False)."""
    try:
        lookup(tree, caller, path, WRITE)
    except XenstoreError as err:
        if err.name != "ENOENT":
            raise
        _create(tree, caller, quotas, path, b"")
        return True
    return False


def removable(tree: NodeStore, caller: Caller, path: str) -> bool:
    """Check an XS_RM; False when there is nothing to remove (an absent node
    whose parent exists is fine), True when :func:`remove` must run."""
    try:
        lookup(tree, caller, path, WRITE)
    except XenstoreError as err:
        if err.name == "ENOENT" and path != ROOT and tree.get(parent_of(path)) is not None:
            return False
        raise
    if path == ROOT:
        raise XenstoreError("EINVAL", "cannot remove the root")
    return True


def remove(tree: NodeStore, path: str) -> list[str]:
    """Remove ``path`` and everything below it (checked by
    :func:`removable`); returns the removed paths, parents first."""
    removed = subtree(tree, path)
    for p in removed:
        tree.delete(p)
    parent_path = parent_of(path)
    parent = tree.get(parent_path)
    if parent is not None:
        name = basename(path)
        tree.put(parent_path, replace(parent, children=tuple(
            c for c in parent.children if c != name)))
    return removed


def set_perms(tree: NodeStore, caller: Caller, quotas: Quotas, path: str, perms: Perms) -> Perms:
    """XS_SET_PERMS on a node: owner or privileged only; an unprivileged
    owner may not give the node away (C: EPERM, sent as EINVAL).  Returns
    the old permissions."""
    node = lookup(tree, caller, path, WRITE | OWNER)
    if not caller.privileged and perms[0].domid != node.perms[0].domid:
        raise XenstoreError("EPERM", "only a privileged domain may change the owner")
    new = replace(node, perms=perms)
    _check_size(tree, caller, quotas, new)
    tree.put(path, new)
    return node.perms


def can_read(caller: Caller, node: Node | None) -> bool:
    return node is not None and bool(access_for(caller, node.perms) & READ)
