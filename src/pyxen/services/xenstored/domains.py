"""Introduced domains and the pluggable way xenstored reaches their rings.

INTRODUCE(domid, mfn, evtchn) registers a domain and asks the
``connect_domain`` hook for its ring.  The hook is the only place that knows
how the page is mapped and the event channel bound (with Xen: grant
reference 1 or a foreign map, and an interdomain channel; in pyxen: the
hypervisor's control socket).  It returns a :class:`DomainChannel` or None:

* ``ring``: a writable memoryview over the guest's ring page (>= 2072 bytes);
* ``notify``: a callable that signals the guest's event channel;
* ``fd``: a file descriptor that becomes readable when the guest signals
  (an eventfd; xenstored reads it to clear it);
* ``close``: optional, called when the domain is released.

The default hook, :func:`no_ring`, returns None: the domain is registered
and the watches fire, but no ring is attached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .connection import Connection


@dataclass
class DomainChannel:
    """What ``connect_domain`` hands back for a guest's ring."""

    ring: memoryview
    notify: Callable[[], None]
    fd: int
    close: Callable[[], None] | None = None


#: connect_domain(domid, mfn, evtchn) -> DomainChannel | None
ConnectDomain = Callable[[int, int, int], DomainChannel | None]


def no_ring(domid: int, mfn: int, evtchn: int) -> DomainChannel | None:
    """Default hook: no way to reach guest rings yet."""
    del domid, mfn, evtchn
    return None


@dataclass
class Domain:
    """An introduced domain."""

    domid: int
    mfn: int
    evtchn: int
    connection: Connection
    channel: DomainChannel | None = None
    shutdown: bool = False


