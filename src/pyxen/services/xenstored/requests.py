"""Request handlers: one function per message type, and the dispatcher.

Each handler validates its payload the way C xenstored does (argument
counts, ``atoi``), does the work on the request's tree (the transaction's
copy-on-write view when ``tx_id`` names one, else the global tree) and returns the
reply payload, or raises :class:`XenstoreError`.  The dispatcher
(:func:`dispatch`) applies the per-type rules of C xenstored's
``wire_funcs`` table first: unknown type -> ENOSYS, privileged-only type
from an unprivileged domain -> EACCES, unknown transaction id -> ENOENT
(WATCH and UNWATCH ignore ``tx_id``).  A reply longer than
``XENSTORE_PAYLOAD_MAX`` becomes E2BIG.  Replies echo the request's type,
req_id and tx_id; errors have type XS_ERROR.

Watch events of a change outside a transaction are queued before the reply
(as in C xenstored); inside a transaction they wait for the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pyxen.abi.xen import DOMID_FIRST_RESERVED, DOMID_SELF
from pyxen.abi.xs_wire import XENSTORE_PAYLOAD_MAX, XENSTORE_REL_PATH_MAX, XsdSockmsgType

from . import access
from .connection import Connection
from .control import control
from .core import Xenstore
from .errors import XenstoreError
from .paths import canonicalize, decode, is_valid_nodename
from .permissions import OWNER, READ, WRITE, Perms, access_for, format_perms, parse_perm
from .transactions import Transaction
from .tree import NodeStore
from .watches import Watch
from .wire import Message, as_u32, c_atoi, count_strings, encode, get_strings, one_arg

log = logging.getLogger("pyxen.xenstored")

T = XsdSockmsgType
OK = b"OK\0"


@dataclass
class Request:
    """One request being handled."""

    xs: Xenstore
    conn: Connection
    msg: Message
    tx: Transaction | None
    #: watch events (path, token) to send after the reply (the first
    #: event of a new watch)
    after: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def tree(self) -> NodeStore:
        return self.tx.tree if self.tx is not None else self.xs.tree

    def path(self, raw: bytes | None) -> str:
        """Canonical, valid node path from an argument, else EINVAL."""
        if raw is None:
            raise XenstoreError("EINVAL", "missing path")
        path = canonicalize(decode(raw), self.conn.home)
        if not is_valid_nodename(path):
            raise XenstoreError("EINVAL", f"invalid path {path!r}")
        return path

    def changed(self, name: str, *, removal: bool = False, old_perms: Perms | None = None) -> None:
        """Fire watches for a change made outside a transaction."""
        if self.tx is None:
            self.xs.fire_watches(name, removal=removal, old_perms=old_perms)


def domid_arg(payload: bytes) -> int:
    arg = one_arg(payload)
    if arg is None:
        raise XenstoreError("EINVAL", "expected one argument")
    return as_u32(c_atoi(arg))


# -- reading ------------------------------------------------------------------
def do_read(req: Request) -> bytes:
    return access.lookup(req.tree, req.conn.caller, req.path(one_arg(req.msg.payload)),
                         READ).value


def do_directory(req: Request) -> bytes:
    node = access.lookup(req.tree, req.conn.caller, req.path(one_arg(req.msg.payload)), READ)
    return node.children_payload()


def do_directory_part(req: Request) -> bytes:
    """Children from a byte offset into the child list, after the node's
    generation; the chunk that ends the list carries one extra NUL; an
    offset at or past the end gives "gen\\0\\0" (C ``send_directory_part``)."""
    payload = req.msg.payload
    if count_strings(payload) != 2:
        raise XenstoreError("EINVAL", "expected path and offset")
    raw_path, raw_offset = get_strings(payload)
    node = access.lookup(req.tree, req.conn.caller, req.path(raw_path), READ)
    offset = as_u32(c_atoi(raw_offset))
    generation = str(node.generation).encode() + b"\0"
    children = node.children_payload()
    if offset >= len(children):
        return generation + b"\0"
    room = XENSTORE_PAYLOAD_MAX - len(generation) - 1
    length = 0
    while True:
        end = children.index(b"\0", offset + length)
        name_len = end - (offset + length)
        if length + name_len >= room:
            break
        length += name_len + 1
        if offset + length == len(children):
            break
    chunk = generation + children[offset:offset + length]
    if offset + length == len(children):
        chunk += b"\0"
    return chunk


def do_get_perms(req: Request) -> bytes:
    node = access.lookup(req.tree, req.conn.caller, req.path(one_arg(req.msg.payload)), READ)
    return format_perms(node.perms)


# -- writing ------------------------------------------------------------------
def do_write(req: Request) -> bytes:
    strings = get_strings(req.msg.payload)
    if not strings:
        raise XenstoreError("EINVAL", "missing path")
    path = req.path(strings[0])
    value = req.msg.payload[len(strings[0]) + 1:]
    access.write(req.tree, req.conn.caller, req.xs.quotas, path, value)
    req.changed(path)
    return OK


def do_mkdir(req: Request) -> bytes:
    path = req.path(one_arg(req.msg.payload))
    if access.mkdir(req.tree, req.conn.caller, req.xs.quotas, path):
        req.changed(path)
    return OK


def do_rm(req: Request) -> bytes:
    path = req.path(one_arg(req.msg.payload))
    if access.removable(req.tree, req.conn.caller, path):
        # Fire first, while the watchers' permissions can still be checked
        # against the nodes (C xenstored does the same).
        req.changed(path, removal=True)
        access.remove(req.tree, path)
    return OK


def do_set_perms(req: Request) -> bytes:
    payload = req.msg.payload
    count = count_strings(payload) - 1
    if count < 1:
        raise XenstoreError("EINVAL", "expected path and permissions")
    caller = req.conn.caller
    if not caller.privileged and count > req.xs.quotas.perms_per_node:
        raise XenstoreError("ENOSPC", "too many permissions")
    strings = get_strings(payload)
    perms = tuple(parse_perm(s) for s in strings[1:1 + count])
    name = decode(strings[0])
    if name.startswith("@"):
        special = req.xs.special_perms.get(name)
        if special is None:
            raise XenstoreError("EINVAL", f"no special node {name}")
        if access_for(caller, special) & (WRITE | OWNER) != WRITE | OWNER:
            raise XenstoreError("EACCES", name)
        req.xs.special_perms[name] = perms
        return OK
    path = req.path(strings[0])
    old = access.set_perms(req.tree, caller, req.xs.quotas, path, perms)
    req.changed(path, old_perms=old)
    return OK


# -- watches ------------------------------------------------------------------
def do_watch(req: Request) -> bytes:
    strings = get_strings(req.msg.payload)
    if len(strings) != 2:
        raise XenstoreError("EINVAL", "expected path and token")
    raw, token = strings
    name = decode(raw)
    conn = req.conn
    relative_to: str | None = None
    if name.startswith("@"):
        if len(name) > XENSTORE_REL_PATH_MAX:
            raise XenstoreError("EINVAL", "special watch name too long")
    else:
        if not name.startswith("/"):
            relative_to = conn.home
        name = req.path(raw)
    if any(w.path == name and w.token == token for w in conn.watches):
        raise XenstoreError("EEXIST", "duplicate watch")
    # C xenstored checks "count > quota" before adding (one over the quota).
    if not conn.caller.privileged and len(conn.watches) > req.xs.quotas.watches_per_domain:
        raise XenstoreError("E2BIG", "watch quota")
    watch = Watch(name, token, relative_to)
    conn.add_watch(watch)
    req.after.append((watch.event_path(name).encode("latin-1"), token))
    return OK


def do_unwatch(req: Request) -> bytes:
    strings = get_strings(req.msg.payload)
    if len(strings) != 2:
        raise XenstoreError("EINVAL", "expected path and token")
    name = canonicalize(decode(strings[0]), req.conn.home)
    for i, w in enumerate(req.conn.watches):
        if w.path == name and w.token == strings[1]:
            req.conn.remove_watch(i)
            return OK
    raise XenstoreError("ENOENT", "no such watch")


def do_reset_watches(req: Request) -> bytes:
    req.conn.drop_state()
    return OK


# -- transactions -------------------------------------------------------------
def do_transaction_start(req: Request) -> bytes:
    conn = req.conn
    if req.tx is not None:
        raise XenstoreError("EBUSY", "nested transaction")
    # C xenstored: "transaction_started > quota" (one over the quota).
    if not conn.caller.privileged and \
            len(conn.transactions) > req.xs.quotas.transactions_per_connection:
        raise XenstoreError("ENOSPC", "transaction quota")
    tx_id = conn.new_transaction_id()
    conn.transactions[tx_id] = Transaction(tx_id, req.xs.tree)
    return str(tx_id).encode() + b"\0"


def do_transaction_end(req: Request) -> bytes:
    arg = one_arg(req.msg.payload)
    if arg not in (b"T", b"F"):
        raise XenstoreError("EINVAL", "expected T or F")
    tx = req.tx
    if tx is None:
        raise XenstoreError("ENOENT", "no transaction")
    req.conn.end_transaction(tx.id)
    if arg == b"T":
        xs = req.xs
        privileged = frozenset(d for d, dom in xs.domains.items()
                               if dom.connection.caller.privileged)
        before = tx.commit(xs.tree, xs.quotas, privileged | {0})
        views = (xs.tree.peek, before.get)
        for path in before:
            xs.fire_watches(path, views=views)
    return OK


# -- domains ------------------------------------------------------------------
def do_introduce(req: Request) -> bytes:
    strings = get_strings(req.msg.payload)
    if len(strings) < 3:
        raise XenstoreError("EINVAL", "expected domid, mfn and event channel")
    domid = as_u32(c_atoi(strings[0]))
    mfn = as_u32(c_atoi(strings[1]))
    evtchn = as_u32(c_atoi(strings[2]))
    if evtchn == 0:
        raise XenstoreError("EINVAL", "event channel 0")
    if domid >= DOMID_FIRST_RESERVED:  # pyxen check: no ring for reserved ids
        raise XenstoreError("EINVAL", f"reserved domain id {domid}")
    req.xs.introduce(domid, mfn, evtchn)
    return OK


def _introduced(req: Request) -> int:
    domid = domid_arg(req.msg.payload)
    if domid == 0:
        raise XenstoreError("EINVAL", "domain 0")
    if domid not in req.xs.domains:
        raise XenstoreError("ENOENT", f"domain {domid} not introduced")
    return domid


def do_release(req: Request) -> bytes:
    req.xs.release(_introduced(req))
    return OK


def do_resume(req: Request) -> bytes:
    req.xs.domains[_introduced(req)].shutdown = False
    return OK


def do_set_target(req: Request) -> bytes:
    strings = get_strings(req.msg.payload)
    if len(strings) < 2:
        raise XenstoreError("EINVAL", "expected domid and target")
    domid, target = (as_u32(c_atoi(s)) for s in strings[:2])
    for d in (domid, target):
        if d not in req.xs.domains:
            raise XenstoreError("ENOENT", f"domain {d} not introduced")
    req.xs.set_target(domid, target)
    return OK


def do_get_domain_path(req: Request) -> bytes:
    return f"/local/domain/{domid_arg(req.msg.payload)}\0".encode()


def do_is_domain_introduced(req: Request) -> bytes:
    domid = domid_arg(req.msg.payload)
    return b"T\0" if domid == DOMID_SELF or domid in req.xs.domains else b"F\0"


def do_control(req: Request) -> bytes:
    if req.conn.domid != 0:
        raise XenstoreError("EACCES", "control is for domain 0")
    return control(req.xs, req.msg.payload)


Handler = Callable[[Request], bytes]
PRIV = 1  # privileged callers only
NOTID = 2  # tx_id ignored

HANDLERS: dict[int, tuple[Handler, int]] = {
    T.CONTROL: (do_control, PRIV),
    T.DIRECTORY: (do_directory, 0),
    T.READ: (do_read, 0),
    T.GET_PERMS: (do_get_perms, 0),
    T.WATCH: (do_watch, NOTID),
    T.UNWATCH: (do_unwatch, NOTID),
    T.TRANSACTION_START: (do_transaction_start, 0),
    T.TRANSACTION_END: (do_transaction_end, 0),
    T.INTRODUCE: (do_introduce, PRIV),
    T.RELEASE: (do_release, PRIV),
    T.GET_DOMAIN_PATH: (do_get_domain_path, 0),
    T.WRITE: (do_write, 0),
    T.MKDIR: (do_mkdir, 0),
    T.RM: (do_rm, 0),
    T.SET_PERMS: (do_set_perms, 0),
    T.IS_DOMAIN_INTRODUCED: (do_is_domain_introduced, PRIV),
    T.RESUME: (do_resume, PRIV),
    T.SET_TARGET: (do_set_target, PRIV),
    T.RESET_WATCHES: (do_reset_watches, 0),
    T.DIRECTORY_PART: (do_directory_part, 0),
}


def _lookup_tx(conn: Connection, msg: Message, flags: int) -> Transaction | None:
    if flags & NOTID or msg.tx_id == 0:
        return None
    tx = conn.transactions.get(msg.tx_id)
    if tx is None:
        raise XenstoreError("ENOENT", f"no transaction {msg.tx_id}")
    return tx


def dispatch(xs: Xenstore, conn: Connection, msg: Message) -> None:
    """Handle ``msg`` from ``conn`` and queue the reply; never raises."""
    after: list[tuple[bytes, bytes]] = []
    try:
        entry = HANDLERS.get(msg.type)
        if entry is None:
            raise XenstoreError("ENOSYS", f"unknown message type {msg.type}")
        handler, flags = entry
        if flags & PRIV and not conn.caller.privileged:
            raise XenstoreError("EACCES", "privileged operation")
        req = Request(xs, conn, msg, _lookup_tx(conn, msg, flags))
        payload = handler(req)
        after = req.after
        if len(payload) > XENSTORE_PAYLOAD_MAX:
            after = []
            raise XenstoreError("E2BIG", "reply too large")
        conn.send(encode(msg.type, msg.req_id, msg.tx_id, payload))
    except XenstoreError as err:
        log.debug("%s: %s -> %s", conn.label, _type_name(msg.type), err)
        conn.send(encode(T.ERROR, msg.req_id, msg.tx_id, err.wire_name.encode() + b"\0"))
    except Exception:  # a bug must not take the daemon down
        log.exception("%s: %s failed", conn.label, _type_name(msg.type))
        conn.send(encode(T.ERROR, msg.req_id, msg.tx_id, b"EIO\0"))
    for path, token in after:
        conn.send_event(path, token)


def _type_name(msg_type: int) -> str:
    try:
        return T(msg_type).name
    except ValueError:
        return str(msg_type)
