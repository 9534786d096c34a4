"""A vCPU thread: KVM_RUN, decode the exit, handle it, repeat.

Every exit is handled in ``_handle``; the handlers for hypercalls (the hot
path) read the registers from the kvm_run page (sync regs) and write back
only RAX.  Any failure inside a handler is contained: the domain crashes,
the hypervisor goes on.

Attention: other threads never touch a running vCPU's KVM state.  They
publish what they want (an upcall raised, a pause, an NMI, a stop) and
call ``notify``, which sets ``_attention``, sets ``immediate_exit`` and
signals the thread, and wakes it if it is blocked.
Before every KVM_RUN the thread checks the one ``_attention`` flag (the
only cost on the hot path) and, if set, does the work in ``_attend`` in
its own thread: it clears ``immediate_exit`` *before* reading the requests,
so a request published later makes the next KVM_RUN return at once.

Event delivery (HVM_PARAM_CALLBACK_IRQ type 2, §4.3): while the vCPU's
``evtchn_upcall_pending`` is set the callback vector is injected at entry
when the guest can take it (KVM_INTERRUPT), otherwise an interrupt window
is requested; attention stays set until pending clears, which gives Xen's
level-triggered behaviour.  Xen ignores ``evtchn_upcall_mask`` for HVM
delivery, and so does pyxen.

The local APIC (``apic``, hv/lapic_vcpu.py) is emulated here too: its MMIO
and MSR exits go to it, and ``_attend`` injects its highest deliverable
vector after the NMI and the callback vector (Xen's order); a vCPU given a
per-vCPU upcall vector (HVMOP_set_evtchn_upcall_vector) gets events as an
edge interrupt in its APIC instead, which the guest EOIs.

Blocking (HLT with IF=1, SCHEDOP_block, SCHEDOP_poll) waits on a
threading.Event with no CPU use; ``raise_upcall``/``wake`` end it, and so
does an APIC interrupt becoming deliverable.  A
paused domain's or a down vCPU's thread parks (``parked``) until resumed;
``Domain.pause`` returns once every vCPU thread is parked or gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
import traceback
from typing import TYPE_CHECKING

from pyxen.abi.console import XEN_HVM_DEBUGCONS_IOPORT
from pyxen.abi.errno import XenErrno
from pyxen.abi.vcpu import RunstateState
from pyxen.abi.xen import ShutdownReason, Virq
from pyxen.hv import atomic, hypercall_page, pvclock
from pyxen.hv.cpuid import HYPERCALL_MSR
from pyxen.hv.dispatch import Call
from pyxen.hv.lapic_vcpu import VcpuApic
from pyxen.hv.runstate import Runstate
from pyxen.hv.shared_info import (
    TIME_INFO_SIZE,
    TIME_OFFSET,
    UPCALL_PENDING,
    VCPU_INFO_SIZE,
    TimeParams,
    write_time,
)
from pyxen.hv.timers import MAX_WAIT_S
from pyxen.kvm import Vcpu
from pyxen.kvm import exits as ex
from pyxen.kvm.ioctls import KVM_INTERNAL_ERROR_EMULATION
from pyxen.memory import Gfn, GuestAccess, GuestFault, PageKind, PagingState

if TYPE_CHECKING:
    from pyxen.hv.domain import Domain
    from pyxen.hv.sched.dispatcher import Dispatcher
    from pyxen.hv.sched.interface import SchedVcpu

KICK_SIGNAL = signal.SIGUSR1
MSR_IA32_TSC = 0x10
XEN_LEGACY_MAX_VCPUS = 32
_EFER_LMA = 1 << 10
_CR0_PE = 1 << 0
_RFLAGS_IF = 1 << 9
_RFLAGS_VM = 1 << 17
_M32 = 0xFFFF_FFFF


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
        self.online = vcpu_id == 0
        self.initialised = vcpu_id == 0
        self._stop = False
        self._thread: threading.Thread | None = None
        # Held while signalling the thread and when it leaves its loop, so a
        # kick never reaches a thread that has finished (or a recycled id).
        self._kick_lock = threading.Lock()
        self._running = False
        self._attention = True
        self._wake = threading.Event()
        self._blocked = False
        self.parked = False
        self.nmi_pending = False
        self.poll_port: int | None = None  # -1: any port (multi-port poll)
        self._io_warned: set[int] = set()
        self._table = hv.hypercalls.call
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
        # Time and runstate.
        self.runstate = Runstate(RunstateState.running if self.online
                                 else RunstateState.offline, hv.system_time_ns())
        self.runstate_gva: int | None = None
        self.time_area_gva: int | None = None
        self._time_area_stale = False
        self._time_area_version = 0
        self.tsc_offset: int | None = None
        self.time_params: TimeParams | None = None
        self.singleshot = hv.timers.timer(self._timer_fired)
        self.periodic = hv.timers.timer(self._periodic_fired)
        self.periodic_period = 0
        self.apic = VcpuApic(self)
        # pCPU scheduling (None: the host kernel schedules the thread).
        self.dispatcher: Dispatcher | None = hv.dispatcher
        self.sched_vcpu: SchedVcpu | None = None
        self.grant: int | None = None  # the pCPU this vCPU may run on now
        self.preempt = False  # the dispatcher wants the pCPU back
        self.pinned_to: int | None = None
        self.affinity_hard: frozenset[int] | None = None  # None: every pCPU
        self.affinity_soft: frozenset[int] | None = None
        self._grant_cv = threading.Condition()

    # -- thread control ------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"d{self.domain.domid}v{self.vcpu_id}", daemon=True
        )
        self._running = True
        self._thread.start()

    def notify(self) -> None:
        """Make the thread look at its requests before it next enters the guest."""
        self._attention = True
        self.kvm.set_immediate_exit(True)
        self._wake.set()
        if self.dispatcher is not None:
            with self._grant_cv:  # a stop or pause must end a wait for a pCPU
                self._grant_cv.notify_all()
        thread = self._thread
        if thread is None or thread is threading.current_thread() or self._blocked:
            return
        with self._kick_lock:
            if self._running and thread.ident is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pthread_kill(thread.ident, KICK_SIGNAL)

    def wait_for_grant(self) -> int | None:
        """Block (runnable) until the dispatcher grants a pCPU; None if the vCPU must stop."""
        with self._grant_cv:
            self._grant_cv.wait_for(lambda: self.grant is not None or self._stop
                                    or bool(self.domain.pause_count) or not self.online)
            return self.grant

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

    def grant_changed(self) -> None:
        """Called by the dispatcher (its lock held) after giving this vCPU a pCPU."""
        with self._grant_cv:
            self._grant_cv.notify_all()

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
        self.notify()

    def wake(self) -> None:
        """End a block or poll (the vCPU re-checks what it waits for)."""
        self._wake.set()

    def request_stop(self) -> None:
        self._stop = True
        self.periodic_period = 0
        self.singleshot.cancel()
        self.periodic.cancel()
        self.apic.lapic.close()
        self.notify()

    def join(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def quiescent(self) -> bool:
        """Not in the guest and not handling an exit (parked, or no thread)."""
        return self.parked or not self._running

    def close(self) -> None:
        self.singleshot.cancel()
        self.periodic.cancel()
        self.apic.lapic.close()
        self.vcpu_info_view.release()
        self.kvm.close()

    # -- the loop --------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._start_clock()
            if self.dispatcher is not None and self.sched_vcpu is None:
                self.sched_vcpu = self.dispatcher.add(self)
            while True:
                if self._attention and not self._attend():
                    break
                # Read each time: a paused domain may move to another cpupool.
                dispatcher = self.dispatcher
                if dispatcher is not None and self.grant is None:
                    if not dispatcher.acquire(self):
                        continue  # a stop, pause or down came while waiting
                    self.set_runstate(RunstateState.running)
                try:
                    exit_ = self.kvm.run()
                except InterruptedError:
                    continue
                self._handle(exit_)
        except Exception:
            self.domain.log(f"vcpu {self.vcpu_id}: pyxen bug:\n{traceback.format_exc()}")
            self.domain.crash(f"internal error on vcpu {self.vcpu_id}")
        finally:
            if self.dispatcher is not None:
                self.dispatcher.remove(self)
            with self._kick_lock:
                self._running = False
            self.domain.vcpu_quiesced()

    def _attend(self) -> bool:
        """Act on the requests of other threads; False when the vCPU must stop."""
        kvm = self.kvm
        kvm.set_immediate_exit(False)
        self._attention = False
        domain = self.domain
        if self.preempt and self.dispatcher is not None:
            self.dispatcher.preempted(self)
        if self.apic.signals and not domain.pause_count:
            self.apic.apply_signals()  # INIT / SIPI
        while not self._stop and (domain.pause_count or not self.online):
            if self.apic.signals and not domain.pause_count:
                self.apic.apply_signals()  # a SIPI may bring this vCPU up
                continue
            self._park()
        if self._stop:
            return False
        if self._time_area_stale:
            self.write_time_area(self.guest_access())
        if self.nmi_pending:
            self.nmi_pending = False
            kvm.inject_nmi()
        vector = domain.callback_vector
        if vector is not None and self.vcpu_info_view[UPCALL_PENDING]:
            if kvm.ready_for_interrupt():
                kvm.inject_interrupt(vector)
                kvm.set_interrupt_window(False)
            else:
                kvm.set_interrupt_window(True)
            self._attention = True  # level-triggered: look again after the next exit
        elif self.apic.lapic.irr:
            if self.apic.inject():
                self._attention = True
        else:
            kvm.set_interrupt_window(False)
        return True

    def _park(self) -> None:
        self._wake.clear()
        paused = self.domain.pause_count
        if self._stop or not (paused or not self.online):
            return
        if self.apic.signals and not paused:
            return  # an INIT/SIPI to apply (a paused vCPU keeps them until unpaused)
        if self.dispatcher is not None:
            self.dispatcher.stopped(self)
        self.set_runstate(RunstateState.offline)
        self.parked = True
        self.domain.vcpu_quiesced()
        self._wake.wait()
        self.parked = False
        self.set_runstate(RunstateState.running if self.online else RunstateState.offline)

    # -- blocking ----------------------------------------------------------------

    def upcall_deliverable(self) -> bool:
        """An event is pending and the guest could take the callback (or an APIC vector) now."""
        if not self.kvm.regs.rflags & _RFLAGS_IF:
            return False
        return ((self.domain.callback_vector is not None
                 and bool(self.vcpu_info_view[UPCALL_PENDING]))
                or self.apic.deliverable())

    def block(self, deadline_ns: int | None = None, until_deliverable: bool = False) -> None:
        """Sleep until an event is pending, ``wake`` is called, or ``deadline_ns``.

        By default an event already pending (upcall_pending set) ends the block
        at once even with interrupts disabled.  Xen 4.12 would sleep there
        until the next kick and rely on an interrupt window to have delivered
        the event earlier; on a KVM without interrupt-window exits (nested PVM)
        that event would never be delivered, so a guest blocking with IF=0
        would sleep for ever.  ``until_deliverable`` keeps Xen's stricter test
        (SCHEDOP_poll's "events need delivery").
        """
        self._wake.clear()
        # Requests published before the clear are seen here; later ones set _wake.
        pending = (self.upcall_deliverable() if until_deliverable
                   else bool(self.vcpu_info_view[UPCALL_PENDING]) or self.apic.deliverable())
        if self._stop or self.nmi_pending or self.domain.pause_count or not self.online \
                or pending:
            return
        hv = self.domain.hv
        if self.dispatcher is not None:
            self.dispatcher.stopped(self)  # give the pCPU back while blocked
        self.set_runstate(RunstateState.blocked)
        self._blocked = True
        try:
            if deadline_ns is None:
                self._wake.wait()
            else:
                while not self._wake.is_set():
                    left = deadline_ns - hv.system_time_ns()
                    if left <= 0:
                        break
                    self._wake.wait(min(left / 1e9, MAX_WAIT_S))  # guest deadlines reach 2^64 ns
        finally:
            self._blocked = False
            self.set_runstate(RunstateState.running)

    # -- runstate and time -----------------------------------------------------

    def set_runstate(self, state: RunstateState) -> None:
        if self.runstate.change(state, self.domain.hv.system_time_ns()):
            self.write_runstate_area()

    def write_runstate_area(self) -> None:
        """Copy the runstate into the guest's registered area (own thread only)."""
        gva = self.runstate_gva
        if gva is None:
            return
        compat = bool(self.domain.compat)
        with contextlib.suppress(*GuestFault):  # Xen ignores a faulting area too
            self.guest_access().write_struct(gva, self.runstate.snapshot(compat))

    def guest_access(self) -> GuestAccess:
        """The guest's linear address space as of the last exit."""
        sregs = self.kvm.sregs
        return GuestAccess(self.domain.memory,
                           PagingState(sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer))

    def _start_clock(self) -> None:
        """Learn this vCPU's TSC offset and publish its time (in its own thread)."""
        offset = self.kvm.tsc_offset()
        self.tsc_offset = offset if offset is not None else self._measure_tsc_offset()
        self.domain.publish_time(self)

    def _measure_tsc_offset(self) -> int:
        """Guest TSC minus host TSC from IA32_TSC reads, keeping the narrowest bracket."""
        best: tuple[int, int] | None = None
        for _ in range(8):
            t1 = atomic.read_tsc()
            guest = self.kvm.get_msr(MSR_IA32_TSC)
            t2 = atomic.read_tsc()
            if best is None or t2 - t1 < best[0]:
                best = (t2 - t1, guest - (t1 + t2) // 2)
        assert best is not None
        return best[1]

    def update_time(self, host_tsc: int, now_ns: int, hz: int) -> None:
        """Publish new pvclock parameters (the domain's time lock is held)."""
        if self.tsc_offset is None:
            return
        params = pvclock.next_params(self.time_params, host_tsc + self.tsc_offset, now_ns, hz)
        self.time_params = params
        write_time(self.vcpu_info_view, TIME_OFFSET, params)
        if self.time_area_gva is not None:
            # The secondary copy is at a guest virtual address: only this
            # vCPU's thread can translate it.  No kick: the old parameters
            # stay valid, so it is written at the vCPU's next exit.
            self._time_area_stale = True
            self._attention = True
            self.kvm.set_immediate_exit(True)

    def write_time_area(self, access: GuestAccess) -> None:
        """Copy the pvclock parameters to VCPUOP_register_vcpu_time_memory_area's area."""
        self._time_area_stale = False
        gva, params = self.time_area_gva, self.time_params
        if gva is None or params is None:
            return
        body = memoryview(bytearray(TIME_INFO_SIZE))
        write_time(body, 0, params)
        self._time_area_version = (self._time_area_version + 1) | 1
        with contextlib.suppress(*GuestFault):  # Xen ignores a faulting area too
            access.write_u32(gva, self._time_area_version)
            access.write(gva + 8, bytes(body[8:]))
            access.write_u32(gva, self._time_area_version + 1)
        self._time_area_version += 1

    def _timer_fired(self) -> None:
        from pyxen.hv.event_channel import send_vcpu_virq
        send_vcpu_virq(self.domain, self.vcpu_id, Virq.TIMER)

    def _periodic_fired(self) -> None:
        period = self.periodic_period
        if period:
            self.periodic.arm(self.domain.hv.system_time_ns() + period)
        self._timer_fired()

    def _handle(self, exit_: ex.Exit) -> None:
        if type(exit_) is ex.IoExit:
            if exit_.port == hypercall_page.HYPERCALL_PORT and exit_.is_out:
                self._hypercall()
            elif exit_.port == XEN_HVM_DEBUGCONS_IOPORT:
                self._debug_console(exit_)
            else:
                self._unhandled_io(exit_)
        elif isinstance(exit_, ex.MsrExit):
            self._msr(exit_)
        elif isinstance(exit_, ex.MmioExit):
            self._mmio(exit_)
        elif isinstance(exit_, ex.HltExit):
            self._hlt()
        elif isinstance(exit_, ex.InterruptedExit | ex.IrqWindowExit):
            pass
        elif isinstance(exit_, ex.ShutdownExit):
            self.domain.crash(f"vcpu {self.vcpu_id} triple fault\n{self.describe()}")
        elif isinstance(exit_, ex.InternalErrorExit):
            if exit_.suberror == KVM_INTERNAL_ERROR_EMULATION:
                # Imported here: iced-x86 and the emulator cost ~70 ms to import, paid
                # only by domains that need them.
                from pyxen.hv.emulate import handle_emulation_failure
                handle_emulation_failure(self, exit_)  # crashes the domain itself
                return
            self.domain.crash(
                f"vcpu {self.vcpu_id}: KVM internal error, suberror {exit_.suberror} "
                f"data {[hex(d) for d in exit_.data]}\n{self.describe()}"
            )
        elif isinstance(exit_, ex.FailEntryExit):
            self.domain.crash(
                f"vcpu {self.vcpu_id}: VM entry failed, reason {exit_.reason:#x}\n"
                f"{self.describe()}"
            )
        else:
            self.domain.crash(f"vcpu {self.vcpu_id}: unexpected KVM exit {exit_}")

    # -- hypercalls (the hot path) -------------------------------------------

    def _hypercall(self) -> None:
        (rax, rbx, rcx, rdx, rsi, rdi, _rsp, rbp, r8, r9, r10, _r11, _r12, _r13, _r14, _r15,
         _rip, rflags) = self.kvm.unpack_regs()
        cs_l, ss_dpl, cr0, efer = self.kvm.unpack_mode()
        if efer & _EFER_LMA and cs_l:
            compat = False
            nr, args = rax, (rdi, rsi, rdx, r10, r8, r9)
        else:
            compat = True
            nr = rax & _M32
            args = (rbx & _M32, rcx & _M32, rdx & _M32, rsi & _M32, rdi & _M32, rbp & _M32)
        if (cr0 & _CR0_PE and ss_dpl != 0) or rflags & _RFLAGS_VM:
            result = -XenErrno.EPERM
        else:
            result = self._table(Call(self, compat), nr, *args)
        if compat:
            result &= _M32
        self.kvm.set_rax(result)

    # -- other exits -------------------------------------------------------------

    def _debug_console(self, io: ex.IoExit) -> None:
        if not io.is_out:
            # Xen handles only writes to port 0xE9; a read is an ordinary unhandled port.
            self._unhandled_io(io)
            return
        data = bytes(self.kvm.io_data(io.data_offset, io.size * io.repeat))
        self.domain.hv.console.guest_write(self.domain.domid, data, source="e9")

    def _unhandled_io(self, io: ex.IoExit) -> None:
        if not io.is_out:
            length = io.size * io.repeat
            self.kvm.io_data(io.data_offset, length)[:] = b"\xff" * length
        if io.port not in self._io_warned:
            self._io_warned.add(io.port)
            kind = "write to" if io.is_out else "read of"
            self.domain.log(f"vcpu {self.vcpu_id}: {kind} unhandled I/O port {io.port:#x} "
                            "(reads return all ones, writes are dropped)")

    def _mmio(self, mmio: ex.MmioExit) -> None:
        """The APIC page, or a frame with nothing behind it: reads all ones, writes dropped."""
        if self.apic.mmio(mmio):
            return
        if not mmio.is_write:
            run = self.kvm.kvm_run.exit.mmio
            for i in range(mmio.length):
                run.data[i] = 0xFF

    def _msr(self, msr: ex.MsrExit) -> None:
        if msr.index != HYPERCALL_MSR:
            self.apic.msr(msr)  # the APIC's, or one KVM refused (see Domain.__init__)
            return
        run = self.kvm.kvm_run.exit.msr
        if not msr.is_write:
            run.data = 0
            run.error = 0
            return
        gfn, index = msr.data >> 12, msr.data & 0xFFF
        found = self.domain.memory.lookup(Gfn(gfn)) if gfn < self.domain.max_gfn else None
        if index != 0 or found is None or found[1] is not PageKind.RAM:
            self.domain.log(f"vcpu {self.vcpu_id}: bad hypercall page MSR write "
                            f"{msr.data:#x}: #GP")
            run.error = 1
            return
        hypercall_page.fill_page(self.domain.memory.page(Gfn(gfn)))
        sregs = self.kvm.sregs
        self.domain.latch_mode(compat=not (sregs.efer & _EFER_LMA and sregs.cs.l))
        run.error = 0

    def _hlt(self) -> None:
        if not self.kvm.regs.rflags & _RFLAGS_IF:
            # Xen: HLT with interrupts off takes the vCPU down; the last one down is poweroff.
            self.take_down()
            return
        self.block()

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
        self.notify()

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
