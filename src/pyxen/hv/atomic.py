"""Atomic bit operations on guest memory, and the host TSC, for x86-64 hosts.

Event-channel bits (pending, mask, selector, upcall_pending) and grant
entries' flags live in pages the guest writes concurrently from its own
vCPUs with locked instructions; a Python read-modify-write would lose or
resurrect bits (or miss a guest's revocation of a grant).  Python has no
atomic memory operations, so they are a small C extension,
``pyxen.hv._atomic`` (``_atomic.c``, gcc ``__atomic`` builtins, compiled by
``pip install``), called directly: one C call each, with the GIL kept (the
routines are a few instructions; releasing and re-taking the GIL would cost
more and could put a thread switch between two TSC reads that must be
close together).

Addresses passed in are host virtual addresses inside a guest's memory
pool; callers must have checked them (the pool outlives every caller); a
null address raises ValueError.  Bit numbers may exceed 63: the 64-bit
bit-string routines address the whole string (bit b is bit b % 64 of the
u64 at addr + 8 * (b // 64)), so port p is bit p of the pending array
whatever the guest's word size.  The ``*32`` routines and
``fifo_set_pending`` work on single aligned u32 words (FIFO event words,
the FIFO control block): a FIFO event word can be the last four bytes of
a page, and a wider locked access there would reach into the next page;
their bit numbers are 0..31 (ValueError otherwise).

The routines (arguments are ints; results ints unless stated):

``set_pending(pending, mask, selector, upcall, port, sel_bit)`` -> NO_CHANGE,
NO_UPCALL or RAISE_UPCALL.  Xen's 2-level rule: set the pending bit; if it
was clear and the port is unmasked, set the selector bit; if that was
clear, set upcall_pending (a byte; RAISE_UPCALL if it was 0).

``unmask(...same...)``: clear the mask bit; if it was set and the port is
pending, set the selector bit and then upcall_pending as set_pending does.

``test_and_set_bit(addr, bit)`` / ``test_and_clear_bit(addr, bit)`` -> the
bit's previous value (0 or 1).

``read_tsc()`` -> the host's time-stamp counter.

``cmpxchg32(addr, expected, new)`` -> the 32-bit value found at addr; ``new``
is stored only if it equals ``expected`` (the caller compares).  Grant
entries: one word covers flags and domid, so Xen's rule "set GTF_reading
only if the entry still grants this domain" is one compare-and-exchange.

``cmpxchg64(addr, expected, new)`` -> the 64-bit value found (stored if it
equals ``expected``): the emulated CMPXCHG8B, as guest vCPUs change the
same quadword concurrently.  ``cmpxchg128`` (below) is CMPXCHG16B.

``fetch_or16(addr, bits)`` / ``fetch_and16(addr, mask)`` -> the old 16-bit
word; OR in ``bits`` / keep only ``mask`` bits, atomically.

``test_and_set_bit32(addr, bit)`` / ``test_and_clear_bit32(addr, bit)`` ->
old bit, one locked 32-bit access of the aligned u32 at addr;
``test_bit32(addr, bit)`` -> the bit, one 32-bit read.

``fifo_set_pending(word, tail_word, head, ready, upcall, port | priority << 32)``
-> FIFO_* bits.  Xen's evtchn_fifo_set_pending after the queue is chosen
(the caller holds the event lock and keeps the queue's tail): test-and-set
PENDING; if the event is not MASKED, test-and-set LINKED; if that was clear
(FIFO_QUEUED), link the event behind ``tail_word`` with a compare-and-
exchange of its LINK field that succeeds only while the tail is still
LINKED (after one failure the tail is marked BUSY, so the guest cannot
unmask it, and four more attempts follow; then FIFO_LINK_GAVE_UP and the
event counts as linked, as in Xen), else (no tail: ``tail_word`` 0, or the
tail was unlinked meanwhile) store the port in ``head`` and test-and-set
the priority's READY bit; if READY was clear, set evtchn_upcall_pending
(FIFO_RAISE_UPCALL when it was 0).
"""

from __future__ import annotations

try:
    from pyxen.hv._atomic import (
        cmpxchg32,
        cmpxchg64,
        fetch_and16,
        fetch_or16,
        fifo_set_pending,
        read_tsc,
        set_pending,
        test_and_clear_bit,
        test_and_clear_bit32,
        test_and_set_bit,
        test_and_set_bit32,
        test_bit32,
        unmask,
    )
    from pyxen.hv._atomic import cmpxchg128 as _cmpxchg128
except ImportError as e:  # pragma: no cover - an install without the extension
    raise ImportError(
        f"pyxen's C extension pyxen.hv._atomic is not built ({e}); install pyxen with "
        "'pip install -e .' (it needs gcc and the Python headers), or build it in a "
        "source tree with 'python3 setup.py build_ext --inplace'") from e

__all__ = [
    "FIFO_LINK_GAVE_UP",
    "FIFO_QUEUED",
    "FIFO_RAISE_UPCALL",
    "FIFO_WAS_PENDING",
    "NO_CHANGE",
    "NO_UPCALL",
    "RAISE_UPCALL",
    "cmpxchg32",
    "cmpxchg64",
    "cmpxchg128",
    "fetch_and16",
    "fetch_or16",
    "fifo_set_pending",
    "read_tsc",
    "set_pending",
    "test_and_clear_bit",
    "test_and_clear_bit32",
    "test_and_set_bit",
    "test_and_set_bit32",
    "test_bit32",
    "unmask",
]

NO_CHANGE = 0
NO_UPCALL = 1
RAISE_UPCALL = 2

# fifo_set_pending result bits.
FIFO_WAS_PENDING = 1
FIFO_QUEUED = 2
FIFO_RAISE_UPCALL = 4
FIFO_LINK_GAVE_UP = 8

_U64 = (1 << 64) - 1


def cmpxchg128(addr: int, expected: int, new: int) -> tuple[bool, int]:
    """LOCK CMPXCHG16B on the 16-byte aligned ``addr``: (stored, the 128-bit value found).

    The emulated CMPXCHG16B; ``addr`` must be 16-byte aligned (the CPU faults
    otherwise: callers check; ValueError here)."""
    stored, lo, hi = _cmpxchg128(addr, expected & _U64, expected >> 64 & _U64, new & _U64,
                                 new >> 64 & _U64)
    return stored, lo | hi << 64
