"""The FIFO link algorithm (``EventFifo.queue_event`` and ``atomic.fifo_set_pending``)
on ctypes buffers standing in for a guest's event-array page and control blocks.

A small Python "guest" consumes the queues the way Linux does (xchg READY,
take HEAD when its local head is 0, clear LINKED with a compare-and-exchange
keeping BUSY, follow LINK, highest priority first), so the tests check what
a guest would see, not the hypervisor's private state.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
from collections.abc import Callable, Iterator

import pytest

from pyxen.abi.event_channel import (
    EVTCHN_FIFO_BUSY,
    EVTCHN_FIFO_LINK_MASK,
    EVTCHN_FIFO_LINKED,
    EVTCHN_FIFO_MASKED,
    EVTCHN_FIFO_PENDING,
    evtchn_fifo_control_block,
)
from pyxen.hv import atomic
from pyxen.hv.event_fifo import NO_CONTROL_BLOCK, EventFifo

PENDING = 1 << EVTCHN_FIFO_PENDING
MASKED = 1 << EVTCHN_FIFO_MASKED
LINKED = 1 << EVTCHN_FIFO_LINKED
BUSY = 1 << EVTCHN_FIFO_BUSY
CANARY = 0xA5A5A5A5


class Guest:
    """One event-array page between canary pages, and a control block per vCPU."""

    def __init__(self, nr_vcpus: int = 2) -> None:
        self.mem = (ctypes.c_uint32 * (3 * 1024))(*([CANARY] * (3 * 1024)))
        base = ctypes.addressof(self.mem)
        for i in range(1024, 2048):
            self.mem[i] = 0
        self.blocks = [evtchn_fifo_control_block() for _ in range(nr_vcpus)]
        self.upcall = [(ctypes.c_uint8 * 8)() for _ in range(nr_vcpus)]
        self.fifo = EventFifo(nr_vcpus)
        self.fifo.add_array_page(base + 4096, None)
        for v, cb in enumerate(self.blocks):
            self.fifo.set_control_block(v, ctypes.addressof(cb), None)
        self.local_heads = [[0] * 16 for _ in range(nr_vcpus)]

    def word(self, port: int) -> int:
        return int(self.mem[1024 + port])

    def set_word(self, port: int, value: int) -> None:
        self.mem[1024 + port] = value

    def send(self, port: int, vcpu: int = 0, priority: int = 7) -> int:
        word = self.fifo.word(port)
        return self.fifo.queue_event(vcpu, port, priority, word,
                                     ctypes.addressof(self.upcall[vcpu]))

    def consume(self, vcpu: int = 0) -> list[int]:
        """The upcall handler: the ports handled, in order (Linux's algorithm)."""
        cb = self.blocks[vcpu]
        heads = self.local_heads[vcpu]
        self.upcall[vcpu][0] = 0
        handled = []
        ready = cb.ready
        cb.ready = 0
        while ready:
            prio = (ready & -ready).bit_length() - 1
            port = heads[prio] or int(cb.head[prio])
            old = self.word(port)
            self.set_word(port, old & ~(LINKED | EVTCHN_FIFO_LINK_MASK))
            link = old & EVTCHN_FIFO_LINK_MASK
            if link == 0:
                ready &= ~(1 << prio)
            if old & PENDING and not old & MASKED:
                self.set_word(port, self.word(port) & ~PENDING)
                handled.append(port)
            heads[prio] = link
            ready |= cb.ready
            cb.ready = 0
        return handled

    def canaries_intact(self) -> bool:
        return all(self.mem[i] == CANARY for i in (*range(1024), *range(2048, 3072)))


def test_first_event_writes_head_sets_ready_and_raises_the_upcall() -> None:
    g = Guest()
    r = g.send(5)
    assert r == atomic.FIFO_QUEUED | atomic.FIFO_RAISE_UPCALL
    assert g.word(5) == PENDING | LINKED
    assert g.blocks[0].head[7] == 5 and g.blocks[0].ready == 1 << 7
    assert g.upcall[0][0] == 1
    assert g.fifo.vcpus[0].tails[7] == 5


def test_later_events_link_behind_the_tail_without_a_new_upcall() -> None:
    g = Guest()
    g.send(5)
    assert g.send(6) == atomic.FIFO_QUEUED
    assert g.send(9) == atomic.FIFO_QUEUED
    assert g.word(5) == PENDING | LINKED | 6 and g.word(6) == PENDING | LINKED | 9
    assert g.blocks[0].head[7] == 5
    assert g.send(6) == atomic.FIFO_WAS_PENDING  # no new edge
    assert g.consume() == [5, 6, 9]
    assert g.word(5) == g.word(6) == g.word(9) == 0


def test_an_unlinked_tail_means_an_empty_queue() -> None:
    g = Guest()
    g.send(5)
    assert g.consume() == [5]
    # The hypervisor's tail is still 5, but the guest unlinked it: HEAD again.
    assert g.send(6) == atomic.FIFO_QUEUED | atomic.FIFO_RAISE_UPCALL
    assert g.blocks[0].head[7] == 6 and g.word(5) == 0
    # The same port coming back after it was consumed is not linked to itself.
    assert g.consume() == [6]
    assert g.send(6) & atomic.FIFO_QUEUED
    assert g.word(6) & EVTCHN_FIFO_LINK_MASK == 0 and g.blocks[0].head[7] == 6
    assert g.consume() == [6]


def test_masked_event_stays_pending_until_relinked() -> None:
    g = Guest()
    g.set_word(5, MASKED)
    assert g.send(5) == 0  # pending, not queued
    assert g.word(5) == PENDING | MASKED and g.blocks[0].ready == 0 and g.upcall[0][0] == 0
    # EVTCHNOP_unmask: clear MASKED, then queue it again because it is pending.
    g.set_word(5, g.word(5) & ~MASKED)
    assert g.send(5) == atomic.FIFO_WAS_PENDING | atomic.FIFO_QUEUED | atomic.FIFO_RAISE_UPCALL
    assert g.consume() == [5]


def test_higher_priority_is_consumed_first() -> None:
    g = Guest()
    g.send(20, priority=10)
    g.send(21, priority=10)
    g.send(30, priority=3)
    g.send(40, priority=0)
    assert g.blocks[0].ready == (1 << 10) | (1 << 3) | 1
    assert g.consume() == [40, 30, 20, 21]


def test_a_port_that_moved_queues_leaves_its_old_queue_empty() -> None:
    """Xen's last_priority/last_vcpu_id: after port 5 moved from priority 7 to 2,
    an event on another port of priority 7 must not link behind port 5."""
    g = Guest()
    g.send(5, priority=7)
    assert g.consume() == [5]
    g.send(5, priority=2)  # set_priority(5, 2) happened meanwhile
    assert g.fifo.vcpus[0].tails[7] == 0 and g.fifo.vcpus[0].tails[2] == 5
    assert g.send(6, priority=7) == atomic.FIFO_QUEUED  # upcall already pending
    assert g.blocks[0].ready == (1 << 7) | (1 << 2)
    assert g.blocks[0].head[7] == 6 and g.word(5) & EVTCHN_FIFO_LINK_MASK == 0
    assert g.consume() == [5, 6]


def test_a_port_rebound_to_another_vcpu_moves_there() -> None:
    g = Guest()
    g.send(5, vcpu=0)
    g.send(5, vcpu=0)  # still pending: nothing
    assert g.consume(0) == [5]
    g.send(5, vcpu=1)  # bind_vcpu(5, 1)
    assert g.fifo.vcpus[0].tails[7] == 0
    assert g.blocks[1].head[7] == 5 and g.upcall[1][0] == 1 and g.upcall[0][0] == 0
    g.send(6, vcpu=0)
    assert g.blocks[0].head[7] == 6
    assert g.consume(1) == [5] and g.consume(0) == [6]


def test_a_queued_event_stays_on_its_queue_when_the_priority_changes() -> None:
    g = Guest()
    g.send(5, priority=7)
    assert g.send(5, priority=1) == atomic.FIFO_WAS_PENDING  # already linked on 7
    assert g.consume() == [5]


def test_no_control_block_leaves_the_event_pending_only() -> None:
    g = Guest()
    g.fifo.set_control_block(1, 0, None)
    assert g.send(5, vcpu=1) == NO_CONTROL_BLOCK
    assert g.word(5) == PENDING
    assert g.send(5, vcpu=1) == NO_CONTROL_BLOCK | atomic.FIFO_WAS_PENDING


def test_guest_garbage_is_overwritten_not_followed() -> None:
    """LINK fields and HEADs the guest scribbles on are only ever written over,
    and nothing outside the event words and control blocks is touched."""
    g = Guest()
    g.blocks[0].head[7] = 0xFFFFFFFF
    g.blocks[0]._rsvd = 0x12345678
    g.send(5)
    assert g.blocks[0].head[7] == 5
    g.set_word(5, g.word(5) | 0x1FFFF | BUSY)  # LINK to a port that does not exist, BUSY
    assert g.send(1023) == atomic.FIFO_QUEUED  # the last word of the page
    assert g.word(5) == PENDING | LINKED | 1023  # BUSY cleared, LINK replaced
    g.set_word(1023, g.word(1023) | 1023)  # a self-link
    assert g.send(7) == atomic.FIFO_QUEUED
    assert g.word(1023) & EVTCHN_FIFO_LINK_MASK == 7
    assert g.blocks[0]._rsvd == 0x12345678
    assert g.canaries_intact()


def test_last_port_of_a_page_touches_only_its_word() -> None:
    g = Guest()
    for port in (1, 1023):
        assert g.send(port) & atomic.FIFO_QUEUED
    assert g.consume() == [1, 1023]
    assert g.canaries_intact()


_HAMMER = bytes.fromhex("f0813700000040803e0074f4c3")
# hammer(rdi=word, rsi=&stop): 1: lock xor dword ptr [rdi], 0x40000000;
#                               cmp byte ptr [rsi], 0; je 1b; ret
Hammer = Callable[[int, int], None]


@pytest.fixture
def hammer() -> Iterator[Hammer]:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(_HAMMER)
    anchor = ctypes.c_char.from_buffer(page)
    # CFUNCTYPE: the call releases the GIL, so the loop runs beside Python code.
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(ctypes.addressof(anchor))
    yield fn
    del fn, anchor
    page.close()


def test_linking_behind_a_tail_the_guest_keeps_changing(hammer: Hammer) -> None:
    """A guest vCPU toggles MASKED on the queue's tail word non-stop (a native
    thread, outside the GIL) while events are linked behind it: every link
    either lands (LINK = the new port) or gives up after BUSY and four
    retries, and BUSY is never left set."""
    g = Guest()
    stop = ctypes.c_uint8(0)
    thread = threading.Thread(target=hammer, args=(g.fifo.word(5), ctypes.addressof(stop)))
    outcomes = {"linked": 0, "gave_up": 0}
    thread.start()
    try:
        for _ in range(5000):
            g.set_word(5, LINKED)
            g.set_word(6, 0)
            g.fifo.vcpus[0].tails[7] = 5
            g.fifo.last_queue.pop(6, None)
            r = g.send(6)
            assert r & atomic.FIFO_QUEUED
            w = g.word(5)
            assert not w & BUSY, hex(w)
            if r & atomic.FIFO_LINK_GAVE_UP:
                outcomes["gave_up"] += 1
            else:
                assert w & EVTCHN_FIFO_LINK_MASK == 6, hex(w)
                outcomes["linked"] += 1
    finally:
        stop.value = 1
        thread.join()
    assert outcomes["linked"] > 0, outcomes
