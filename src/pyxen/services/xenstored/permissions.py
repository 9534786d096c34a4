"""Node permissions: the ``n``/``r``/``w``/``b`` + domid strings.

A node carries a non-empty tuple of :class:`Perm`.  The first entry names the
owner and gives the default access of every domain not listed; later entries
grant specific domains.  Access for a caller (C ``perm_for_conn``):

* a privileged caller (domain 0: every socket connection) and the owner (or
  a domain whose SET_TARGET target is the owner) get everything, including
  the right to change permissions (``OWNER``);
* otherwise the first later entry naming the caller (or its target) applies;
* otherwise the owner entry's default.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import XenstoreError
from .wire import as_u32, c_strtol

NONE = 0
READ = 1
WRITE = 2
OWNER = 4
ALL = READ | WRITE | OWNER

_LETTER_TO_ACCESS = {"n": NONE, "r": READ, "w": WRITE, "b": READ | WRITE}
_ACCESS_TO_LETTER = {v: k for k, v in _LETTER_TO_ACCESS.items()}


@dataclass(frozen=True, slots=True)
class Perm:
    """One permission entry: ``access`` (READ/WRITE bits) for ``domid``."""

    domid: int
    access: int

    def __str__(self) -> str:
        # C xs_perm_to_string prints the id with "%i" (signed int).
        signed = self.domid - (1 << 32) if self.domid >= 1 << 31 else self.domid
        return f"{_ACCESS_TO_LETTER[self.access]}{signed}"


Perms = tuple[Perm, ...]

DEFAULT_PERMS: Perms = (Perm(0, NONE),)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: the domain, whether it is privileged, its SET_TARGET target."""

    domid: int
    privileged: bool
    target: int | None = None


DOM0 = Caller(0, True)


def parse_perm(text: bytes) -> Perm:
    """Parse "r5" and friends like C ``xs_strings_to_perms`` (id read with
    ``strtol(.., 0)``); an unknown letter is EINVAL."""
    letter = text[:1].decode("latin-1")
    if letter not in _LETTER_TO_ACCESS:
        raise XenstoreError("EINVAL", f"bad permission {text!r}")
    return Perm(as_u32(c_strtol(text[1:])), _LETTER_TO_ACCESS[letter])


def format_perms(perms: Perms) -> bytes:
    """GET_PERMS reply payload: each entry NUL-terminated."""
    return b"".join(str(p).encode() + b"\0" for p in perms)


def access_for(caller: Caller, perms: Perms) -> int:
    """The access bits ``caller`` has on a node with ``perms``."""
    owner = perms[0].domid
    if caller.privileged or owner == caller.domid or (
            caller.target is not None and owner == caller.target):
        return ALL
    for p in perms[1:]:
        if p.domid == caller.domid or (caller.target is not None and p.domid == caller.target):
            return p.access
    return perms[0].access
