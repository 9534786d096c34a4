"""XS_CONTROL sub-commands of C xenstored 4.12 (``xenstored_control.c``):
check, log, logfile, memreport, print and help.  Arguments are the
NUL-terminated strings after the command; a wrong count or an unknown
command is EINVAL.  Effects here: "print" and "memreport" write to the log,
"log"/"logfile" are accepted and only logged (pyxen's log is chosen with
``--log``), "check" verifies the tree's invariants.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .errors import XenstoreError
from .paths import join
from .wire import get_strings

if TYPE_CHECKING:
    from .core import Xenstore

log = logging.getLogger("pyxen.xenstored")

# (command, parameters) as "help" lists them.
COMMANDS = (("check", ""), ("log", "on|off"), ("logfile", "<file>"),
            ("memreport", "[<file>]"), ("print", "<string>"), ("help", ""))


def check_tree(xs: Xenstore) -> list[str]:
    """Problems in the tree's invariants (empty when consistent)."""
    problems: list[str] = []
    nodes = xs.tree.nodes
    seen = {"/"}
    for path, node in nodes.items():
        if len(set(node.children)) != len(node.children):
            problems.append(f"{path}: duplicate children")
        for child in node.children:
            child_path = join(path, child)
            if child_path not in nodes:
                problems.append(f"{path}: missing child {child}")
            seen.add(child_path)
    problems.extend(f"{p}: orphan" for p in nodes if p not in seen)
    return problems


def control(xs: Xenstore, payload: bytes) -> bytes:
    """Run one XS_CONTROL request; returns the reply payload."""
    strings = get_strings(payload)
    if not strings:
        raise XenstoreError("EINVAL", "no control command")
    command, args = strings[0].decode("latin-1"), strings[1:]
    if command == "check" and not args:
        for problem in check_tree(xs):
            log.error("check: %s", problem)
    elif command == "log" and len(args) == 1 and args[0] in (b"on", b"off"):
        log.info("control: log %s", args[0].decode())
    elif command == "logfile" and len(args) == 1:
        log.info("control: logfile %r (pyxen logs where --log says)", args[0])
    elif command == "memreport" and len(args) <= 1:
        log.info("memreport: %d nodes, %d connections, %d domains", len(xs.tree.nodes),
                 len(xs.connections), len(xs.domains))
    elif command == "print" and len(args) == 1:
        log.info("control: %s", args[0].decode("latin-1"))
    elif command == "help" and not args:
        # C sends the text without its terminating NUL.
        return "".join(f"{c}\t{p}\n" for c, p in COMMANDS).encode()
    else:
        raise XenstoreError("EINVAL", f"control command {command!r}")
    return b"OK\0"
