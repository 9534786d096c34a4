"""FIFO event channels: Xen 4.12's FIFO ABI beside the 2-level one (§6.1).

The guest's side (``xen/include/public/event_channel.h``): every port has a
u32 *event word* in an *event array* made of guest pages the guest hands
over one at a time (EVTCHNOP_expand_array; 1024 words a page, at most 128
pages for 2^17 ports).  A word holds PENDING (bit 31), MASKED (30), LINKED
(29), BUSY (28) and a 17-bit LINK to the next port of its queue.  Each vCPU
has a *control block* in a guest page (EVTCHNOP_init_control): a READY
bitmap with one bit per priority, and HEAD[16], the first port of each of
its 16 queues (priority 0 is the highest).  Queues are singly linked lists
through LINK; the hypervisor appends at the tail, the guest consumes from
the head and clears LINKED as it goes.

Design (Xen's xen/common/event_fifo.c, rewritten for one lock):
- ``EventFifo`` is a domain's FIFO state, in ``domain.events.fifo`` while
  the ABI is in use: the host address of each event-array page, and per
  vCPU (``FifoVcpu``) the control block's address and the hypervisor-side
  tail of each queue.  The first init_control creates it and switches
  ``domain.evtchn_ops`` to ``FIFO_OPS`` (Xen's evtchn_port_ops_fifo);
  EVTCHNOP_reset and domain teardown drop it (``event_channel.reset``).
- set_pending (``queue_event``): Xen's algorithm, all of it but the queue
  choice in one machine-code routine (``atomic.fifo_set_pending``):
  test-and-set PENDING; if not MASKED, test-and-set LINKED; if we set it,
  link the port behind the queue's tail with a compare-and-exchange that
  succeeds only while the tail is still LINKED (BUSY and four retries if
  the guest keeps changing the tail word), else write HEAD; when HEAD was
  written, set the queue's READY bit and, if it was clear,
  evtchn_upcall_pending, raising the upcall when that went 0 -> 1.
- Queue moves: a port's queue is (notify vCPU, priority) at the time it is
  linked; ``last_queue[port]`` remembers it (Xen's last_vcpu_id and
  last_priority).  Linking onto a queue first drops the port from the tail
  of its last queue (if it still is that tail: that queue is now empty for
  the hypervisor), so a later event on the old queue never links behind a
  port that now lives on another queue.  ``last_queue`` survives close and
  re-bind, as Xen's fields do.
- Events sent to a port whose array page does not exist yet are remembered
  (``saved_pending``, Xen's evtchn->pending) and queued when the page is
  added; switching from 2-level copies the ports pending in shared_info
  there (Xen's setup_ports), so nothing pending is lost by the switch.

Invariants (event lock held): a port is the tail of at most one queue, the
one in ``last_queue``; every tail has an event-array page; ``array`` only
grows while the ABI is on; a vCPU's control block, once set, stays until
the FIFO state is dropped.  The hypervisor never follows LINK or reads
HEAD: whatever the guest writes into its words and control blocks, the
hypervisor only touches event words of ports below ``nr_ports``, the 72
bytes of each control block, and each vCPU's evtchn_upcall_pending.

Locking: everything runs under the hypervisor's event lock (Xen's per-
queue locks are not needed), except the guest page lookups, which take the
domain lock (p2m) before the event lock is taken, never inside it.  The
guest changes words and control blocks concurrently from its vCPUs, so
every read-modify-write of guest memory is one locked instruction.

Guest pages: the hypervisor writes control blocks and event-array pages as
long as the ABI is on, so it holds each page like Xen's get_page: the pool
page is pinned in the domain's page pins (``GrantTable.hold_page``, the
mechanism that keeps granted pages).  A guest that balloons such a page out
or maps something else over its frame only unmaps it: the page stays the
domain's, unused by anyone else, and the hypervisor keeps writing into it
until reset or teardown releases it.  Accepted GFNs: RAM and the
hypervisor pages the guest mapped (shared_info, grant frames), as Xen
accepts any page the domain owns writable; anything else (a hole, MMIO,
a grant mapping of another domain's page, beyond the physical address
width) is -EINVAL.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

from pyxen.abi.errno import XenErrno
from pyxen.abi.event_channel import (
    EVTCHN_FIFO_MASKED,
    EVTCHN_FIFO_MAX_QUEUES,
    EVTCHN_FIFO_NR_CHANNELS,
    EVTCHN_FIFO_PENDING,
    EVTCHN_FIFO_PRIORITY_DEFAULT,
    EVTCHN_FIFO_PRIORITY_MIN,
    evtchn_fifo_control_block,
)
from pyxen.hv import atomic
from pyxen.hv.errors import HypercallError
from pyxen.hv.event_channel import TWO_LEVEL, PortOps, wake_pollers
from pyxen.memory import PAGE_SIZE, Gfn, PageKind

if TYPE_CHECKING:
    from pyxen.hv.domain import Domain

EVENT_WORD_SIZE = 4
EVENT_WORDS_PER_PAGE = PAGE_SIZE // EVENT_WORD_SIZE  # 1024
MAX_EVENT_ARRAY_PAGES = EVTCHN_FIFO_NR_CHANNELS // EVENT_WORDS_PER_PAGE  # 128
CONTROL_BLOCK_SIZE = ctypes.sizeof(evtchn_fifo_control_block)  # 72
HEAD_OFFSET = evtchn_fifo_control_block.head.offset  # 8
CONTROL_BLOCK_ALIGN = 8
# queue_event's extra result bit (the others are atomic.FIFO_*).
NO_CONTROL_BLOCK = 16


class FifoVcpu:
    """One vCPU's control block and the tails of its 16 queues."""

    __slots__ = ("control_block", "page", "tails")

    def __init__(self) -> None:
        self.control_block = 0  # host address; 0: no control block yet
        self.page: int | None = None  # the held pool page
        self.tails = [0] * EVTCHN_FIFO_MAX_QUEUES  # 0: the queue is empty


