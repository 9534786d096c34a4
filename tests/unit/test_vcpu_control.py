"""The vCPU request protocol (hv/vcpu_control.py) driven deterministically, no KVM.

Issue 10 item 1: the old ``_attend`` cleared ``immediate_exit`` and then the
attention flag, while ``notify`` set them in the other order, unlocked; a
notifier switched out between its two stores left immediate_exit set with
nothing to attend, and every KVM_RUN returned EINTR at once (a spinning
vCPU).  ``FakeKvm`` below stands in for the vCPU fd: its ``run`` returns
EINTR while immediate_exit is set, and it checks at every store that the
store happens under the control's lock with the word in the state the
protocol promises.
"""

from __future__ import annotations

import itertools
import signal
import threading
from collections.abc import Iterator

import pytest

from pyxen.hv.vcpu import install_kick_handler
from pyxen.hv.vcpu_control import KICK_SIGNAL, PREEMPTING, WAKING, Req, ThreadState, VcpuControl


@pytest.fixture(autouse=True)
def _kick_handler() -> Iterator[None]:
    """Requests from other threads signal the "vCPU thread" (here pytest's)."""
    old = signal.getsignal(KICK_SIGNAL)
    install_kick_handler()
    yield
    signal.signal(KICK_SIGNAL, old)


class FakeKvm:
    """kvm_run.immediate_exit and KVM_RUN's reaction to it."""

    def __init__(self) -> None:
        self.immediate_exit = False
        self.control: VcpuControl | None = None
        self.unlocked_stores = 0
        self.runs = 0
        self.completing = False  # inside complete_pending_io: IE set to finish an exit

    def set_immediate_exit(self, value: bool) -> None:
        control = self.control
        assert control is not None
        lock = control._cond
        if lock.acquire(blocking=False):  # nobody holds it: an unlocked store
            lock.release()
            self.unlocked_stores += 1
        if value and not control.requests & ~(Req.WAKE | Req.RECHECK) \
                and not self.completing:
            raise AssertionError("immediate_exit set with no request to attend")
        self.immediate_exit = value

    def run(self) -> str:
        self.runs += 1
        if self.immediate_exit:
            raise InterruptedError
        return "entered the guest"


def make() -> tuple[VcpuControl, FakeKvm]:
    kvm = FakeKvm()
    control = VcpuControl(kvm.set_immediate_exit)
    kvm.control = control
    return control, kvm


def enter(control: VcpuControl, kvm: FakeKvm) -> tuple[int, str]:
    """One pass of the vCPU loop: attend if the word says so, then KVM_RUN."""
    taken = control.take() if control.requests else 0
    try:
        return taken, kvm.run()
    except InterruptedError:
        return taken, "EINTR"


def test_every_store_of_immediate_exit_is_under_the_lock() -> None:
    control, kvm = make()
    control.started()
    control.request(Req.UPCALL)
    control.take()
    control.request(Req.TIME, kick=False)
    assert control.take() == Req.TIME
    kvm.completing = True
    control.complete_pending_io(lambda: kvm.run())
    kvm.completing = False
    assert not kvm.immediate_exit  # restored: nothing pending
    control.request(Req.APIC)
    kvm.completing = True
    control.complete_pending_io(lambda: kvm.run())
    kvm.completing = False
    assert kvm.immediate_exit  # restored: APIC still pending
    control.take()
    assert kvm.unlocked_stores == 0


@pytest.mark.parametrize("bits", [Req.STATE, Req.NMI, Req.UPCALL, Req.APIC, Req.PREEMPT,
                                  Req.TIME, Req.WAKE])
def test_a_request_is_seen_once_and_then_the_vcpu_enters(bits: int) -> None:
    """immediate_exit never outlives the request it announced: after one attend
    the next KVM_RUN enters the guest (no spin), whatever the request."""
    control, kvm = make()
    control.started()
    control.take()  # the first pass
    control.request(bits)
    taken, result = enter(control, kvm)
    assert taken & bits == bits
    assert result == "entered the guest"
    assert enter(control, kvm) == (0, "entered the guest")


