"""What one control connection is and holds: its peer, its role, its resources.

A connection's ``Role`` is fixed when it is accepted (see control/server.py
for how a connection gets one); ``Session`` holds what the connection has
taken from the hypervisor -- dom0's ends of event channels, page mappings,
domain 0's Argo rings (control/argo_ops.py) --
which the server releases when the connection closes, as closing
/dev/xen/evtchn or gntdev would in Xen's dom0.
"""

from __future__ import annotations

import enum
import socket
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from pyxen.abi.xen import DOMID_FIRST_RESERVED

if TYPE_CHECKING:
    from pyxen.control.argo_ops import ArgoSession
    from pyxen.control.grant_copy_ops import CopyBuffers
    from pyxen.hv.domain import Domain
    from pyxen.hv.grant_table import GrantMapping
    from pyxen.hv.page_export import PageExport

# Page mappings one connection may hold: a toolstack client as many as xl's gntdev
# default (1024 grants per open); a dom0 service one or two per domain it serves
# (consoled and xenstored each map every guest's ring through one connection), so
# as many as there can be domains, times two.  Each also costs the hypervisor a
# file descriptor, so its RLIMIT_NOFILE is the limit in practice.
MAX_MAPPINGS = 1024
MAX_SERVICE_MAPPINGS = 2 * DOMID_FIRST_RESERVED

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Role(enum.Enum):
    TOOLSTACK = "toolstack"  # every operation
    SERVICE = "service"  # what a dom0 service needs (server.SERVICE_OPS)


def mapping_limit(role: Role) -> int:
    """How many pages a connection of ``role`` may have mapped at once."""
    return MAX_SERVICE_MAPPINGS if role is Role.SERVICE else MAX_MAPPINGS


class PeerCred(NamedTuple):
    pid: int
    uid: int
    gid: int


def peer_cred(sock: socket.socket) -> PeerCred:
    """The connecting process's credentials (SO_PEERCRED, taken by the kernel at connect)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCred(pid, uid, gid)


class WithFds(NamedTuple):
    """A result that hands file descriptors to the client (they stay open here)."""

    result: Any
    fds: list[int]


@dataclass(eq=False)
class PageMapping:
    """A guest page this connection has mapped: the page's own file, and the pin
    that keeps it the guest's (a grant mapping, or a ``hold_page`` for a foreign map)."""

    domain: Domain
    export: PageExport
    grant: GrantMapping | None


@dataclass(eq=False)
class Session:
    role: Role = Role.TOOLSTACK
    name: str = "toolstack"  # for messages: the service's name
    ports: set[int] = field(default_factory=set)
    mappings: dict[int, PageMapping] = field(default_factory=dict)
    next_handle: int = 1
    received_fds: list[int] = field(default_factory=list)  # those of the current request
    argo: ArgoSession | None = None  # domain 0's Argo rings, events, transmit buffer
    copy_buffers: CopyBuffers | None = None  # grant_copy's buffers

    def add_mapping(self, mapping: PageMapping) -> int:
        handle = self.next_handle
        self.next_handle += 1
        self.mappings[handle] = mapping
        return handle
