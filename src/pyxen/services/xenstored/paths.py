"""Xenstore path rules (``docs/misc/xenstore.txt``; C ``is_valid_nodename``,
``canonicalize``, ``get_parent`` and the watch ``is_child``).

Paths are kept as ``str`` decoded from latin-1, so every byte maps to one
character and back; the validity check only admits ASCII anyway.
"""

from __future__ import annotations

from pyxen.abi.xs_wire import XENSTORE_ABS_PATH_MAX

_VALID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-/_@")

ROOT = "/"


def decode(raw: bytes) -> str:
    """Bytes from the wire to a path string (one character per byte)."""
    return raw.decode("latin-1")


def encode(path: str) -> bytes:
    return path.encode("latin-1")


def domain_path(domid: int) -> str:
    """``/local/domain/<domid>`` (C ``talloc_domain_path``, domid unsigned)."""
    return f"/local/domain/{domid & 0xFFFFFFFF}"


def canonicalize(path: str, home: str) -> str:
    """Absolute form of ``path``: a path not starting with '/' or '@' is
    relative to the caller's home directory ``home``."""
    if path.startswith(("/", "@")):
        return path
    return f"{home}/{path}"


def is_valid_nodename(path: str) -> bool:
    """Starts with '/', no "//", no trailing '/' except the root itself, at
    most ``XENSTORE_ABS_PATH_MAX`` characters, only ``A-Za-z0-9-/_@``."""
    if not path.startswith("/"):
        return False
    if path.endswith("/") and path != ROOT:
        return False
    if "//" in path:
        return False
    if len(path) > XENSTORE_ABS_PATH_MAX:
        return False
    return all(c in _VALID_CHARS for c in path)


def parent_of(path: str) -> str:
    """Parent of a valid path other than the root."""
    cut = path.rfind("/")
    return path[:cut] if cut > 0 else ROOT


def basename(path: str) -> str:
    return path[path.rfind("/") + 1:]


def join(parent: str, child: str) -> str:
    return f"/{child}" if parent == ROOT else f"{parent}/{child}"


def is_child(child: str, parent: str) -> bool:
    """True if ``child`` is ``parent`` or below it.  As in C xenstored, every
    name is "below" the root, including the special "@..." names."""
    if parent == ROOT:
        return True
    if not child.startswith(parent):
        return False
    return len(child) == len(parent) or child[len(parent)] == "/"


def ancestors(path: str) -> list[str]:
    """Strict ancestors of ``path``, nearest first, ending with the root."""
    out: list[str] = []
    while path != ROOT:
        path = parent_of(path)
        out.append(path)
    return out
