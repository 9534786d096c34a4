"""Saving and loading xenstored's state (``--state FILE``).

The file is JSON: the node records (value as a latin-1 string, so any byte
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


def _perm_strings(perms: Perms) -> list[str]:
    return [str(p) for p in perms]


def _parse_perms(strings: Any, where: str) -> Perms:
    if not isinstance(strings, list) or not strings:
        raise StateError(f"{where}: permissions must be a non-empty list")
    try:
        return tuple(parse_perm(str(s).encode()) for s in strings)
    except XenstoreError as err:
        raise StateError(f"{where}: {err}") from err


def save(path: str, xs: Xenstore) -> None:
    """Write the state of ``xs`` to ``path`` atomically."""
    state = {
        "format": FORMAT,
        "generation": xs.tree.counter.value,
        "nodes": {p: {"value": n.value.decode("latin-1"), "perms": _perm_strings(n.perms),
                      "children": list(n.children), "generation": n.generation}
                  for p, n in xs.tree.nodes.items()},
        "domains": [{"domid": d.domid, "mfn": d.mfn, "evtchn": d.evtchn}
                    for d in xs.domains.values() if d.domid != 0],
        "special_perms": {k: _perm_strings(v) for k, v in xs.special_perms.items()},
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        json.dump(state, f, separators=(",", ":"))
    os.replace(tmp, path)


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
            if not is_valid_nodename(p):
                raise StateError(f"{path}: invalid node path {p!r}")
            nodes[p] = Node(str(rec["value"]).encode("latin-1"),
                            _parse_perms(rec["perms"], f"{path}: {p}"),
                            tuple(str(c) for c in rec["children"]), int(rec["generation"]))
        domains = [SavedDomain(int(d["domid"]), int(d["mfn"]), int(d["evtchn"]))
                   for d in raw.get("domains", [])]
        special = {str(k): _parse_perms(v, f"{path}: {k}")
                   for k, v in dict(raw.get("special_perms", {})).items()}
    except (KeyError, TypeError, ValueError) as err:
        raise StateError(f"{path}: malformed state: {err!r}") from err
    _check(path, nodes)
    return SavedState(Tree(nodes, counter), domains, special)


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
