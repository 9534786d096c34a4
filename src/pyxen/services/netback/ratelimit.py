"""Xen netback's credit scheduler for a vif's ``rate=``: :class:`RateLimit`.

What Linux's xen-netback does (``drivers/net/xen-netback``, the backend
pyxen's guests would meet on a Linux dom0), for the guest's transmit
direction:

* The toolstack writes the backend node ``rate = "<bytes>,<usecs>"``
  (:func:`parse_rate_node`); without it the vif is unlimited.  ``C`` below is
  the bytes, ``I`` the interval.
* On connect the credit is ``C`` and the current window starts now.
* ``tx_add_credit`` adds one chunk: ``credit = min(credit + C, max_burst)``
  with ``max_burst = max(131072, C)`` ("allow a burst big enough to transmit
  a jumbo packet of up to 128kB; otherwise the interface can seize up").
* For each packet, at the head of the ring: if it fits in the credit it is
  sent and its size taken from the credit.  If not (``tx_credit_exceeded``):
  if a credit timer is pending, wait; else, if at least ``I`` has passed since
  the window start, the window restarts now and one chunk is added (the
  *lazy* replenishment), and the packet goes if it now fits; otherwise a
  timer is armed for the end of the window, which adds one chunk and retries
  the packet, re-arming itself one ``I`` later while the packet still does
  not fit.

So credit is demand-driven: an idle vif does not bank credit beyond what the
next packet finds plus one chunk, a continuously busy one gets exactly one
chunk per interval, and leftover credit carries over (up to ``max_burst``).
A packet larger than ``C`` does not go "over" the credit: it waits while
chunks accumulate and leaves once the accumulated credit covers it (with
``C = 1000`` a 2500-byte packet refused at 0 leaves at ``2*I``).

:class:`RateLimit` is that algorithm with the timer modelled lazily: nothing
runs between calls; each call first applies the chunks the timer chain would
have added by now (:meth:`RateLimit._catch_up`), as if the backend had
retried the waiting packet at each timer, which is what netback's NAPI poll
does.  The caller (the backend's transmit loop) offers the head packet to
:meth:`RateLimit.allow`; when refused it sleeps :meth:`RateLimit.wait_time`
and offers it again.

Deliberate differences from netback:

* After a lazy replenishment that is still not enough, netback arms the
  timer at the end of the *previous* window, which has already passed, so the
  packet gets a second chunk at once and the window start lags behind the
  clock (repeatable until it catches up: a long-idle vif can then send far
  faster than its rate for a while).  pyxen arms it ``I`` after the lazy
  replenishment.
* netback measures ``I`` in jiffies (``msecs_to_jiffies(usecs / 1000)``, so
  intervals below 1 ms mean "replenish on every check"); pyxen uses the
  microseconds exactly.
* A packet larger than ``max_burst`` would stall netback forever (it cannot
  happen there: a netif packet is below 64 KiB); here it is let through when
  the credit reaches ``max_burst``, and takes all of it.

Invariants (with ``effective(size) = min(size, max_burst)``):

* ``0 <= remaining <= max_burst``; credit only grows by whole chunks of
  ``C``, at least ``I`` apart, so the bytes allowed in the first ``t``
  seconds are at most ``C * (1 + floor(t / I))``.
* A packet waiting for credit (refused, then offered again after
  :meth:`wait_time`) is allowed at exactly the time :meth:`wait_time` gave.
* Time comes only from the injected ``clock`` (seconds, monotonic), read
  once a call and kept as integer nanoseconds, so tests with a fake clock
  are exact.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Final

__all__ = ["MAX_BURST", "RateLimit", "parse_rate_node"]

MAX_BURST: Final = 131072  # netback's floor on the credit cap: a 128 KiB burst
_NS: Final = 1_000_000_000

_RATE_NODE_RE: Final = re.compile(r"([0-9]+),([0-9]+)")


def parse_rate_node(value: str) -> tuple[int, int]:
    """The backend's xenstore ``rate`` node, ``"<bytes>,<usecs>"``, as two ints.

    Decimal digits only, as netback's ``xen_net_read_rate`` reads them; a
    ValueError otherwise (netback then warns and leaves the vif unlimited).
    """
    m = _RATE_NODE_RE.fullmatch(value)
    if m is None:
        raise ValueError(f"rate node {value!r} is not '<bytes>,<usecs>' (decimal numbers)")
    return int(m.group(1)), int(m.group(2))


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return value


class RateLimit:
    """netback's transmit credit for one vif: ``bytes_per_interval`` every ``interval_us``."""

    def __init__(self, bytes_per_interval: int, interval_us: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bytes_per_interval: Final = _positive("bytes_per_interval", bytes_per_interval)
        self.interval_us: Final = _positive("interval_us", interval_us)
        self.max_burst: Final = max(MAX_BURST, bytes_per_interval)
        self._interval: Final = interval_us * 1000  # ns
        self._clock = clock
        self._remaining = bytes_per_interval
        self._window_start = self._now()
        self._timer: int | None = None  # when the pending timer adds a chunk (ns)
        self._waiting = 0  # effective size of the packet the timer retries (while armed)

    @classmethod
    def from_rate_node(cls, value: str,
                       clock: Callable[[], float] = time.monotonic) -> RateLimit:
        """A limiter for the backend node ``rate`` (ValueError if malformed or zero)."""
        bytes_per_interval, interval_us = parse_rate_node(value)
        return cls(bytes_per_interval, interval_us, clock)

    @property
    def remaining(self) -> int:
        """The credit in bytes as of the last :meth:`allow` or :meth:`wait_time`."""
        return self._remaining

    def allow(self, size: int) -> bool:
        """Take ``size`` bytes of credit and return True, or return False: not yet."""
        need = self._effective(size)
        now = self._now()
        self._catch_up(now)
        if need > self._remaining:
            self._refuse(now, need)
            if need > self._remaining:
                return False
        self._remaining -= need
        return True

    def wait_time(self, size: int) -> float:
        """Seconds until :meth:`allow` of ``size`` succeeds (0.0: it would now).

        It has the side effects of a refused :meth:`allow`: ``size`` becomes
        the packet waiting for credit (the timer chain runs until it fits).
        """
        need = self._effective(size)
        now = self._now()
        self._catch_up(now)
        if need <= self._remaining:
            return 0.0
        self._refuse(now, need)
        if need <= self._remaining or self._timer is None:
            return 0.0
        chunks = -(-(need - self._remaining) // self.bytes_per_interval)
        due = self._timer + (chunks - 1) * self._interval
        return (due - now) / _NS

    # --- the model ------------------------------------------------------------

    def _now(self) -> int:
        return round(self._clock() * _NS)

    def _effective(self, size: int) -> int:
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        if size < 0:
            raise ValueError(f"size cannot be negative ({size})")
        return min(size, self.max_burst)

    def _add_credit(self, chunks: int = 1) -> None:
        self._remaining = min(self._remaining + chunks * self.bytes_per_interval,
                              self.max_burst)

    def _refuse(self, now: int, need: int) -> None:
        """netback's tx_credit_exceeded for a packet of ``need`` bytes that does not fit."""
        self._waiting = need
        if self._timer is not None:
            return  # the timer will add credit and retry
        if now >= self._window_start + self._interval:
            self._window_start = now
            self._add_credit()
            if need <= self._remaining:
                return
        self._timer = self._window_start + self._interval

    def _catch_up(self, now: int) -> None:
        """Apply what the timer chain would have done by ``now``.

        The timer adds a chunk at ``T``; the retried packet either fits, which
        ends the chain, or re-arms the timer at ``T + I`` (the window then
        starts at ``T``).  Closed form: ``n`` chunks at ``T ... T+(n-1)*I``.
        """
        timer = self._timer
        if timer is None or now < timer:
            return
        available = (now - timer) // self._interval + 1
        short = self._waiting - self._remaining
        needed = max(1, -(-short // self.bytes_per_interval))  # the timer adds one anyway
        chunks = min(available, needed)
        self._add_credit(chunks)
        self._window_start = timer + (chunks - 1) * self._interval
        if self._remaining >= self._waiting:
            self._timer = None
        else:
            self._timer = self._window_start + self._interval
