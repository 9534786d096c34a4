"""The xenstored state machine, independent of any I/O.

:class:`Xenstore` owns the global tree, the connections, the introduced
domains and the permissions of the special watch names.  A transport feeds
it decoded requests (:meth:`Xenstore.handle`); replies and watch events are
queued on the connections, and the transport sends them (the server does so
only after saving the state, so a reply never announces a change that is not
on disk).  Nothing here blocks or raises out of :meth:`handle`.

Domains: domain 0 is registered at start, as C xenstored's ``dom0_init``
does.  INTRODUCE registers another domain, calls the ``connect_domain`` hook
(:mod:`.domains`) and, when the hook gives a ring, creates its
:class:`~.guest.GuestConnection` and hands its fd to the event loop through
:class:`FdRegistry`.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from .connection import Connection
from .domains import ConnectDomain, Domain, DomainChannel, no_ring
from .errors import XenstoreError
from .guest import GuestConnection
from .paths import ancestors, encode, parent_of
from .permissions import DEFAULT_PERMS, DOM0, READ, Caller, Perms, access_for
from .quotas import DEFAULT_QUOTAS, Quotas
from .ring import XenstoreRing
from .tree import Node, Tree
from .wire import Message

log = logging.getLogger("pyxen.xenstored")

INTRODUCE_DOMAIN = "@introduceDomain"
RELEASE_DOMAIN = "@releaseDomain"

#: Looks a node up in one version of the tree (before or after a change).
NodeView = Callable[[str], Node | None]


class FdRegistry(Protocol):
    """What the event loop offers for guest event fds."""

    def add_reader(self, fd: int, guest: GuestConnection) -> None: ...

    def remove_reader(self, fd: int) -> None: ...


class Xenstore:
    """Global state and request dispatch."""

    def __init__(self, tree: Tree | None = None, quotas: Quotas = DEFAULT_QUOTAS,
                 connect_domain: ConnectDomain = no_ring) -> None:
        self.tree = tree if tree is not None else Tree.initial()
        self.quotas = quotas
        self.connect_domain = connect_domain
        self.connections: list[Connection] = []
        #: connections that queued output since the server last flushed them
        self.pending_output: set[Connection] = set()
        #: connections with at least one watch, in the order they got their first
        #: (Connection keeps it: most guests never watch, and every change would
        #: otherwise look at every connection)
        self.watching: dict[Connection, None] = {}
        self.domains: dict[int, Domain] = {}
        self.special_perms: dict[str, Perms] = {INTRODUCE_DOMAIN: DEFAULT_PERMS,
                                                RELEASE_DOMAIN: DEFAULT_PERMS}
        #: the domids introduced, reset or released since the last save (the
        #: tree keeps its own record of changed nodes)
        self.domains_changed: set[int] = set()
        self.fds: FdRegistry | None = None
        dom0 = Connection(DOM0, "domain 0")
        self.domains[0] = Domain(0, 0, 0, dom0)

    # -- connections ------------------------------------------------------
    def add_connection(self, conn: Connection) -> Connection:
        conn.output.event_quota = self.quotas.watch_events_per_connection
        conn.outbox = self.pending_output
        conn.watching = self.watching
        if conn.watches:
            self.watching[conn] = None
        self.connections.append(conn)
        return conn

    def remove_connection(self, conn: Connection) -> None:
        conn.closed = True
        conn.drop_state()
        conn.drop_output()
        self.pending_output.discard(conn)
        if conn in self.connections:
            self.connections.remove(conn)

    def handle(self, conn: Connection, msg: Message) -> None:
        """Process one request; never raises."""
        from .requests import dispatch  # requests imports this module

        dispatch(self, conn, msg)

    @property
    def dirty(self) -> bool:
        return self.tree.dirty or bool(self.domains_changed)

    def mark_clean(self) -> None:
        self.tree.changed.clear()
        self.domains_changed.clear()

    # -- watches ----------------------------------------------------------
    def may_see(self, caller: Caller, path: str, views: Sequence[NodeView],
                old_perms: Perms | None = None) -> bool:
        """May ``caller`` get an event for ``path``?  The node or its parent
        must be readable (C xenstored's ``watch_permitted``), in the first
        version of the tree that has the node; after SET_PERMS the old
        permissions count too, so a watcher learns it lost access."""
        if caller.privileged:
            return True
        if path.startswith("@"):
            perms = self.special_perms.get(path, DEFAULT_PERMS)
            return bool(access_for(caller, perms) & READ)
        if old_perms is not None and access_for(caller, old_perms) & READ:
            return True
        for view in views:
            node = view(path)
            if node is None:
                continue
            if access_for(caller, node.perms) & READ:
                return True
            parent = view(parent_of(path)) if path != "/" else None
            return parent is not None and bool(access_for(caller, parent.perms) & READ)
        for anc in ancestors(path):
            node = views[0](anc)
            if node is not None:
                return bool(access_for(caller, node.perms) & READ)
        return False

    def fire_watches(self, name: str, *, removal: bool = False,
                     views: Sequence[NodeView] = (), old_perms: Perms | None = None) -> None:
        """Queue events for every watch a change of ``name`` reaches."""
        if not views:
            views = (self.tree.peek,)
        for conn in tuple(self.watching):
            if conn.closed or conn.ignored:
                continue
            for watch in conn.watches:
                path = watch.match(name, removal)
                if path is None or not self.may_see(conn.caller, path, views, old_perms):
                    continue
                conn.send_event(encode(watch.event_path(path)), watch.token)

    # -- domains ----------------------------------------------------------
    def introduce(self, domid: int, mfn: int, evtchn: int, *, restoring: bool = False) -> None:
        """Register ``domid`` (or reset an introduced one) and attach its ring."""
        domain = self.domains.get(domid)
        if domain is not None:
            # Already introduced: C xenstored rebinds the channel and resets
            # the connection (watches, transactions, ring indices).
            domain.evtchn = evtchn
            conn = domain.connection
            conn.drop_state()
            conn.drop_output()
            if isinstance(conn, GuestConnection):
                conn.reconnect()
            elif domid != 0:
                domain.channel = self._connect(domid, mfn, evtchn)
                self._attach(domain)
            self.domains_changed.add(domid)
            return
        channel = self._connect(domid, mfn, evtchn)
        domain = Domain(domid, mfn, evtchn,
                        Connection(Caller(domid, domid == 0), f"domain {domid}"), channel)
        self._attach(domain)
        self.domains[domid] = domain
        self.domains_changed.add(domid)
        log.info("introduced domain %d (mfn %#x, event channel %d, %s)", domid, mfn, evtchn,
                 "ring attached" if domain.channel else "no ring")
        if not restoring and domid != 0:
            self.fire_watches(INTRODUCE_DOMAIN)

    def _connect(self, domid: int, mfn: int, evtchn: int) -> DomainChannel | None:
        """Call the hook; its failures become the request's error."""
        try:
            return self.connect_domain(domid, mfn, evtchn)
        except OSError as err:
            name = errno.errorcode.get(err.errno or 0, "EIO")
            raise XenstoreError(name, f"connect_domain({domid}): {err}") from err

    def _attach(self, domain: Domain) -> None:
        """Serve ``domain``'s ring, if the hook gave one."""
        channel = domain.channel
        if channel is None:
            return
        try:
            ring = XenstoreRing(channel.ring, channel.notify)
        except ValueError as err:
            domain.channel = None
            raise XenstoreError("EINVAL", f"domain {domain.domid}: {err}") from err
        guest = GuestConnection(domain.domid, ring, channel.fd, self.handle)
        domain.connection = guest
        self.add_connection(guest)
        if self.fds is not None:
            self.fds.add_reader(guest.fd, guest)

    def release(self, domid: int) -> None:
        """Forget ``domid``: its connection, watches and transactions."""
        domain = self.domains.pop(domid)
        conn = domain.connection
        if isinstance(conn, GuestConnection):
            if self.fds is not None:
                self.fds.remove_reader(conn.fd)
            conn.ring.release()
        self.remove_connection(conn)
        if domain.channel is not None and domain.channel.close is not None:
            try:
                domain.channel.close()
            except OSError as err:
                log.warning("domain %d: closing its channel: %s", domid, err)
        self.domains_changed.add(domid)
        log.info("released domain %d", domid)
        self.fire_watches(RELEASE_DOMAIN)

    def set_target(self, domid: int, target: int) -> None:
        conn = self.domains[domid].connection
        conn.caller = Caller(conn.caller.domid, conn.caller.privileged, target)