class EventFifo:
    """A domain's FIFO state (callers hold the event lock)."""

    def __init__(self, nr_vcpus: int) -> None:
        self.vcpus = [FifoVcpu() for _ in range(nr_vcpus)]
        self.array: list[int] = []  # host address of each event-array page
        self.array_pages: list[int] = []  # ... and the held pool page
        self.saved_pending: set[int] = set()  # events for ports without a page
        self.last_queue: dict[int, int] = {}  # port -> vcpu_id << 4 | priority

    @property
    def nr_ports(self) -> int:
        """Ports with an event word (Xen's num_evtchns)."""
        return len(self.array) * EVENT_WORDS_PER_PAGE

    def word(self, port: int) -> int:
        """Host address of ``port``'s event word; 0 if its page does not exist."""
        array = self.array  # one read: release() replaces the list, never shrinks it
        page = port >> 10
        if 0 <= page < len(array):
            return array[page] + (port & (EVENT_WORDS_PER_PAGE - 1)) * EVENT_WORD_SIZE
        return 0

    def set_control_block(self, vcpu_id: int, host_addr: int, page: int | None) -> None:
        v = self.vcpus[vcpu_id]
        v.control_block, v.page = host_addr, page

    def add_array_page(self, host_addr: int, page: int | None) -> None:
        self.array.append(host_addr)
        self.array_pages.append(-1 if page is None else page)

    def queue_event(self, vcpu_id: int, port: int, priority: int, word: int,
                    upcall: int) -> int:
        """Set ``port`` pending and queue it on (vcpu_id, priority); FIFO_* bits.

        ``word`` is the port's event word, ``upcall`` the host address of the
        vCPU's evtchn_upcall_pending."""
        v = self.vcpus[vcpu_id]
        block = v.control_block
        if not block:
            # The guest must not unmask events before it has a control block;
            # Xen sets PENDING and links nothing.
            return NO_CONTROL_BLOCK | int(atomic.test_and_set_bit32(word, EVTCHN_FIFO_PENDING))
        last = self.last_queue.get(port, 0)
        tails = v.tails
        tail = tails[priority]
        if tail == port:
            # The port is its own queue's tail (it was consumed and is being
            # re-linked): that queue is empty for us.
            tail = 0
        result: int = atomic.fifo_set_pending(
            word, self.word(tail) if tail else 0, block + HEAD_OFFSET + 4 * priority, block,
            upcall, port | priority << 32)
        if result & atomic.FIFO_QUEUED:
            old_tails = self.vcpus[last >> 4].tails
            if old_tails[last & 15] == port:
                old_tails[last & 15] = 0
            now = vcpu_id << 4 | priority
            if now != last:
                self.last_queue[port] = now
            tails[priority] = port
        return result

    def release(self, domain: Domain) -> None:
        """Give the held pages back (reset or teardown, event lock held)."""
        for v in self.vcpus:
            if v.page is not None:
                domain.grants.release_page(v.page)
            v.control_block, v.page = 0, None
        for page in self.array_pages:
            if page >= 0:
                domain.grants.release_page(page)
        self.array, self.array_pages = [], []


