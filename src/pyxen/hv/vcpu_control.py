"""Thread control of one vCPU: a request word and a state, under one lock.

Other threads never touch a running vCPU's KVM state.  They publish what
they want in the vCPU's **request word** and the vCPU's own thread acts on
it, between two KVM_RUNs.  The vCPU thread is always in one **state**:

    NEW ----start----> RUNNING <--> RUNNABLE  (waiting for a pCPU grant)
                          ^  \\---> BLOCKED   (SCHEDOP_block/poll, HLT)
                          |   \\--> PARKED    (domain paused, vCPU down)
                          v
                        DONE      (the thread has left its loop)

RUNNING covers "about to enter the guest", "in KVM_RUN" and "handling an
exit".  Only the vCPU's own thread changes the state; the lock makes each
change atomic with respect to the request word.

Request bits (``Req``), and who sets them:

    STOP     Domain.shutdown/destroy (request_stop).  Sticky: never cleared.
    STATE    pause, unpause, VCPUOP_up/down, INIT/SIPI bring-up: the thread
             re-evaluates whether it may run (pause_count, online).
    NMI      VCPUOP_send_nmi, an NMI IPI: inject one NMI.
    UPCALL   evtchn_upcall_pending went 0 -> 1, or the callback vector
             changed: inject the callback vector if it is still pending.
    APIC     the local APIC has a vector to offer, or an INIT/SIPI queued.
    PREEMPT  the pCPU dispatcher wants the pCPU back.
    TIME     the pvclock parameters changed: rewrite the secondary time
             area (immediate_exit but no signal: the old parameters stay
             valid until the thread's next exit).
    WAKE     a blocked or parked thread must look again (``wake`` for a poll
             match; implied by STOP, STATE, NMI, UPCALL and APIC).
    RECHECK  set by the vCPU itself: an interrupt it could not inject yet
             (level-triggered delivery); look again after the next exit.
    DEBUG    VMI (pyxen.vmi) changed the vCPU's wanted guest-debug state
             (single-step, DR0-3): KVM_SET_GUEST_DEBUG before the next
             KVM_RUN.  Not waking: a blocked vCPU applies it when it runs.

The protocol (every step under the lock, so the two sides cannot
interleave inside one):

- ``request(bits)`` (any thread): OR the bits into the word; if a bit
  other than WAKE/RECHECK is new, set ``kvm_run.immediate_exit``; then, if
  the thread is RUNNING, signal it (KICK_SIGNAL: a KVM_RUN in progress
  returns EINTR); if it sleeps (RUNNABLE, BLOCKED, PARKED), notify the
  condition.  Bits already pending are not requested again (no signal).
- ``take()`` (own thread, before KVM_RUN when the word is non-zero): clear
  ``immediate_exit`` and take the whole word (STOP stays) in one step.
  This is the only place immediate_exit is cleared (and the completion run
  of ``complete_pending_io`` restores it from the word).
- Sleeping (own thread): ``clear_wake()`` first, then check the conditions
  it sleeps for (upcall pending, ports pending, pause_count ...), then
  ``sleep(state)``, which returns at once if WAKE was set since the clear.

Invariants:

1. Outside the lock, ``immediate_exit`` set implies a request bit other
   than WAKE/RECHECK is pending.  So KVM_RUN can return EINTR at once only
   when there is work for ``take`` -- no spinning vCPU (issue 10 item 1: a
   notifier switched out between its two stores left immediate_exit set
   with nothing to attend).
2. No lost wake-up in RUNNING: the thread reads the word before KVM_RUN
   without the lock; a request published after that read has set
   immediate_exit before the KVM_RUN (it returns EINTR) or signals the
   thread inside it (KVM_RUN returns EINTR), because the request sees the
   state RUNNING under the lock.
3. No lost wake-up in a sleep: every waking request sets WAKE; the thread
   cleared WAKE before checking what it waits for, so a request made after
   the check finds WAKE clear and sets it, and ``sleep`` sees it (its wait
   predicate is evaluated under the lock).
4. A PARKED thread leaves PARKED only to re-check, and enters the guest
   only after a re-check that found the domain unpaused and itself online:
   ``Domain.pause`` may trust the state it reads.
5. No signal reaches a thread in DONE (or before it started): the state is
   read under the lock by the signaller and set under it by the thread.

Lock order: callers may hold their own locks (the dispatcher's, the APIC's,
the domain's) when they call ``request``; the vCPU thread never calls out
while holding this lock, so it is always the innermost one.
"""

from __future__ import annotations

import contextlib
import enum
import signal
import threading
from collections.abc import Callable

KICK_SIGNAL = signal.SIGUSR1


class Req:
    """Request bits (plain ints: IntFlag arithmetic is slow on the hot path)."""

    STOP = 1 << 0
    STATE = 1 << 1
    NMI = 1 << 2
    UPCALL = 1 << 3
    APIC = 1 << 4
    PREEMPT = 1 << 5
    TIME = 1 << 6
    WAKE = 1 << 7
    RECHECK = 1 << 8
    DEBUG = 1 << 9