def test_interleavings_of_requests_and_attends_never_spin() -> None:
    """Every order of three requesters' steps around the vCPU's attend: after
    the vCPU has attended to what is pending, KVM_RUN enters (no EINTR loop),
    and nothing requested is lost."""
    requests = [Req.UPCALL, Req.PREEMPT | Req.NMI, Req.STATE]
    for order in itertools.permutations(range(4)):
        control, kvm = make()
        control.started()
        control.take()
        seen = 0
        for step in order:
            if step == 3:
                seen |= control.take() if control.requests else 0
            else:
                control.request(requests[step])
        for _ in range(2):  # at most one EINTR, then the guest runs
            taken, result = enter(control, kvm)
            seen |= taken
            if result != "EINTR":
                break
        assert result == "entered the guest", order
        assert seen & (Req.UPCALL | Req.PREEMPT | Req.NMI | Req.STATE) == \
            Req.UPCALL | Req.PREEMPT | Req.NMI | Req.STATE, order


def test_concurrent_requesters_leave_no_immediate_exit_without_a_request() -> None:
    """Requesters in other threads, the vCPU taking requests as it loops: at no
    point does immediate_exit stay set with an empty word (FakeKvm asserts it
    at every store), and the last take finds the word empty and IE clear."""
    control, kvm = make()
    control.started()
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def requester(bits: int) -> None:
        try:
            start.wait()
            for _ in range(3000):
                control.request(bits)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=requester, args=(b,))
               for b in (Req.UPCALL, Req.APIC, Req.PREEMPT)]
    for t in threads:
        t.start()
    start.wait()
    while any(t.is_alive() for t in threads):
        if control.requests:
            control.take()
    for t in threads:
        t.join()
    control.take()
    assert not errors, errors
    assert not kvm.immediate_exit and control.requests == 0
    assert kvm.unlocked_stores == 0


def test_stop_is_sticky() -> None:
    control, _kvm = make()
    control.started()
    control.request(Req.STOP)
    assert control.take() & Req.STOP
    assert control.stopping and control.requests == Req.STOP


def test_a_wakeup_between_the_check_and_the_sleep_is_not_lost() -> None:
    """clear_wake, (a wake-up arrives while the sleeper checks its conditions),
    sleep: the sleep returns at once instead of waiting for ever."""
    control, _kvm = make()
    control.started()
    control.clear_wake()
    control.request(Req.WAKE)  # e.g. a send to the polled port, from another vCPU
    assert control.sleep(ThreadState.BLOCKED) is True
    assert control.state is ThreadState.RUNNING


def test_a_sleeper_is_woken_by_a_request_and_not_by_time_or_preemption() -> None:
    control, _kvm = make()
    control.started()
    asleep = threading.Event()
    woke: list[bool] = []

    def sleeper() -> None:
        control.clear_wake()
        woke.append(control.sleep(ThreadState.BLOCKED, asleep=asleep.set))

    t = threading.Thread(target=sleeper)
    t.start()
    assert asleep.wait(30)
    assert control.state is ThreadState.BLOCKED
    control.request(Req.TIME, kick=False)
    control.request(Req.PREEMPT)
    assert t.is_alive() and not woke
    control.request(Req.UPCALL)
    t.join(30)
    assert woke == [True] and control.state is ThreadState.RUNNING
    assert control.requests & Req.UPCALL  # left for the attend step


def test_sleep_times_out() -> None:
    control, _kvm = make()
    control.started()
    left = iter([1e-3, 0.0])
    control.clear_wake()
    assert control.sleep(ThreadState.BLOCKED, lambda: next(left)) is False


def test_wait_runnable_ends_on_a_grant_or_a_state_change() -> None:
    control, _kvm = make()
    control.started()
    control.take()
    granted = threading.Event()
    results: list[bool] = []

    def waiter() -> None:
        results.append(control.wait_runnable(granted.is_set))

    t = threading.Thread(target=waiter)
    t.start()
    granted.set()
    control.notify()
    t.join(30)
    assert results == [True]
    granted.clear()
    control.request(Req.STATE)  # a pause: stop waiting and look
    assert control.wait_runnable(granted.is_set) is False


def test_masks() -> None:
    assert not WAKING & (Req.TIME | Req.PREEMPT | Req.RECHECK)
    assert PREEMPTING & Req.PREEMPT and not PREEMPTING & (Req.TIME | Req.WAKE | Req.RECHECK)