def _fifo(domain: Domain) -> EventFifo:
    fifo = domain.events.fifo
    assert fifo is not None, "FIFO port ops without FIFO state"
    return fifo


# -- port operations (event lock held) -----------------------------------------------


def set_pending(domain: Domain, vcpu_id: int, port: int) -> None:
    if domain.dying:
        return
    fifo = _fifo(domain)
    word = fifo.word(port)
    if not word:
        fifo.saved_pending.add(port)  # queued when its array page is added
        return
    vcpu = domain.vcpus[vcpu_id]
    result = fifo.queue_event(vcpu_id, port, domain.events.channels[port].priority, word,
                              vcpu.vcpu_info_host)
    if result & atomic.FIFO_RAISE_UPCALL:
        vcpu.raise_upcall()
    if result & (atomic.FIFO_LINK_GAVE_UP | NO_CONTROL_BLOCK):
        _report(domain, vcpu_id, port, result)
    if not result & atomic.FIFO_WAS_PENDING and domain.pollers:
        wake_pollers(domain, port)


def _report(domain: Domain, vcpu_id: int, port: int, result: int) -> None:
    if result & NO_CONTROL_BLOCK:
        domain.log_once(f"fifo-no-control-block-{vcpu_id}",
                        f"vcpu {vcpu_id} has no FIFO control block: port {port} left "
                        "pending, not queued (as Xen)")
    else:
        domain.log_once("fifo-link-gave-up",
                        f"port {port}: the guest kept changing its queue's tail word; "
                        "event counted as linked (Xen: 'not linked')")


def clear_pending(domain: Domain, port: int) -> None:
    fifo = _fifo(domain)
    # Xen keeps a stale saved flag here; dropping it spares the next user of
    # the port a spurious event when the page arrives.
    fifo.saved_pending.discard(port)
    word = fifo.word(port)
    if word:
        atomic.test_and_clear_bit32(word, EVTCHN_FIFO_PENDING)


def unmask(domain: Domain, port: int) -> None:
    """EVTCHNOP_unmask: clear MASKED, and queue the event if it is pending."""
    word = _fifo(domain).word(port)
    if not word:
        return
    atomic.test_and_clear_bit32(word, EVTCHN_FIFO_MASKED)
    if atomic.test_bit32(word, EVTCHN_FIFO_PENDING):
        set_pending(domain, domain.events.channels[port].notify_vcpu, port)


def _word_unlocked(domain: Domain, port: int) -> int:
    """The event word for callers without the event lock (SCHEDOP_poll): the
    ABI may be switched back meanwhile; a stale address still lies in the
    domain's own pool, so reading it is harmless."""
    fifo = domain.events.fifo
    return fifo.word(port) if fifo is not None else 0


def is_pending(domain: Domain, port: int) -> bool:
    word = _word_unlocked(domain, port)
    return bool(word) and bool(atomic.test_bit32(word, EVTCHN_FIFO_PENDING))


def is_masked(domain: Domain, port: int) -> bool:
    word = _word_unlocked(domain, port)
    return not word or bool(atomic.test_bit32(word, EVTCHN_FIFO_MASKED))


def set_priority(domain: Domain, port: int, priority: int) -> None:
    """Future events of ``port`` go to queue ``priority``; one already queued stays."""
    if not 0 <= priority <= EVTCHN_FIFO_PRIORITY_MIN:
        raise HypercallError(XenErrno.EINVAL)
    domain.events.channels[port].priority = priority


FIFO_OPS = PortOps(
    name="fifo",
    set_pending=set_pending,
    clear_pending=clear_pending,
    unmask=unmask,
    is_pending=is_pending,
    is_masked=is_masked,
    set_priority=set_priority,
)


# -- guest pages ---------------------------------------------------------------------