# Requests that end a sleep (they imply WAKE).
WAKING = Req.STOP | Req.STATE | Req.NMI | Req.UPCALL | Req.APIC
# Requests that need the thread out of KVM_RUN (immediate_exit, a signal).
_KICKING = ~(Req.WAKE | Req.RECHECK)
# Requests that end a long hypercall at its next preemption point (Xen's
# hypercall_preempt_check: softirqs pending -- pause, stop, scheduling --
# or events needing delivery).
PREEMPTING = Req.STOP | Req.STATE | Req.NMI | Req.UPCALL | Req.APIC | Req.PREEMPT


class ThreadState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    RUNNABLE = "runnable"  # waiting for a pCPU
    BLOCKED = "blocked"
    PARKED = "parked"
    DONE = "done"


_SLEEPING = (ThreadState.RUNNABLE, ThreadState.BLOCKED, ThreadState.PARKED)


class VcpuControl:
    """The request word and thread state of one vCPU (see the module docstring)."""

    __slots__ = ("_cond", "_ident", "_set_immediate_exit", "requests", "state")

    def __init__(self, set_immediate_exit: Callable[[bool], None]) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._set_immediate_exit = set_immediate_exit
        self._ident: int | None = None
        # The first pass of the loop evaluates everything (pause, online, INIT/SIPI).
        self.requests = Req.STATE
        self.state = ThreadState.NEW

    # -- any thread ------------------------------------------------------------------

    def request(self, bits: int, kick: bool = True) -> None:
        """Publish ``bits``; make the thread see them before it next enters the guest.

        ``kick=False`` (TIME) sets immediate_exit but sends no signal: the
        request waits for the thread's next exit."""
        if bits & WAKING:
            bits |= Req.WAKE
        with self._cond:
            new = bits & ~self.requests
            if not new:
                return  # already pending: the earlier request kicked
            self.requests |= new
            if new & _KICKING:
                self._set_immediate_exit(True)
            state = self.state
            if state is ThreadState.RUNNING:
                ident = self._ident
                if (kick and new & _KICKING and ident is not None
                        and ident != threading.get_ident()):
                    with contextlib.suppress(ProcessLookupError):
                        signal.pthread_kill(ident, KICK_SIGNAL)
            elif state in _SLEEPING:
                self._cond.notify_all()

    def notify(self) -> None:
        """Something a sleeping thread's predicate reads changed (a pCPU grant)."""
        with self._cond:
            self._cond.notify_all()

    @property
    def quiescent(self) -> bool:
        """Not in the guest and not handling an exit: parked, finished or never started."""
        return self.state in (ThreadState.PARKED, ThreadState.DONE, ThreadState.NEW)

    @property
    def stopping(self) -> bool:
        return bool(self.requests & Req.STOP)

    def is_current(self) -> bool:
        return self._ident is not None and self._ident == threading.get_ident()

    # -- the vCPU's own thread -----------------------------------------------------------

    def started(self) -> None:
        with self._cond:
            self._ident = threading.get_ident()
            self.state = ThreadState.RUNNING

    def finished(self) -> None:
        with self._cond:
            self.state = ThreadState.DONE

    def take(self) -> int:
        """Clear immediate_exit and take every pending request (STOP stays pending)."""
        with self._cond:
            bits = self.requests
            self.requests = bits & Req.STOP
            self._set_immediate_exit(False)
        return bits

    def recheck(self) -> None:
        """Look at the requests again after the next exit (no immediate exit)."""
        with self._cond:
            self.requests |= Req.RECHECK

    def complete_pending_io(self, run: Callable[[], object]) -> None:
        """KVM_RUN with immediate_exit set: KVM finishes the instruction of the last
        MMIO/PIO exit without entering the guest and returns EINTR (KVM's API
        documentation).  immediate_exit is then restored from the word (invariant 1;
        the run itself never enters the guest)."""
        with self._cond:
            self._set_immediate_exit(True)
        with contextlib.suppress(InterruptedError):
            run()
        with self._cond:
            self._set_immediate_exit(bool(self.requests & _KICKING))

    def clear_wake(self) -> None:
        """First step of a sleep: wake-ups from now on end it."""
        with self._cond:
            self.requests &= ~Req.WAKE

    def sleep(self, state: ThreadState, remaining_s: Callable[[], float | None] | None = None,
              asleep: Callable[[], None] | None = None) -> bool:
        """Sleep in ``state`` until WAKE (True) or ``remaining_s()`` reaches 0 (False).

        Returns at once if a wake-up came since ``clear_wake``.  ``asleep`` is
        called (without the lock) once the state is published, before waiting."""
        with self._cond:
            if self.requests & Req.WAKE:
                self.requests &= ~Req.WAKE
                return True
            self.state = state
        woken = False
        try:
            if asleep is not None:
                asleep()
            with self._cond:
                while not self.requests & Req.WAKE:
                    left = remaining_s() if remaining_s is not None else None
                    if left is not None and left <= 0:
                        break
                    self._cond.wait(left)
                woken = bool(self.requests & Req.WAKE)
        finally:
            with self._cond:
                self.requests &= ~Req.WAKE
                self.state = ThreadState.RUNNING
        return woken

    def wait_runnable(self, granted: Callable[[], bool]) -> bool:
        """Wait (RUNNABLE) for ``granted()``; False if a stop or a state change came first."""
        with self._cond:
            self.state = ThreadState.RUNNABLE
            try:
                while not granted():
                    if self.requests & (Req.STOP | Req.STATE):
                        return False
                    self._cond.wait()
                return True
            finally:
                self.state = ThreadState.RUNNING
