"""A vCPU thread: KVM_RUN, decode the exit, handle it, repeat.

Every exit is handled in ``_handle``; the handlers for hypercalls (the hot
path) read the registers from the kvm_run page (sync regs) and write back
only RAX.  Any failure inside a handler is contained: the domain crashes,
the hypervisor goes on.

Stopping: ``request_stop`` sets a flag and ``immediate_exit`` and signals
the thread, so a vCPU inside KVM_RUN comes out at once (EINTR); a vCPU
between runs sees the flag before it enters again.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import traceback
from typing import TYPE_CHECKING

from pyxen.abi.console import XEN_HVM_DEBUGCONS_IOPORT
from pyxen.abi.errno import XenErrno
from pyxen.abi.xen import ShutdownReason
from pyxen.hv import hypercall_page
from pyxen.hv.cpuid import HYPERCALL_MSR
from pyxen.hv.dispatch import Call
from pyxen.kvm import Vcpu
from pyxen.kvm import exits as ex
from pyxen.memory import Gfn, PageKind

if TYPE_CHECKING:
    from pyxen.hv.domain import Domain

KICK_SIGNAL = signal.SIGUSR1
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
        self.online = vcpu_id == 0
        self._stop = False
        self._thread: threading.Thread | None = None
        # Held while signalling the thread and when it leaves its loop, so a
        # kick never reaches a thread that has finished (or a recycled id).
        self._kick_lock = threading.Lock()
        self._running = False
        self._io_warned: set[int] = set()
        self._table = domain.hv.hypercalls.call

    # -- thread control ------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"d{self.domain.domid}v{self.vcpu_id}", daemon=True
        )
        self._running = True
        self._thread.start()

    def request_stop(self) -> None:
        self._stop = True
        self.kvm.set_immediate_exit(True)
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        with self._kick_lock:
            if self._running and thread.ident is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pthread_kill(thread.ident, KICK_SIGNAL)

    def join(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def close(self) -> None:
        self.kvm.close()

    # -- the loop --------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stop:
                try:
                    exit_ = self.kvm.run()
                except InterruptedError:
                    continue
                self._handle(exit_)
        except Exception:
            self.domain.log(f"vcpu {self.vcpu_id}: pyxen bug:\n{traceback.format_exc()}")
            self.domain.crash(f"internal error on vcpu {self.vcpu_id}")
        finally:
            with self._kick_lock:
                self._running = False

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
        """An access to a frame with nothing behind it: reads are all ones, writes dropped."""
        if not mmio.is_write:
            run = self.kvm.kvm_run.exit.mmio
            for i in range(mmio.length):
                run.data[i] = 0xFF

    def _msr(self, msr: ex.MsrExit) -> None:
        run = self.kvm.kvm_run.exit.msr
        if msr.index != HYPERCALL_MSR:
            run.error = 1
            return
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
            self.online = False
            self._stop = True
            if not any(v.online for v in self.domain.vcpus):
                self.domain.log("all vCPUs offline -- powering off")
                self.domain.shutdown(ShutdownReason.poweroff)
            return
        # Blocking until an event arrives comes with event channels (next core issue).
        self.domain.crash(f"vcpu {self.vcpu_id}: HLT with interrupts enabled but pyxen has no "
                          "event delivery yet (event channels are not implemented)")

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
