"""Argo ring arithmetic: lengths, free space, where a message's bytes go.

Pure functions over integers, no memory and no locks (unit-tested without
KVM).  Every rule is Xen 4.12.1's (xen/common/argo.c):

- A ring of ``len`` data bytes occupies ``npages(len)`` 4 KiB pages: the
  64-byte ``xen_argo_ring`` header, then the data; data byte ``x`` is at
  buffer byte ``64 + x``.
- Messages are a 16-byte header and a payload, padded to 16-byte slots.
  ``tx_ptr`` (written only by the hypervisor) and ``len`` are multiples of
  16, so a header never wraps; a payload may.
- ``rx_ptr`` belongs to the receiver and may hold anything: it is sanitised
  on every use (rounded up to a slot, 0 if past the end) and never trusted
  beyond that.
- One slot always stays free, so ``rx == tx`` means empty, never full.
"""

from __future__ import annotations

from pyxen.abi.argo import XEN_ARGO_MAX_RING_SIZE, XEN_ARGO_MSG_SLOT_SIZE

PAGE_SIZE = 4096
RING_HEADER = 64  # sizeof(xen_argo_ring)
MSG_HEADER = 16  # sizeof(xen_argo_ring_message_header)
SLOT = XEN_ARGO_MSG_SLOT_SIZE
MIN_RING_LEN = MSG_HEADER + 2 * SLOT
MAX_RING_LEN = XEN_ARGO_MAX_RING_SIZE
MAX_RING_PAGES = XEN_ARGO_MAX_RING_SIZE // PAGE_SIZE  # the largest npages argument
# The largest payload: what fits in the largest ring beside a header and the free slot.
MAX_MESSAGE = XEN_ARGO_MAX_RING_SIZE - MSG_HEADER - SLOT

MAX_RINGS_PER_DOMAIN = 128
MAX_PENDING_PER_RING = 32
MAX_NOTIFY_COUNT = 256


def roundup(n: int) -> int:
    """``n`` rounded up to a whole number of 16-byte slots."""
    return (n + SLOT - 1) & ~(SLOT - 1)


def npages(length: int) -> int:
    """Pages a ring of ``length`` data bytes needs (header included)."""
    return (roundup(length) + RING_HEADER + PAGE_SIZE - 1) // PAGE_SIZE


def valid_length(length: int, pages: int) -> bool:
    """register_ring's length rules: room for a header and two slots, at most
    16 MiB, whole slots, and exactly the pages it needs."""
    return (MIN_RING_LEN <= length <= MAX_RING_LEN and length % SLOT == 0
            and npages(length) == pages)


def sanitize_rx(rx_ptr: int, length: int) -> int:
    """The receiver's ``rx_ptr`` made usable: rounded up to a slot, 0 if outside the ring."""
    rx = roundup(rx_ptr & 0xFFFF_FFFF)
    return 0 if rx >= length else rx


def free_space(rx: int, tx: int, length: int) -> int:
    """Bytes between the writer and the reader (``length`` when the ring is empty);
    ``rx`` sanitised, ``tx`` the hypervisor's own."""
    if rx == tx:
        return length
    return (rx - tx) % length


def payload_space(rx: int, tx: int, length: int) -> int:
    """The largest payload that fits now (Xen's ringbuf_payload_space)."""
    return max(0, free_space(rx, tx, length) - MSG_HEADER - SLOT)


def max_message_size(length: int) -> int:
    """The largest payload a ring of ``length`` bytes can ever take (notify's answer)."""
    return length - MSG_HEADER - SLOT


def too_big(total: int, length: int) -> bool:
    """A message of ``total`` payload bytes can never fit in this ring (-EMSGSIZE)."""
    return length <= MSG_HEADER + roundup(total)


def fits(total: int, rx: int, tx: int, length: int) -> bool:
    """A message of ``total`` payload bytes fits now, leaving the free slot."""
    return roundup(total) + MSG_HEADER < free_space(rx, tx, length)


def wrap_runs(pos: int, size: int, length: int) -> tuple[list[tuple[int, int]], int]:
    """The (ring offset, byte count) runs that ``size`` bytes written at ``pos``
    occupy, wrapping at the end of the ring, and the position after them."""
    runs = []
    while size > 0:
        n = min(size, length - pos)
        runs.append((pos, n))
        size -= n
        pos += n
        if pos == length:
            pos = 0
    return runs, pos


def next_tx(pos: int, length: int) -> int:
    """``tx_ptr`` after a message that ended at ``pos``: the next slot, wrapped."""
    tx = roundup(pos)
    return tx - length if tx >= length else tx


def repair_tx(tx_ptr: int, rx_ptr: int, length: int) -> int | None:
    """On (re-)registration: the ring's ``tx_ptr`` if usable, else the value Xen
    resets it to (None: keep it).  A usable one is in the ring and slot-aligned."""
    if tx_ptr < length and roundup(tx_ptr) == tx_ptr:
        return None
    tx = roundup(rx_ptr & 0xFFFF_FFFF)
    return 0 if tx >= length else tx
