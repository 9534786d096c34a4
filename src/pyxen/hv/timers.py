"""One timer service for the whole hypervisor: deadlines in Xen system time.

Design: a heap of (deadline, sequence, timer) entries and one thread that
sleeps on a condition variable until the earliest deadline, then runs the
callbacks that are due, outside the lock.  Re-arming or cancelling a timer
does not search the heap: each arm takes a new sequence number, and an
entry whose sequence no longer matches its timer is stale and skipped.
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

    __slots__ = ("_seq", "callback", "deadline", "service")

    def __init__(self, service: TimerService, callback: Callable[[], None]) -> None:
        self.service = service
        self.callback = callback
        self.deadline: int | None = None
        self._seq = -1

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
        self._heap: list[tuple[int, int, Timer]] = []
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
            timer._seq = next(self._seq)
            timer.deadline = deadline
            heap = self._heap
            heapq.heappush(heap, (deadline, timer._seq, timer))
            if len(heap) > self._compact_at:
                self._compact()
            if heap[0][2] is timer:
                self._cond.notify()

    def _compact(self) -> None:
        """Drop every stale entry (lock held); the list object stays the same."""
        heap = self._heap
        heap[:] = [entry for entry in heap if entry[1] == entry[2]._seq]
        heapq.heapify(heap)
        self._compact_at = max(COMPACT_MIN, 2 * len(heap))

    def _cancel(self, timer: Timer) -> None:
        with self._cond:
            timer._seq = -1
            timer.deadline = None

    def _pop_due(self, now: int) -> list[Timer]:
        """Due timers, disarmed, in deadline order (lock held)."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _deadline, seq, timer = heapq.heappop(heap)
            if seq == timer._seq:
                timer._seq = -1
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
            for deadline, seq, timer in sorted(self._heap):
                if seq == timer._seq:
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
                while heap and heap[0][1] != heap[0][2]._seq:
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
