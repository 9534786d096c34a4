"""Per-domain limits, with C xenstored 4.12's defaults
(``xenstored_core.c``: ``quota_nb_entry_per_domain`` and friends).

They bind unprivileged domains only: domain 0 (every socket connection) is
exempt, as in C xenstored, where the checks go through
``domain_is_unprivileged`` -- except the watch-event quota, which binds
every connection.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Quotas:
    """Limits applied to unprivileged domains."""

    #: Nodes a domain may own; creating one more is ENOSPC.
    entries_per_domain: int = 1000
    #: A node record (24-byte header + 8 per permission + value + child
    #: names with their NULs) must stay below this, else ENOSPC.
    max_entry_size: int = 2048
    #: Watches per domain.  C compares ``count > quota`` before adding, so a
    #: domain can register quota + 1 watches; the next one is E2BIG.
    watches_per_domain: int = 128
    #: Open transactions per connection; C compares ``started > quota``, so
    #: quota + 1 can be open; the next TRANSACTION_START is ENOSPC.
    transactions_per_connection: int = 10
    #: Permission entries a SET_PERMS may carry (more is ENOSPC).
    perms_per_node: int = 5
    #: Watch events queued unread for one connection; further events are
    #: dropped (XSA-326; see :mod:`.output`).  Unlike the others it binds
    #: socket clients too: a dom0 tool that stops reading must not grow
    #: xenstored without bound either.
    watch_events_per_connection: int = 1024


DEFAULT_QUOTAS = Quotas()

#: Size of ``struct xs_tdb_record_hdr`` (u64 generation, three u32 counts,
#: padded to 8) and of one ``struct xs_permissions``: C xenstored measures a
#: node with them for ``max_entry_size``.
RECORD_HEADER_SIZE = 24
RECORD_PERM_SIZE = 8
