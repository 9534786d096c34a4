"""Argo's state and operations: rings, sends, notifications, teardown.

``Argo`` (one per hypervisor) holds an ``Endpoint`` per domain that may use
Argo -- every guest created while Argo is on and the policy grants it
``enable``, and domain 0 (the host side, ``pyxen.argo``) -- and answers the
four operations of ``argo_op`` with Xen 4.12.1's rules (the hypercall layer,
hv/hypercalls/argo_op.py, decodes guest memory; the host endpoint,
control/argo_ops.py, calls the same methods).

Locking: one domain's traffic must not stall another's
-------------------------------------------------------
Xen's design (docs/designs/argo.pandoc) has a global rwlock L1, per-domain
L2 locks and a per-ring L3 lock.  pyxen keeps the same layering with plain
locks, taken only in this order and never while signalling:

- ``Argo._lock`` (L1): guards the endpoint table.  Taken only to add or
  remove an endpoint (domain creation and destruction); every operation
  reads the table without it (one dict lookup).
- ``Endpoint.lock`` (L2): guards one domain's ring table and ring count.
  Held only to look a ring up, add or remove one: never during a copy.
- ``Ring.lock`` (L3): guards one ring's pages, ``tx``, pending list and
  ``dead`` flag.  A send holds it for the copy into that ring only.

So a sender copying a megabyte into ring R of domain B holds only R's lock:
other senders to B's other rings, B registering rings, and all traffic of
other domains go on in parallel (copies release the GIL, buffer.py).
Removing a ring (unregister, re-registration failure, teardown) takes it
out of the table under L2, then marks it ``dead`` under its L3 lock, which
waits for a copy in flight; a sender that found the ring before it was
removed sees ``dead`` and answers as if it had not found it.  Only then are
its pages released, and an owner's memory is unmapped only after its
teardown (``domain_destroyed``) has done this for every ring: no copy can
reach memory that is gone.

Signals (VIRQ_ARGO) are raised after every lock is dropped; the pending
list of a ring says whom to signal when space frees (at most 32 waiters per
ring, one entry per waiting domain, sized to the largest message it waits
to send).

Trust: the receiver's ``rx_ptr`` is read afresh and sanitised for every
send and query (ring.py); ``tx`` is the hypervisor's own copy, written back
to the ring but never read from it after registration.  The source of a
message is always the sending domain (``Endpoint.domid``), whatever the
caller asked.  A ring's pages are resolved and pinned at registration, so a
copy for one ring can only reach that ring's own pages.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from pyxen.abi.argo import XEN_ARGO_DOMID_ANY, ArgoRingFlags
from pyxen.abi.errno import XenErrno
from pyxen.hv.argo import ring as R
from pyxen.hv.argo.buffer import RingBuffer
from pyxen.hv.argo.config import ArgoConfig
from pyxen.hv.argo.policy import DUMMY, XEN_TYPE, Perm, Policy
from pyxen.hv.errors import HypercallError

# A message header: len, source (aport, domain_id, pad), message_type.
_MSG_HEADER = struct.Struct("<IIHHI")
# Denials logged one by one before they are only counted.
_MAX_DENIAL_LINES = 256

Span = tuple[int, int]  # (host address, length) of source bytes


class RingKey(NamedTuple):
    aport: int
    partner: int  # a domid, or XEN_ARGO_DOMID_ANY for a wildcard ring


@dataclass(eq=False)
class Ring:
    key: RingKey
    length: int
    buffer: RingBuffer
    release: Callable[[], None]  # gives the pages back (guest pins, or host memory)
    tx: int = 0
    pending: dict[int, int] = field(default_factory=dict)  # waiting domid -> bytes
    dead: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def wildcard(self) -> bool:
        return self.key.partner == XEN_ARGO_DOMID_ANY

    def space(self) -> int:
        """Payload bytes that fit now (L3 held)."""
        return R.payload_space(R.sanitize_rx(self.buffer.rx_ptr, self.length), self.tx,
                               self.length)


@dataclass(eq=False)
class Endpoint:
    """One domain's Argo state (Xen's ``struct argo_domain``)."""

    domid: int
    label: str
    signal: Callable[[], None]  # raise VIRQ_ARGO on this domain
    rings: dict[RingKey, Ring] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def find(self, aport: int, sender: int) -> Ring | None:
        """The ring a message from ``sender`` to ``aport`` goes to: the sender's own
        unicast ring first, then the wildcard ring."""
        with self.lock:
            ring = self.rings.get(RingKey(aport, sender))
            if ring is None:
                ring = self.rings.get(RingKey(aport, XEN_ARGO_DOMID_ANY))
            return ring


class Query(NamedTuple):
    """What notify says of one ring: ``flags``, and ``max_message_size`` if it exists."""

    flags: ArgoRingFlags
    max_message_size: int | None


class Argo:
    def __init__(self, config: ArgoConfig, log: Callable[[str], None],
                 exists: Callable[[int], bool], policy: Policy = DUMMY) -> None:
        self.config = config
        self.policy = policy
        self._log = log
        self._exists = exists  # does a domain of this id exist (Argo or not)?
        self._lock = threading.Lock()  # L1
        self._endpoints: dict[int, Endpoint] = {}
        self._labels: dict[int, str] = {}
        self._denials: set[tuple[str, int, int]] = set()
        self.denied = 0  # every denial, logged or not

    # -- domains -----------------------------------------------------------------

    def attach(self, domid: int, label: str, signal: Callable[[], None]) -> Endpoint | None:
        """A domain is created (Xen's argo_init): it gets Argo state if Argo is on
        and the policy lets it ``enable``.  Its label is kept for policy checks."""
        with self._lock:
            self._labels[domid] = label
        if not self.config.enabled or not self._allowed(Perm.enable, domid, None):
            return None
        endpoint = Endpoint(domid, label, signal)
        with self._lock:
            self._endpoints[domid] = endpoint
        return endpoint

    def detach(self, domid: int) -> None:
        """The domain is being destroyed (its vCPUs have stopped; its memory is still
        mapped): remove its rings, the rings whose only partner it was, and its
        waits on other rings (Xen's argo_destroy)."""
        with self._lock:
            gone = self._endpoints.pop(domid, None)
            self._labels.pop(domid, None)
            others = list(self._endpoints.values())
        if gone is not None:
            with gone.lock:
                rings = list(gone.rings.values())
                gone.rings.clear()
            for ring in rings:
                _retire(ring)
        for other in others:
            with other.lock:
                partnered = [k for k in other.rings if k.partner == domid]
                dropped = [other.rings.pop(k) for k in partnered]
                waited = list(other.rings.values())
            for ring in dropped:
                _retire(ring)
            for ring in waited:
                with ring.lock:
                    ring.pending.pop(domid, None)

    def endpoint(self, domid: int) -> Endpoint | None:
        return self._endpoints.get(domid)

    def enabled_for(self, domid: int) -> bool:
        """Xen's per-call checks: Argo is on and the policy lets the domain ``enable``."""
        if not self.config.enabled:
            raise HypercallError(XenErrno.EOPNOTSUPP)
        return self._check(Perm.enable, domid, None)

    def _caller(self, domid: int) -> Endpoint:
        endpoint = self._endpoints.get(domid)
        if endpoint is None:
            raise HypercallError(XenErrno.ENODEV)
        return endpoint

    # -- policy --------------------------------------------------------------------

    def _allowed(self, perm: Perm, source: int, target: int | None) -> bool:
        src = self._labels.get(source, "")
        tgt = XEN_TYPE if target is None else self._labels.get(target, "")
        if self.policy.allows(perm, src, tgt):
            return True
        self.denied += 1
        key = (perm.value, source, -1 if target is None else target)
        if key not in self._denials and len(self._denials) < _MAX_DENIAL_LINES:
            self._denials.add(key)
            where = "xen" if target is None else f"d{target}"
            self._log(f"argo: avc: denied {{ {perm.value} }} for d{source} -> {where} "
                      f"scontext={src} tcontext={tgt} tclass=argo")
        return False

    def _check(self, perm: Perm, source: int, target: int | None) -> bool:
        if not self._allowed(perm, source, target):
            raise HypercallError(XenErrno.EPERM)
        return True

    def set_policy(self, policy: Policy) -> None:
        """Replace the policy (``pyxen loadpolicy``): later checks use the new one;
        denials are logged afresh."""
        self.policy = policy
        self._denials = set()

    def label(self, domid: int) -> str | None:
        return self._labels.get(domid)

    # -- register_ring / unregister_ring ----------------------------------------

    def register(self, domid: int, aport: int, partner: int, pad: int, length: int,
                 npages: int, fail_exist: bool,
                 pages: Callable[[], tuple[list[int], Callable[[], None]]]) -> None:
        """XEN_ARGO_OP_register_ring.  ``pages`` resolves and pins the ring's memory
        (host addresses of its pages in ring order, and how to release them); it
        raises HypercallError (-EINVAL for a page that is not ordinary RAM)."""
        if not R.valid_length(length, npages) or pad != 0:
            raise HypercallError(XenErrno.EINVAL)
        if partner == XEN_ARGO_DOMID_ANY:
            if not self.config.mac_permissive:
                raise HypercallError(XenErrno.EPERM)
            self._check(Perm.register_any_source, domid, None)
        else:
            if not self._exists(partner):
                raise HypercallError(XenErrno.ESRCH)
            self._check(Perm.register_single_source, domid, partner)
        me = self._caller(domid)
        if partner != XEN_ARGO_DOMID_ANY and partner not in self._endpoints:
            raise HypercallError(XenErrno.ECONNREFUSED)
        key = RingKey(aport, partner)
        with me.lock:
            if len(me.rings) >= R.MAX_RINGS_PER_DOMAIN:
                raise HypercallError(XenErrno.ENOSPC)
            old = me.rings.get(key)
            if old is not None and (fail_exist or old.length != length):
                raise HypercallError(XenErrno.EEXIST)
            try:
                addrs, release = pages()
            except BaseException:  # a bad page (-EINVAL) or an unreadable gfn list (-EFAULT)
                if old is not None:  # Xen drops a ring whose re-registration failed
                    del me.rings[key]
                    _retire(old)
                raise
            buffer = RingBuffer(addrs)
            tx = buffer.tx_ptr
            repaired = R.repair_tx(tx, buffer.rx_ptr, length)
            if repaired is not None:
                buffer.tx_ptr = tx = repaired
            if old is None:
                me.rings[key] = Ring(key, length, buffer, release, tx)
                return
        # Re-registration: the new pages replace the old ones; the pending list stays.
        with old.lock:
            old_release = old.release
            old.buffer, old.release, old.tx = buffer, release, tx
        old_release()

    def unregister(self, domid: int, aport: int, partner: int, pad: int,
                   release: Callable[[], None] | None = None) -> None:
        """XEN_ARGO_OP_unregister_ring.  ``release`` (the host endpoint, where several
        clients share domain 0): remove the ring only if it is the one registered
        with that ``release``, else -ENOENT, so a client never removes a ring that
        replaced its own (after a partner's teardown retired it)."""
        if pad != 0:
            raise HypercallError(XenErrno.EINVAL)
        me = self._caller(domid)
        key = RingKey(aport, partner)
        with me.lock:
            ring = me.rings.get(key)
            if ring is not None and release is not None and ring.release != release:
                ring = None
            if ring is not None:
                del me.rings[key]
        if ring is None:
            raise HypercallError(XenErrno.ENOENT)
        _retire(ring)

    # -- sendv ---------------------------------------------------------------------

    def sendv(self, domid: int, src_aport: int, src_domid: int, src_pad: int,
              dst_aport: int, dst_domid: int, dst_pad: int, lengths: Sequence[int],
              pads: Sequence[int], message_type: int,
              source: Callable[[int], list[Span]]) -> int:
        """XEN_ARGO_OP_sendv: the payload bytes queued.  ``lengths``/``pads`` are the
        iovs' fields; ``source(i)`` gives iov ``i``'s bytes as host spans (raising
        a guest fault for memory the sender cannot read).  Nothing is written to
        the ring unless every iov can be read."""
        if src_pad or dst_pad:
            raise HypercallError(XenErrno.EINVAL)
        if src_domid == XEN_ARGO_DOMID_ANY:
            src_domid = domid
        if src_domid != domid:
            raise HypercallError(XenErrno.EPERM)
        if not self._exists(dst_domid):
            raise HypercallError(XenErrno.ESRCH)
        self._check(Perm.send, domid, dst_domid)
        self._caller(domid)
        dst = self._endpoints.get(dst_domid)
        if dst is None:
            raise HypercallError(XenErrno.ECONNREFUSED)
        ring = dst.find(dst_aport, domid)
        total = self._insert(ring, domid, src_aport, lengths, pads, message_type, source)
        dst.signal()
        return total

    def _insert(self, ring: Ring | None, domid: int, src_aport: int, lengths: Sequence[int],
                pads: Sequence[int], message_type: int,
                source: Callable[[int], list[Span]]) -> int:
        if ring is None:
            raise HypercallError(XenErrno.ECONNREFUSED)
        with ring.lock:
            if ring.dead:
                raise HypercallError(XenErrno.ECONNREFUSED)
            total = _count(lengths, pads)
            length = ring.length
            if R.too_big(total, length):
                raise HypercallError(XenErrno.EMSGSIZE)
            rx = R.sanitize_rx(ring.buffer.rx_ptr, length)
            if not R.fits(total, rx, ring.tx, length):
                queued = _wait_for_space(ring, domid, total)
                raise HypercallError(XenErrno.EAGAIN if queued else XenErrno.EBUSY)
            spans = [source(i) for i, n in enumerate(lengths) if n]
            buf = ring.buffer
            buf.write_bytes(ring.tx, _MSG_HEADER.pack(total + R.MSG_HEADER, src_aport, domid,
                                                      0, message_type))
            pos = ring.tx + R.MSG_HEADER
            if pos == length:
                pos = 0
            for iov in spans:
                for addr, n in iov:
                    runs, pos = R.wrap_runs(pos, n, length)
                    for off, m in runs:
                        buf.write(off, addr, m)
                        addr += m
            ring.tx = R.next_tx(pos, length)
            buf.tx_ptr = ring.tx
        return total

    # -- notify --------------------------------------------------------------------

    def notify_pending(self, domid: int) -> None:
        """The first step of every XEN_ARGO_OP_notify: the caller may have consumed
        messages; signal every domain waiting on one of its rings whose wait is
        now satisfied."""
        me = self._caller(domid)
        with me.lock:
            rings = list(me.rings.values())
        wake: set[int] = set()
        for ring in rings:
            with ring.lock:
                if ring.dead or not ring.pending:
                    continue
                space = ring.space()
                if space == 0:
                    continue
                for waiter, wanted in list(ring.pending.items()):
                    if space >= wanted:
                        del ring.pending[waiter]
                        wake.add(waiter)
        for waiter in wake:
            endpoint = self._endpoints.get(waiter)
            if endpoint is not None:
                endpoint.signal()

    def query(self, domid: int, dst_domid: int, aport: int, space_required: int) -> Query:
        """One entry of XEN_ARGO_OP_notify (Xen's fill_ring_data)."""
        dst = self._endpoints.get(dst_domid)
        if dst is None:
            return Query(ArgoRingFlags(0), None)
        self._check(Perm.send, domid, dst_domid)
        ring = dst.find(aport, domid)
        if ring is None:
            return Query(ArgoRingFlags(0), None)
        flags = ArgoRingFlags.EXISTS
        with ring.lock:
            if ring.dead:
                return Query(ArgoRingFlags(0), None)
            biggest = R.max_message_size(ring.length)
            if ring.wildcard:
                flags |= ArgoRingFlags.SHARED
            space = ring.space()
            if space_required > biggest:
                flags |= ArgoRingFlags.EMSGSIZE
            elif space >= space_required:
                ring.pending.pop(domid, None)
                flags |= ArgoRingFlags.SUFFICIENT
            elif not _wait_for_space(ring, domid, space_required):
                flags |= ArgoRingFlags.EBUSY
        if space == biggest:
            flags |= ArgoRingFlags.EMPTY
        return Query(flags, biggest)


def _count(lengths: Sequence[int], pads: Sequence[int]) -> int:
    """The payload size of a message's iovs (Xen's iov_count)."""
    total = 0
    for n, pad in zip(lengths, pads, strict=True):
        if pad:
            raise HypercallError(XenErrno.EINVAL)
        if n > R.MAX_MESSAGE:
            raise HypercallError(XenErrno.EINVAL)
        total += n
        if total > R.MAX_MESSAGE:
            raise HypercallError(XenErrno.EMSGSIZE)
    return total


def _wait_for_space(ring: Ring, domid: int, wanted: int) -> bool:
    """Queue (or enlarge) ``domid``'s wait for ``wanted`` bytes on ``ring`` (L3 held);
    False if 32 other domains already wait (sendv then answers -EBUSY)."""
    if domid in ring.pending:
        ring.pending[domid] = max(ring.pending[domid], wanted)
        return True
    if len(ring.pending) >= R.MAX_PENDING_PER_RING:
        return False
    ring.pending[domid] = wanted
    return True


def _retire(ring: Ring) -> None:
    """A ring out of its table: wait for a copy in flight, then give its pages back."""
    with ring.lock:
        ring.dead = True
        ring.pending.clear()
    ring.release()
