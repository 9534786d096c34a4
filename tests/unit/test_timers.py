"""The timer service, driven by a fake clock (and once by its own thread)."""

from __future__ import annotations

import threading
import time

import pytest

from pyxen.hv.timers import COMPACT_MIN, TimerService


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(clock: FakeClock) -> TimerService:
    return TimerService(clock, start_thread=False)


def test_fires_in_deadline_order_and_not_before(service: TimerService) -> None:
    fired: list[str] = []
    a = service.timer(lambda: fired.append("a"))
    b = service.timer(lambda: fired.append("b"))
    b.arm(200)
    a.arm(100)
    assert service.run_due(99) == 0
    assert service.run_due(150) == 1
    assert fired == ["a"]
    assert not a.armed and b.armed
    assert service.run_due(1000) == 1
    assert fired == ["a", "b"]


def test_rearm_replaces_and_cancel_disarms(service: TimerService) -> None:
    fired: list[int] = []
    t = service.timer(lambda: fired.append(1))
    t.arm(100)
    t.arm(300)  # the entry for 100 is now stale
    assert service.run_due(200) == 0
    t.cancel()
    assert service.run_due(1000) == 0
    assert fired == []
    assert service.next_deadline() is None


def test_rearming_far_ahead_keeps_the_heap_bounded(service: TimerService) -> None:
    """A guest re-arms its timers as often as it likes, far in the future (an APIC
    TMICT or TSC-deadline write, set_singleshot_timer): the stale entries must
    not accumulate, or the hypervisor's memory grows without bound."""
    fired: list[str] = []
    t = service.timer(lambda: fired.append("t"))
    near = service.timer(lambda: fired.append("near"))
    near.arm(50)
    for i in range(100_000):
        t.arm(10**15 + i)
    assert len(service._heap) <= 2 * COMPACT_MIN
    assert service.run_due(100) == 1 and fired == ["near"]
    assert service.next_deadline() == 10**15 + 99_999
    assert service.run_due(10**15 + 99_998) == 0
    assert service.run_due(10**15 + 99_999) == 1 and fired == ["near", "t"]


def test_callback_may_rearm_itself(service: TimerService, clock: FakeClock) -> None:
    count = 0

    def tick() -> None:
        nonlocal count
        count += 1
        if count < 3:
            t.arm(clock.now + 10)

    t = service.timer(tick)
    t.arm(10)
    for now in range(0, 100, 10):
        clock.now = now
        service.run_due(now)
    assert count == 3


def test_failing_callback_is_reported_and_others_still_run(clock: FakeClock) -> None:
    errors: list[str] = []
    service = TimerService(clock, on_error=errors.append, start_thread=False)
    ran: list[int] = []

    def boom() -> None:
        raise ValueError("boom")

    service.timer(boom).arm(1)
    service.timer(lambda: ran.append(1)).arm(2)
    assert service.run_due(5) == 2
    assert ran == [1]
    assert len(errors) == 1 and "boom" in errors[0]


def test_thread_fires_after_the_deadline() -> None:
    service = TimerService(time.monotonic_ns)
    try:
        done = threading.Event()
        fired_at: list[int] = []

        def fire() -> None:
            fired_at.append(time.monotonic_ns())
            done.set()

        deadline = time.monotonic_ns() + 5_000_000
        service.timer(fire).arm(deadline)
        assert done.wait(10)
        assert fired_at[0] >= deadline
    finally:
        service.close()


def test_a_deadline_at_the_end_of_time_does_not_stop_the_thread() -> None:
    """Guests can arm timers at 2^64 - 1 ns; the thread must keep serving others."""
    service = TimerService(time.monotonic_ns)
    try:
        service.timer(lambda: None).arm((1 << 64) - 1)
        time.sleep(0.05)  # let the thread go to sleep on the far deadline
        done = threading.Event()
        service.timer(done.set).arm(time.monotonic_ns() + 1_000_000)
        assert done.wait(10)
    finally:
        service.close()


def test_a_cancelled_or_rearmed_timer_is_not_kept_alive_by_its_old_entry(
        service: TimerService, clock: FakeClock) -> None:
    """A destroyed domain's timers armed an hour ahead pinned the whole domain (its
    vCPUs, memory maps and tables) until the deadline: an old entry must hold
    nothing but an empty ticket."""
    import gc
    import weakref

    class Owner:
        def fired(self) -> None:
            pass

    owners = [Owner(), Owner()]
    refs = [weakref.ref(o) for o in owners]
    cancelled = service.timer(owners[0].fired)
    cancelled.arm(3600 * 10**9)
    cancelled.cancel()
    rearmed = service.timer(owners[1].fired)
    rearmed.arm(3600 * 10**9)
    rearmed.arm(10)
    assert service.run_due(10) == 1
    del owners, cancelled, rearmed
    gc.collect()
    assert [r() for r in refs] == [None, None]
    assert len(service._heap) == 2  # the stale entries are still there, empty
    assert service.next_deadline() is None
