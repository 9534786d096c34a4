"""Control operations for domain 0's Argo endpoint: the host side of ``pyxen.argo``.

Domain 0 is the hypervisor process (``CONTROL_DOMID``), and its Argo
endpoint is shared by every toolstack connection: these operations let a
client register domain 0 rings, send as domain 0, and learn when
domain 0's VIRQ_ARGO is raised, through the same ``Argo`` methods the
guests' ``argo_op`` reaches (hv/argo/core.py).

Memory: each ring lives in a memfd of ``npages(len)`` pages the hypervisor
creates, maps (``RingBuffer`` over its page addresses) and hands to the
client, which maps it too: the client reads messages straight out of the
shared pages and advances ``rx_ptr`` itself, as a guest does, and nothing
goes over the socket per message but the notify.  Sends copy from a
per-connection transmit buffer, another memfd mapped on both sides
(``argo_tx_buffer``): ``argo_send`` names an offset and length in it, so a
megabyte message is one copy, hypervisor side, straight into the ring.
Both files are sealed against shrinking and growing (and against new
seals): a client that truncated one would make the hypervisor's copies
fault.  Whatever the client writes into them is untrusted as guest memory
is: ``rx_ptr`` is sanitised on every use (ring.py), and a transmit
buffer's bytes are only copied.

Ownership: a ring is registered with ``fail_exist``, so one connection
cannot replace another's ring of the same (aport, partner); the session
records its rings, only it may unregister them (others get ENOENT), and
everything -- rings, eventfd, transmit buffer -- is released when the
connection closes (``release``).  A ring whose partner domain is destroyed
is retired by the hypervisor itself (Xen's teardown rule); its memory is
then freed at once, and the session's record of it is only a stale name.

Events: ``argo_events`` gives the connection one eventfd, signalled each
time domain 0's VIRQ_ARGO is raised (a message for any domain 0 ring, or a
space notification for any domain 0 sender), through
``Hypervisor.argo_listeners``.  The signal takes the eventfd's own lock and
writes nothing once the eventfd is closed, so a signal racing with a
disconnect can never write into a reused descriptor number.

Errors are ControlErrors named after the errno Xen would return
(EAGAIN, ECONNREFUSED, EMSGSIZE, EPERM, ...); Argo off is EOPNOTSUPP.
Everything is for the toolstack role only: Argo traffic as domain 0 is
not something a xenstored or consoled needs.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyxen.abi.argo import XEN_ARGO_DOMID_ANY
from pyxen.abi.xen import CONTROL_DOMID, DOMID_FIRST_RESERVED
from pyxen.control.protocol import ControlError
from pyxen.control.session import Session, WithFds
from pyxen.control.shared_memory import SharedMemory
from pyxen.hv.argo import ring as R
from pyxen.hv.argo.policy import FlaskPolicy, PolicyError
from pyxen.hv.errors import HypercallError

if TYPE_CHECKING:
    from pyxen.control.server import ControlServer
    from pyxen.hv.argo.core import Argo

MAX_TX_BUFFER = R.MAX_RING_LEN  # the largest message fits in a 16 MiB ring anyway
_U32 = 0xFFFF_FFFF


class EventFd:
    """Domain 0's VIRQ_ARGO for one connection."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lock = threading.Lock()
        self._open = True

    def signal(self) -> None:
        """Called by the hypervisor (any thread, no Argo lock held); never raises."""
        with self._lock:
            if self._open:
                with contextlib.suppress(OSError):  # a full counter: already signalled
                    os.eventfd_write(self.fd, 1)

    def close(self) -> None:
        with self._lock:
            if self._open:
                self._open = False
                os.close(self.fd)


@dataclass(eq=False)
class ArgoSession:
    """What one connection holds of domain 0's Argo endpoint."""

    rings: dict[tuple[int, int], SharedMemory] = field(default_factory=dict)
    events: EventFd | None = None
    tx: SharedMemory | None = None


def _state(session: Session) -> ArgoSession:
    if session.argo is None:
        session.argo = ArgoSession()
    return session.argo


def _error(e: HypercallError, what: str) -> ControlError:
    return ControlError(e.errno.name, f"{what}: {_REASONS.get(e.errno.name, e.errno.name)}")


_REASONS = {
    "EOPNOTSUPP": "Argo is off (start the hypervisor with --argo)",
    "EPERM": "the XSM policy or the Argo options do not allow it",
    "ENODEV": "domain 0 has no Argo state (the policy refused it 'enable' at start-up)",
    "ESRCH": "no such domain",
    "ECONNREFUSED": "no ring there accepts messages from domain 0",
    "EEXIST": "domain 0 already has that ring (another client may hold it)",
    "ENOSPC": f"domain 0 already has {R.MAX_RINGS_PER_DOMAIN} rings",
    "EMSGSIZE": "the message is larger than the ring can ever hold",
    "EAGAIN": "the ring is full; domain 0 will be notified when space frees",
    "EBUSY": f"the ring is full and {R.MAX_PENDING_PER_RING} domains already wait on it",
    "EINVAL": "invalid arguments",
    "ENOENT": "no such ring",
}


