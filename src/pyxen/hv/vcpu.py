"""A vCPU thread: KVM_RUN, decode the exit, handle it, repeat.

``VcpuRunner`` is the facade the rest of pyxen uses for one vCPU.  Its parts:

- thread control (``control``, hv/vcpu_control.py): the request word, the
  thread state and the one lock, with the clear-then-check protocol that
  decides when immediate_exit is set and cleared and why no wake-up is
  lost.  Other threads never touch a running vCPU's KVM state; they call
  ``request`` (or a wrapper: ``raise_upcall``, ``wake``, ``request_stop``).
- exits (hv/vcpu_exits.py): the one exit dispatch, the hypercall hot path,
  hypercall continuations.
- injection (hv/vcpu_inject.py): NMI, the event callback vector, the APIC.
- time (``time``, hv/vcpu_time.py): runstate, pvclock, timers.
- the local APIC (``apic``, hv/lapic_vcpu.py).
- guest debug for VMI (pyxen/vmi): ``guest_debug_wanted`` is the
  KVM_SET_GUEST_DEBUG state VMI wants; other threads set it and request
  ``Req.DEBUG``, the vCPU's thread applies it in ``_attend`` (a vCPU ioctl
  from another thread would wait for the KVM_RUN in progress).

The loop: before every KVM_RUN the thread reads the request word (the only
cost on the hot path) and, if it is non-zero, ``_attend``s: it takes the
word (clearing immediate_exit), acknowledges a scheduler preemption, parks
while the domain is paused or the vCPU is down (applying INIT/SIPI when
unpaused), rewrites a stale time area and injects what is pending.  With
the pCPU dispatcher the thread also waits for a pCPU grant before entering.
Each entry is one KVM_RUN: through ``RUN_ONCE`` (pyxen.kvm._runloop, C),
which also answers a hypercall exit itself, calling Python once for the
worker (``HypercallTable.server``), or, without the extension, with
PYXEN_PURE_RUN_LOOP=1 or while VMI watches CR3 (``on_exit`` replaced),
through ``Vcpu.run`` and ``on_exit``, which decode every exit in Python.
Either way it is one exit per iteration, so the request word is read
before every entry as before.

Blocking (HLT with IF=1, SCHEDOP_block, SCHEDOP_poll) sleeps with no CPU
use; like Xen, the vCPU is marked as blocking (``begin_block``: wake-ups
from then on end the sleep) *before* the conditions are checked.  A paused
domain's or a down vCPU's thread parks until resumed; ``Domain.pause``
returns once every vCPU thread is quiescent (parked or gone).  Any failure
inside the loop is contained: the domain crashes, the hypervisor goes on.
"""

from __future__ import annotations

import ctypes
import signal
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyxen.abi.vcpu import RunstateState
from pyxen.abi.xen import ShutdownReason
from pyxen.hv.hypercall_page import HYPERCALL_PORT
from pyxen.hv.lapic_vcpu import VcpuApic
from pyxen.hv.shared_info import VCPU_INFO_SIZE
from pyxen.hv.timers import MAX_WAIT_S
from pyxen.hv.vcpu_control import KICK_SIGNAL, Req, ThreadState, VcpuControl
from pyxen.hv.vcpu_exits import handle_exit, restart_hypercall
from pyxen.hv.vcpu_inject import inject, upcall_deliverable, wakes_a_block
from pyxen.hv.vcpu_time import VcpuTime
from pyxen.kvm import Vcpu
from pyxen.kvm import structs as kvm_structs
from pyxen.kvm.exits import Exit
from pyxen.kvm.vcpu import RUN_ONCE
from pyxen.memory import GuestAccess, PagingState

if TYPE_CHECKING:
    from pyxen.hv.dispatch import Server
    from pyxen.hv.domain import Domain
    from pyxen.hv.sched.dispatcher import Dispatcher
    from pyxen.hv.sched.interface import SchedVcpu

__all__ = ["KICK_SIGNAL", "Req", "VcpuRunner", "install_kick_handler"]

XEN_LEGACY_MAX_VCPUS = 32


def install_kick_handler() -> None:
    """Make KICK_SIGNAL interrupt system calls without killing the process (main thread)."""
    signal.signal(KICK_SIGNAL, lambda _sig, _frame: None)
    signal.siginterrupt(KICK_SIGNAL, True)


