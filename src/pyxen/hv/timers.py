"""One timer service for the whole hypervisor: deadlines in Xen system time.

Design: a heap of (deadline, sequence, ticket) entries and one thread that
sleeps on a condition variable until the earliest deadline, then runs the
callbacks that are due, outside the lock.  Re-arming or cancelling a timer
does not search the heap: each arm makes a new ticket (a one-element list
holding the timer) and empties the timer's previous one, so an entry whose
ticket is empty is stale and skipped.  A stale entry holds nothing but its
empty ticket: a cancelled timer's callback (and the vCPU and domain behind
it) is not kept alive by the heap until the old deadline -- a destroyed
domain's timers armed an hour ahead used to pin the whole domain.
Stale entries far in the future would never reach the top to be dropped,
so an arm that finds the heap more than twice the size it had after the
last compaction (and above ``COMPACT_MIN``) rebuilds it from the live
entries: guests re-arm timers as often as they like (an APIC timer write,
a set_singleshot_timer), and the heap stays proportional to the timers
actually armed, at an amortised O(1) per arm.

The clock is a function returning nanoseconds (the hypervisor's system
time); ``run_due(now)`` fires what is due at ``now`` without the thread, so
tests can drive timers with a fake clock.

Invariants: a callback runs at most once per arm, never before its
deadline by the service's clock, and never while holding the service lock
(callbacks may arm or cancel timers, their own included).  A callback that
raises is reported through ``on_error`` and the service carries on.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import os
import threading
import traceback
from collections.abc import Callable

Clock = Callable[[], int]
MAX_WAIT_S = 3600.0
COMPACT_MIN = 1024  # heap entries below which stale ones are left to expire


class Timer:
    """A one-shot timer; ``arm`` again to make it periodic."""

    __slots__ = ("_ticket", "callback", "deadline", "service")

    def __init__(self, service: TimerService, callback: Callable[[], None]) -> None:
        self.service = service
        self.callback = callback
        self.deadline: int | None = None
        self._ticket: list[Timer | None] | None = None  # the heap entry's, while armed

    def arm(self, deadline_ns: int) -> None:
        """(Re)arm for ``deadline_ns``; a deadline in the past fires at once."""
        self.service._arm(self, deadline_ns)

    def cancel(self) -> None:
        self.service._cancel(self)

    @property
    def armed(self) -> bool:
        return self.deadline is not None


class TimerService:
    def __init__(self, clock: Clock, on_error: Callable[[str], None] | None = None,
                 start_thread: bool = True, realtime: bool = False) -> None:
        self.clock = clock
        self.realtime = realtime
        self._on_error = on_error
        self._heap: list[tuple[int, int, list[Timer | None]]] = []
        self._compact_at = COMPACT_MIN
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._thread: threading.Thread | None = None
        if start_thread:
            self._thread = threading.Thread(target=self._loop, name="pyxen-timers", daemon=True)
            self._thread.start()

    def timer(self, callback: Callable[[], None]) -> Timer:
        return Timer(self, callback)

    def _arm(self, timer: Timer, deadline: int) -> None:
        with self._cond:
            if timer._ticket is not None:
                timer._ticket[0] = None  # the earlier arm's entry is stale now
            ticket: list[Timer | None] = [timer]
            timer._ticket = ticket
            timer.deadline = deadline
            heap = self._heap
            heapq.heappush(heap, (deadline, next(self._seq), ticket))
            if len(heap) > self._compact_at:
                self._compact()
            if heap[0][2] is ticket:
                self._cond.notify()

    def _compact(self) -> None:
        """Drop every stale entry (lock held); the list object stays the same."""
        heap = self._heap
        heap[:] = [entry for entry in heap if entry[2][0] is not None]
        heapq.heapify(heap)
        self._compact_at = max(COMPACT_MIN, 2 * len(heap))

    def _cancel(self, timer: Timer) -> None:
        with self._cond:
            if timer._ticket is not None:
                timer._ticket[0] = None
                timer._ticket = None
            timer.deadline = None

    def _pop_due(self, now: int) -> list[Timer]:
        """Due timers, disarmed, in deadline order (lock held)."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            ticket = heapq.heappop(heap)[2]
            timer = ticket[0]
            if timer is not None:
                ticket[0] = None
                timer._ticket = None
                timer.deadline = None
                due.append(timer)
        return due

    def _fire(self, due: list[Timer]) -> None:
        for timer in due:
            try:
                timer.callback()
            except Exception:
                if self._on_error is not None:
                    self._on_error(f"timer callback failed:\n{traceback.format_exc()}")

    def run_due(self, now: int) -> int:
        """Fire every timer due at ``now`` (for fake clocks); returns how many fired."""
        with self._cond:
            due = self._pop_due(now)
        self._fire(due)
        return len(due)

    def next_deadline(self) -> int | None:
        with self._cond:
            for deadline, _seq, ticket in sorted(self._heap):
                if ticket[0] is not None:
                    return deadline
        return None

    def _loop(self) -> None:
        _tighten_timer_slack()
        if self.realtime:
            _realtime_priority()
        with self._cond:
            while not self._closed:
                now = self.clock()
                due = self._pop_due(now)
                if due:
                    self._cond.release()
                    try:
                        self._fire(due)
                    finally:
                        self._cond.acquire()
                    continue
                # Drop stale entries at the top so the sleep is for a live deadline.
                heap = self._heap
                while heap and heap[0][2][0] is None:
                    heapq.heappop(heap)
                if heap:
                    # Guests choose deadlines up to 2^64 ns: never wait longer
                    # than MAX_WAIT_S at a time (longer waits overflow time_t).
                    self._cond.wait(min((heap[0][0] - now) / 1e9, MAX_WAIT_S))
                else:
                    self._cond.wait()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()


PR_SET_TIMERSLACK = 29


def _tighten_timer_slack() -> None:
    """Ask Linux to wake this thread on time (its default slack is 50 us)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(1), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the default slack only makes timers a little later


def _realtime_priority() -> None:
    """Run this thread SCHED_FIFO (lowest real-time priority) where allowed.

    vCPU threads are CPU-bound inside KVM_RUN; under the normal scheduler a
    waking timer thread can wait milliseconds for one of them to yield its
    CPU.  A real-time thread preempts them at once; its work per wake-up is
    short (callbacks set bits and signal threads), so it cannot starve them.
    """
    # Not root, or not Linux: timers are then only later on a busy host.
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