def _argo(server: ControlServer) -> Argo:
    """The hypervisor's Argo, if domain 0 may use it now (Xen's per-call checks)."""
    argo = server.hv.argo
    try:
        argo.enabled_for(CONTROL_DOMID)
    except HypercallError as e:
        raise _error(e, "argo") from None
    return argo


def _int(args: dict[str, Any], key: str, low: int, high: int, what: str,
         default: int | None = None) -> int:
    value = args.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ControlError("EINVAL", f"'{key}' must be {what} ({low} to {high})")
    return value


def _aport(args: dict[str, Any], key: str = "aport") -> int:
    return _int(args, key, 0, _U32, "an Argo port")


def _partner(args: dict[str, Any]) -> int:
    value = args.get("partner", XEN_ARGO_DOMID_ANY)
    if value != XEN_ARGO_DOMID_ANY:
        value = _int(args, "partner", 0, DOMID_FIRST_RESERVED - 1,
                     f"a domain id, or {XEN_ARGO_DOMID_ANY:#x} for any sender")
    return int(value)


def _ring_name(aport: int, partner: int) -> str:
    who = "any" if partner == XEN_ARGO_DOMID_ANY else f"d{partner}"
    return f"ring {aport} ({who})"


def argo_register(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """Register a domain 0 ring; the reply carries its memory (a memfd of ``size`` bytes:
    the 64-byte ring header, then ``len`` data bytes)."""
    aport, partner = _aport(args), _partner(args)
    length = _int(args, "len", R.MIN_RING_LEN, R.MAX_RING_LEN, "a ring length in bytes")
    if length % R.SLOT:
        raise ControlError("EINVAL", f"'len' must be a multiple of {R.SLOT}")
    argo = _argo(server)
    state = _state(session)
    npages = R.npages(length)
    memory = SharedMemory(npages * R.PAGE_SIZE, f"pyxen-argo-{aport}")

    def pages() -> tuple[list[int], Any]:
        return [memory.address + i * R.PAGE_SIZE for i in range(npages)], memory.close

    try:
        argo.register(CONTROL_DOMID, aport, partner, 0, length, npages, True, pages)
    except HypercallError as e:
        memory.close()
        raise _error(e, _ring_name(aport, partner)) from None
    except BaseException:
        memory.close()
        raise
    old = state.rings.get((aport, partner))
    if old is not None:  # retired by a partner's teardown: only its name was left
        old.close()
    state.rings[(aport, partner)] = memory
    return WithFds({"aport": aport, "partner": partner, "len": length,
                    "size": memory.size}, [memory.fd])


def argo_unregister(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    aport, partner = _aport(args), _partner(args)
    state = _state(session)
    memory = state.rings.get((aport, partner))
    if memory is None:
        raise ControlError("ENOENT", f"{_ring_name(aport, partner)} is not registered by "
                                     "this connection")
    del state.rings[(aport, partner)]
    if not _unregister(server.hv.argo, aport, partner, memory):
        raise ControlError("ENOENT", f"{_ring_name(aport, partner)} is gone already: its "
                                     "partner domain was destroyed")
    return None


def _unregister(argo: Argo, aport: int, partner: int, memory: SharedMemory) -> bool:
    """Take the ring out of Argo and free its memory; False if it was gone already
    (retired by its partner's teardown, which freed it)."""
    try:
        argo.unregister(CONTROL_DOMID, aport, partner, 0, memory.close)
    except HypercallError:  # ENOENT
        return False
    finally:
        memory.close()  # out of Argo's tables now, whichever way it left
    return True


def argo_events(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """This connection's eventfd for domain 0's VIRQ_ARGO (the same one each time)."""
    _argo(server)
    state = _state(session)
    if state.events is None:
        state.events = EventFd()
        server.hv.argo_listeners.add(state.events.signal)
    return WithFds({}, [state.events.fd])


def argo_tx_buffer(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """A transmit buffer of at least ``size`` bytes (whole pages), replacing this
    connection's previous one; the reply carries it (a memfd of ``size`` bytes)."""
    size = _int(args, "size", 1, MAX_TX_BUFFER, "a buffer size in bytes")
    _argo(server)
    state = _state(session)
    size = (size + R.PAGE_SIZE - 1) // R.PAGE_SIZE * R.PAGE_SIZE
    if state.tx is not None:
        state.tx.close()
        state.tx = None
    state.tx = SharedMemory(size, "pyxen-argo-tx")
    return WithFds({"size": size}, [state.tx.fd])


def argo_send(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """Send ``len`` bytes at ``offset`` of the transmit buffer as one message from
    domain 0's ``src_aport``; the payload bytes queued."""
    src_aport = _aport(args, "src_aport")
    dst_domid = _int(args, "dst_domid", 0, DOMID_FIRST_RESERVED - 1, "a domain id")
    dst_aport = _aport(args, "dst_aport")
    message_type = _int(args, "message_type", 0, _U32, "a message type", default=0)
    offset = _int(args, "offset", 0, MAX_TX_BUFFER, "an offset in the transmit buffer",
                  default=0)
    length = _int(args, "len", 0, MAX_TX_BUFFER, "a length in bytes")
    argo = _argo(server)
    tx = _state(session).tx
    if tx is None:
        raise ControlError("EINVAL", "this connection has no transmit buffer "
                                     "(ask for one with argo_tx_buffer)")
    if offset + length > tx.size:
        raise ControlError("EINVAL", f"offset {offset} + len {length} is beyond the "
                                     f"transmit buffer ({tx.size} bytes)")

    def source(_i: int) -> list[tuple[int, int]]:
        return [(tx.address + offset, length)]

    try:
        sent = argo.sendv(CONTROL_DOMID, src_aport, CONTROL_DOMID, 0, dst_aport, dst_domid, 0,
                          [length], [0], message_type, source)
    except HypercallError as e:
        raise _error(e, f"send to d{dst_domid} port {dst_aport}") from None
    return {"len": sent}


def argo_notify(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """XEN_ARGO_OP_notify for domain 0: signal every sender waiting on a domain 0 ring
    that now has room, then report on each ring of ``entries`` (``domid``,
    ``aport``, ``space_required``) as Xen fills ``xen_argo_ring_data_ent``."""
    entries = args.get("entries", [])
    if not isinstance(entries, list):
        raise ControlError("EINVAL", "'entries' must be a list")
    if len(entries) > R.MAX_NOTIFY_COUNT:
        raise ControlError("EACCES", f"at most {R.MAX_NOTIFY_COUNT} entries per notify")
    wanted = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ControlError("EINVAL", "each entry must be an object")
        wanted.append((_int(entry, "domid", 0, DOMID_FIRST_RESERVED - 1, "a domain id"),
                       _aport(entry),
                       _int(entry, "space_required", 0, _U32, "a size in bytes", default=0)))
    argo = _argo(server)
    try:
        argo.notify_pending(CONTROL_DOMID)
        found = [argo.query(CONTROL_DOMID, domid, aport, space)
                 for domid, aport, space in wanted]
    except HypercallError as e:
        raise _error(e, "notify") from None
    return {"entries": [{"flags": int(q.flags), "max_message_size": q.max_message_size}
                        for q in found]}


def loadpolicy(server: ControlServer, session: Session, args: dict[str, Any]) -> Any:
    """xl loadpolicy: replace the XSM policy with the FLASK policy ``text`` (read by the
    client, as xl reads the file and hands the hypervisor its bytes)."""
    text = args.get("text")
    source = args.get("source", "<policy>")
    if not isinstance(text, str):
        raise ControlError("EINVAL", "'text' must be the policy's text")
    if not isinstance(source, str) or len(source) > 4096 or not source.isprintable():
        # (printable: it is logged, and a newline would forge a log line)
        raise ControlError("EINVAL", "'source' must be a file name")
    try:
        policy = FlaskPolicy.parse(text, source)
    except PolicyError as e:
        raise ControlError("EINVAL", str(e)) from None
    server.hv.argo.set_policy(policy)
    server.hv.console.log(f"xsm: loaded the FLASK policy {source} ({len(policy.rules)} "
                          "Argo rules)")
    return {"rules": len(policy.rules)}


def release(server: ControlServer, session: Session) -> None:
    """The connection closed: unregister its rings, drop its eventfd and buffer."""
    state = session.argo
    if state is None:
        return
    for (aport, partner), memory in list(state.rings.items()):
        _unregister(server.hv.argo, aport, partner, memory)
    state.rings.clear()
    if state.events is not None:
        server.hv.argo_listeners.discard(state.events.signal)
        state.events.close()
        state.events = None
    if state.tx is not None:
        state.tx.close()
        state.tx = None


OPS = {
    "argo_register": argo_register, "argo_unregister": argo_unregister,
    "argo_events": argo_events, "argo_tx_buffer": argo_tx_buffer, "argo_send": argo_send,
    "argo_notify": argo_notify, "loadpolicy": loadpolicy,
}