class VcpuRunner:
    def __init__(self, domain: Domain, vcpu_id: int) -> None:
        self.domain = domain
        self.vcpu_id = vcpu_id
        self.kvm = Vcpu(domain.vm, vcpu_id)
        hv = domain.hv
        self.control = VcpuControl(self.kvm.set_immediate_exit)
        # online/initialised change under domain.lock.
        self.online = vcpu_id == 0
        self.initialised = vcpu_id == 0
        self._thread: threading.Thread | None = None
        self.poll_port: int | None = None  # -1: any port (multi-port poll)
        self.io_warned: set[int] = set()
        # Every hypercall of this vCPU goes through it: the C run loop's and the pure loop's.
        self.serve_hypercall: Server = hv.hypercalls.server(self)
        # vcpu_info: in shared_info for the first 32 vCPUs, else a dummy
        # until the guest registers one (VCPUOP_register_vcpu_info).
        self._dummy_info = (ctypes.c_char * VCPU_INFO_SIZE)()
        self.vcpu_info_registered = False
        if vcpu_id < XEN_LEGACY_MAX_VCPUS:
            offset = vcpu_id * VCPU_INFO_SIZE
            self.vcpu_info_host = domain.shared_info_host + offset
            self.vcpu_info_view = domain.shared_info_view[offset : offset + VCPU_INFO_SIZE]
        else:
            self.vcpu_info_host = ctypes.addressof(self._dummy_info)
            self.vcpu_info_view = memoryview(self._dummy_info).cast("B")
        self.time = VcpuTime(self)
        self.apic = VcpuApic(self)
        # pCPU scheduling (None: the host kernel schedules the thread).  ``grant``
        # (the pCPU this vCPU may run on now) is the dispatcher's, under its lock.
        self.dispatcher: Dispatcher | None = hv.dispatcher
        self.sched_vcpu: SchedVcpu | None = None
        self.grant: int | None = None
        self.pinned_to: int | None = None
        self.affinity_hard: frozenset[int] | None = None  # None: every pCPU
        self.affinity_soft: frozenset[int] | None = None
        # VMI (pyxen.vmi): the guest-debug state wanted (None: off) and the bytes of
        # the one KVM has (only this vCPU's thread applies it).
        self.guest_debug_wanted: kvm_structs.kvm_guest_debug | None = None
        # What handles an exit: handle_exit, or VMI's wrapper around it (CR3 events).
        self.on_exit: Callable[[VcpuRunner, Exit], None] = handle_exit
        self._guest_debug_applied = bytes(ctypes.sizeof(kvm_structs.kvm_guest_debug))

    # -- requests from other threads ------------------------------------------------------

    def request(self, bits: int) -> None:
        """Publish requests (``Req`` bits) for the vCPU's thread (vcpu_control)."""
        self.control.request(bits)

    def raise_upcall(self) -> None:
        """evtchn_upcall_pending went 0 -> 1: inject the callback, wake the vCPU.

        With a per-vCPU upcall vector the event is an edge in the APIC's IRR
        (Xen's hvm_assert_evtchn_irq); the callback vector, if the domain set
        one, is still injected while upcall_pending stays set."""
        vector = self.apic.lapic.upcall_vector
        if vector:
            self.apic.lapic.set_irq(vector)
            if self.domain.callback_vector is None:
                return
        self.control.request(Req.UPCALL)

    def wake(self) -> None:
        """End a block or poll (the vCPU re-checks what it waits for)."""
        self.control.request(Req.WAKE)

    def request_stop(self) -> None:
        self.time.cancel_timers()
        self.apic.lapic.close()
        self.control.request(Req.STOP)

    @property
    def quiescent(self) -> bool:
        """Not in the guest and not handling an exit (parked, finished or never started)."""
        return self.control.quiescent

    # -- thread control -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"d{self.domain.domid}v{self.vcpu_id}", daemon=True
        )
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def close(self) -> None:
        self.time.cancel_timers()
        self.apic.lapic.close()
        self.vcpu_info_view.release()
        self.kvm.close()

    def move_to(self, dispatcher: Dispatcher | None) -> None:
        """Change cpupool: only while the domain is paused (the thread is parked)."""
        if self.dispatcher is not None:
            self.dispatcher.remove(self)
        self.sched_vcpu = None
        self.dispatcher = dispatcher
        if dispatcher is not None:  # affinities keep only the new pool's pCPUs
            pcpus = frozenset(dispatcher.pcpus)
            if self.affinity_hard is not None:
                self.affinity_hard = (self.affinity_hard & pcpus) or None
            if self.affinity_soft is not None:
                self.affinity_soft = (self.affinity_soft & pcpus) or None
        if dispatcher is not None and self._thread is not None:
            self.sched_vcpu = dispatcher.add(self)

    def wait_for_grant(self) -> int | None:
        """Wait (runnable) until the dispatcher grants a pCPU; None if the thread must
        look at a stop, pause or down first."""
        if self.control.wait_runnable(lambda: self.grant is not None):
            return self.grant
        return None

    def grant_changed(self) -> None:
        """Called by the dispatcher (its lock held) after giving this vCPU a pCPU."""
        self.control.notify()

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        control = self.control
        kvm = self.kvm
        run_once = RUN_ONCE  # the C fast path for hypercalls, or None: all in Python
        serve = self.serve_hypercall
        try:
            control.started()
            self.time.start_clock()
            if self.dispatcher is not None and self.sched_vcpu is None:
                self.sched_vcpu = self.dispatcher.add(self)
            while True:
                if control.requests and not self._attend():
                    break
                # Read each time: a paused domain may move to another cpupool.
                dispatcher = self.dispatcher
                if dispatcher is not None and self.grant is None:
                    if dispatcher.acquire(self):
                        self.time.set_runstate(RunstateState.running)
                    continue  # look at what came while waiting, then enter
                try:
                    if run_once is None or self.on_exit is not handle_exit:
                        exit_ = kvm.run()
                    elif run_once(kvm.fd, kvm.run_addr, HYPERCALL_PORT, serve):
                        continue  # a hypercall, answered
                    else:
                        exit_ = kvm.last_exit()
                except InterruptedError:
                    continue
                self.on_exit(self, exit_)
        except Exception:
            self.domain.log(f"vcpu {self.vcpu_id}: pyxen bug:\n{traceback.format_exc()}")
            self.domain.crash(f"internal error on vcpu {self.vcpu_id}")
        finally:
            self.time.leave()
            if self.dispatcher is not None:
                self.dispatcher.remove(self)
            control.finished()
            self.domain.vcpu_quiesced()

    def _attend(self) -> bool:
        """Act on the requests of other threads; False when the vCPU must stop."""
        bits = self.control.take()
        if bits & Req.STOP:
            return False
        if bits & Req.PREEMPT and self.dispatcher is not None:
            self.dispatcher.preempted(self)
        if not self._settle():
            return False
        if bits & Req.TIME:
            self.time.write_time_area(self.guest_access())
        if bits & Req.DEBUG:
            self.apply_guest_debug()
        if inject(self, nmi=bool(bits & Req.NMI)):
            self.control.recheck()
        return True

    def _settle(self) -> bool:
        """Park while the domain is paused or this vCPU is down; apply INIT/SIPI once
        unpaused (a paused vCPU keeps them).  False when the vCPU must stop."""
        domain = self.domain
        apic = self.apic
        while not self.control.stopping:
            paused = domain.pause_count
            if apic.signals and not paused:
                apic.apply_signals()  # may take this vCPU down or bring it up
                continue
            if not paused and self.online:
                return True
            self._park()
        return False

    def _park(self) -> None:
        control = self.control
        control.clear_wake()
        paused = self.domain.pause_count
        if control.stopping or not (paused or not self.online) or \
                (self.apic.signals and not paused):
            return  # it changed before the wake-up was armed: look again
        if self.dispatcher is not None:
            self.dispatcher.stopped(self)
        self.time.set_runstate(RunstateState.offline)
        control.sleep(ThreadState.PARKED, asleep=self.domain.vcpu_quiesced)
        self.time.set_runstate(RunstateState.running if self.online
                               else RunstateState.offline)

    def apply_guest_debug(self) -> None:
        """Give KVM ``guest_debug_wanted`` if it differs from what KVM has (own thread).

        A pending sync-regs write-back is loaded first (KVM_SET_REGS): KVM
        keys a single-step to the RIP it sees when the debug state is set,
        and the write-back at the next entry could move RIP after that."""
        wanted = self.guest_debug_wanted
        if wanted is None:
            wanted = kvm_structs.kvm_guest_debug()
        data = bytes(wanted)
        if data == self._guest_debug_applied:
            return
        if self.kvm.regs_dirty():
            self.kvm.flush_regs()
        self.kvm.set_guest_debug(wanted)
        self._guest_debug_applied = data

    # -- blocking -------------------------------------------------------------------------

    def upcall_deliverable(self) -> bool:
        """An event is pending and the guest could take the callback (or an APIC vector) now."""
        return upcall_deliverable(self)

    def begin_block(self) -> None:
        """Mark the vCPU as about to block: from now on a wake-up ends the coming sleep.

        Callers that check their own wake conditions (SCHEDOP_poll's ports)
        call this first, then check, then ``block(prepared=True)``: a wake-up
        between the check and the sleep is not lost (Xen's do_poll sets the
        poll mask and _VPF_blocked before it looks at the ports)."""
        self.control.clear_wake()

    def block(self, deadline_ns: int | None = None, until_deliverable: bool = False,
              prepared: bool = False) -> None:
        """Sleep until an event is pending, ``wake`` is called, or ``deadline_ns``.

        See ``vcpu_inject.wakes_a_block`` for which pending interrupts end
        it at once (``until_deliverable``: SCHEDOP_poll's stricter test)."""
        control = self.control
        if not prepared:
            control.clear_wake()
        if control.requests & (Req.STOP | Req.STATE | Req.NMI) or self.domain.pause_count \
                or not self.online or wakes_a_block(self, until_deliverable):
            return
        if self.dispatcher is not None:
            self.dispatcher.stopped(self)  # give the pCPU back while blocked
        hv = self.domain.hv
        remaining: Callable[[], float | None] | None = None
        if deadline_ns is not None:
            end = deadline_ns

            def remaining() -> float | None:
                # Guest deadlines reach 2^64 ns: wait in bounded steps.
                return min((end - hv.system_time_ns()) / 1e9, MAX_WAIT_S)

        self.time.set_runstate(RunstateState.blocked)
        try:
            control.sleep(ThreadState.BLOCKED, remaining)
        finally:
            self.time.set_runstate(RunstateState.running)

    # -- hypercall continuations ------------------------------------------------------------

    def restart_hypercall(self, nr: int, args: tuple[int, ...], compat: bool) -> None:
        """Rewrite the registers so that the guest issues hypercall ``nr`` again."""
        restart_hypercall(self, nr, args, compat)

    # -- vCPU up and down -----------------------------------------------------------------

    def take_down(self) -> None:
        """This vCPU goes offline; the last vCPU of the domain to go is a poweroff."""
        domain = self.domain
        with domain.lock:
            last = not any(v.online for v in domain.vcpus if v is not self)
            if not last:
                self.online = False
        self.apic.lapic.stop_timer()
        if last:
            domain.log("all vCPUs offline -- powering off")
            domain.shutdown(ShutdownReason.poweroff)
            return
        self.control.request(Req.STATE)

    # -- helpers ----------------------------------------------------------------------------

    def guest_access(self) -> GuestAccess:
        """The guest's linear address space as of the last exit."""
        sregs = self.kvm.sregs
        return GuestAccess(self.domain.memory,
                           PagingState(sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer))

    def describe(self) -> str:
        """The registers at the last exit, for crash reports."""
        r = self.kvm.regs
        s = self.kvm.sregs
        return (
            f"  rip={r.rip:#018x} rsp={r.rsp:#018x} rflags={r.rflags:#x}\n"
            f"  rax={r.rax:#018x} rbx={r.rbx:#018x} rcx={r.rcx:#018x} rdx={r.rdx:#018x}\n"
            f"  rsi={r.rsi:#018x} rdi={r.rdi:#018x} rbp={r.rbp:#018x}\n"
            f"  cr0={s.cr0:#x} cr2={s.cr2:#x} cr3={s.cr3:#x} cr4={s.cr4:#x} efer={s.efer:#x}\n"
            f"  cs={s.cs.selector:#x} (l={s.cs.l} db={s.cs.db} dpl={s.cs.dpl}) "
            f"ss={s.ss.selector:#x}"
        )