def _hold_guest_page(domain: Domain, gfn: int) -> int:
    """Pin the page at ``gfn`` for the hypervisor's use; its pool page, or -EINVAL."""
    with domain.lock:
        found = domain.memory.lookup(Gfn(gfn)) if 0 <= gfn < domain.max_gfn else None
        if found is None or found[1] is PageKind.FOREIGN:
            raise HypercallError(XenErrno.EINVAL)
        domain.grants.hold_page(found[0])
        return found[0]


def _host(domain: Domain, pool_page: int) -> int:
    return domain.memory.host_base + pool_page * PAGE_SIZE


# -- EVTCHNOP_init_control and EVTCHNOP_expand_array -----------------------------------


def init_control(domain: Domain, vcpu_id: int, gfn: int, offset: int) -> None:
    """Register ``vcpu_id``'s control block; the first call switches to FIFO.

    Xen 4.12's checks in order: -ENOENT for a vCPU the domain lacks; -EINVAL
    for a block not inside the page or not 8-byte aligned, for a vCPU that
    already has one, and for a GFN that is not the domain's page."""
    if not 0 <= vcpu_id < len(domain.vcpus):
        raise HypercallError(XenErrno.ENOENT)
    if offset > PAGE_SIZE - CONTROL_BLOCK_SIZE or offset % CONTROL_BLOCK_ALIGN:
        raise HypercallError(XenErrno.EINVAL)
    lock = domain.hv.event_lock
    with lock:
        _check_no_control_block(domain, vcpu_id)
    page: int | None = _hold_guest_page(domain, gfn)
    try:
        with lock:
            _check_no_control_block(domain, vcpu_id)
            fifo = domain.events.fifo
            switch = fifo is None
            if fifo is None:
                fifo = EventFifo(len(domain.vcpus))
            assert page is not None
            fifo.set_control_block(vcpu_id, _host(domain, page) + offset, page)
            page = None
            if switch:
                _setup_ports(domain, fifo)
                domain.events.fifo = fifo
                domain.evtchn_ops = FIFO_OPS
                # Once: a guest looping init_control/reset would flood the log.
                domain.log_once("fifo-switch", "event channels: switched to the FIFO ABI "
                                "(later switches are not logged)")
    finally:
        if page is not None:
            domain.grants.release_page(page)


def _check_no_control_block(domain: Domain, vcpu_id: int) -> None:
    if domain.dying:  # no vCPU runs by then; refuse rather than hold pages for ever
        raise HypercallError(XenErrno.EINVAL)
    fifo = domain.events.fifo
    if fifo is not None and fifo.vcpus[vcpu_id].control_block:
        raise HypercallError(XenErrno.EINVAL)


def _setup_ports(domain: Domain, fifo: EventFifo) -> None:
    """Xen's setup_ports: keep 2-level pending state, default priority for all."""
    events = domain.events
    for port in range(1, min(len(events.channels), domain.layout.nr_ports)):
        if TWO_LEVEL.is_pending(domain, port):
            fifo.saved_pending.add(port)
        events.channels[port].priority = EVTCHN_FIFO_PRIORITY_DEFAULT


def expand_array(domain: Domain, gfn: int) -> None:
    """Add one event-array page: -EOPNOTSUPP before FIFO, -ENOSPC past 128
    pages (checked before the GFN, as Xen does), -EINVAL for a bad GFN."""
    lock = domain.hv.event_lock
    with lock:
        _check_room(domain)
    page: int | None = _hold_guest_page(domain, gfn)
    try:
        with lock:
            fifo = _check_room(domain)
            first = fifo.nr_ports
            assert page is not None
            fifo.add_array_page(_host(domain, page), page)
            page = None
            _raise_saved(domain, fifo, first)
    finally:
        if page is not None:
            domain.grants.release_page(page)


def _check_room(domain: Domain) -> EventFifo:
    fifo = domain.events.fifo
    if fifo is None or domain.dying:
        raise HypercallError(XenErrno.EOPNOTSUPP)
    if len(fifo.array) >= MAX_EVENT_ARRAY_PAGES:
        raise HypercallError(XenErrno.ENOSPC)
    return fifo


def _raise_saved(domain: Domain, fifo: EventFifo, first: int) -> None:
    """Queue the events that arrived for the new page's ports before it existed."""
    channels = domain.events.channels
    end = min(fifo.nr_ports, len(channels))
    for port in sorted(p for p in fifo.saved_pending if first <= p < end):
        fifo.saved_pending.discard(port)
        set_pending(domain, channels[port].notify_vcpu, port)
