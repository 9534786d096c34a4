"""pyxen's xenstored: the xenstore daemon of Xen 4.12, as a separate process.

Run it with ``python -m pyxen.services.xenstored --socket PATH [--state
FILE] [--log FILE]`` (or :func:`main`).  Socket clients are domain 0;
guests talk through their ring pages once INTRODUCE attaches them through
the ``connect_domain`` hook (:class:`DomainChannel`).

Modules: :mod:`.wire` (framing), :mod:`.paths`, :mod:`.permissions`,
:mod:`.tree` (the node store), :mod:`.access` (permission-checked
operations), :mod:`.transactions`, :mod:`.watches`, :mod:`.requests` (one
handler per message type), :mod:`.control`, :mod:`.core` (state and
dispatch), :mod:`.ring` and :mod:`.guest` (guest rings), :mod:`.server`
(the event loop), :mod:`.persistence`, :mod:`.cli`.
"""

from .cli import build, main
from .core import Xenstore
from .domains import ConnectDomain, DomainChannel, no_ring
from .errors import ProtocolError, XenstoreError
from .guest import GuestConnection
from .quotas import Quotas
from .ring import RingError, XenstoreRing
from .server import Server

__all__ = ["ConnectDomain", "DomainChannel", "GuestConnection", "ProtocolError", "Quotas",
           "RingError", "Server", "Xenstore", "XenstoreError", "XenstoreRing", "build",
           "main", "no_ring"]
