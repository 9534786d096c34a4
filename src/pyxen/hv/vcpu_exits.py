"""What a vCPU thread does with each KVM exit.

``handle_exit`` is the one dispatch point.  Hypercalls (the hot path) read
the registers from the kvm_run page (sync regs) and write back only RAX.
Failures inside a handler are contained by the caller's loop: the domain
crashes, the hypervisor goes on.

Hypercall continuations (Xen's hypercall_create_continuation, §1.3 "a
preempted hypercall does not advance RIP"): a worker that stops at a
preemption point raises ``dispatch.Continuation`` with the arguments to
restart it with; ``restart_hypercall`` makes the guest execute the same
hypercall again with them.  pyxen's stub exits with ``out 0xEA, eax`` (E7
EA), and KVMs differ in where RIP is at that exit: Linux's KVM on VMX/SVM
reports it on the OUT and skips the instruction at the next KVM_RUN unless
user space moved RIP meanwhile (complete_fast_pio_out); the nested PVM KVM
of the development machines reports it already past the OUT.  So the
restart first lets KVM finish the exit (KVM_RUN with immediate_exit: the
pending skip, if any, happens and nothing runs in the guest), after which
RIP is past the OUT on every KVM, then rewinds RIP by the OUT's length --
2 for the imm8 forms (E6/E7 EA: the stub's), 1 for the DX forms (EE/EF),
told apart by the bytes before RIP, which cannot be ambiguous as the imm8
forms end with the port 0xEA -- and sets RAX = the hypercall number (as
Xen's continuation sets it) and the argument registers in the caller's
convention (64-bit RDI, RSI, RDX, R10, R8, R9; 32-bit EBX, ECX, EDX, ESI,
EDI, EBP).  The guest then takes any interrupt that made the hypercall
stop, and re-executes the OUT.  This costs one extra KVM_RUN and a 2-byte
read of guest code per continuation, nothing on the path of a hypercall
that is not continued.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyxen.abi.console import XEN_HVM_DEBUGCONS_IOPORT
from pyxen.abi.errno import XenErrno
from pyxen.abi.ioreq import IoreqType
from pyxen.hv import hypercall_page
from pyxen.hv.cpuid import HYPERCALL_MSR
from pyxen.hv.dispatch import CannotContinue
from pyxen.hv.ioreq import DeviceModelGone
from pyxen.hv.vcpu_control import Req
from pyxen.hv.vcpu_inject import wakes_a_block
from pyxen.kvm import exits as ex
from pyxen.kvm.ioctls import KVM_INTERNAL_ERROR_EMULATION
from pyxen.memory import Gfn, PageKind

if TYPE_CHECKING:
    from pyxen.hv.platform import Platform
    from pyxen.hv.vcpu import VcpuRunner

_EFER_LMA = 1 << 10
_CR0_PE = 1 << 0
_RFLAGS_IF = 1 << 9
_RFLAGS_VM = 1 << 17
_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF
_ARGS_64 = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
_ARGS_32 = ("rbx", "rcx", "rdx", "rsi", "rdi", "rbp")
_OUT_IMM8 = (0xE6, 0xE7)  # out imm8, al / eax
_OUT_DX = (0xEE, 0xEF)  # out dx, al / eax
_HLT_ENDERS = Req.STOP | Req.STATE | Req.NMI


def handle_exit(runner: VcpuRunner, exit_: ex.Exit) -> None:
    if type(exit_) is ex.IoExit:
        if exit_.port == hypercall_page.HYPERCALL_PORT and exit_.is_out:
            hypercall(runner)
        elif exit_.port == XEN_HVM_DEBUGCONS_IOPORT:
            _debug_console(runner, exit_)
        elif runner.domain.platform is not None:
            _hvm_io(runner, exit_)
        else:
            _unhandled_io(runner, exit_)
    elif isinstance(exit_, ex.MsrExit):
        _msr(runner, exit_)
    elif isinstance(exit_, ex.MmioExit):
        _mmio(runner, exit_)
    elif isinstance(exit_, ex.HltExit):
        _hlt(runner)
    elif isinstance(exit_, ex.InterruptedExit | ex.IrqWindowExit):
        pass
    elif isinstance(exit_, ex.ShutdownExit):
        runner.domain.crash(f"vcpu {runner.vcpu_id} triple fault\n{runner.describe()}")
    elif isinstance(exit_, ex.InternalErrorExit):
        if exit_.suberror == KVM_INTERNAL_ERROR_EMULATION:
            # Imported here: iced-x86 and the emulator cost ~70 ms to import, paid
            # only by domains that need them.
            from pyxen.hv.emulate import handle_emulation_failure
            vmi = runner.domain.vmi
            if vmi is not None and vmi.emulation_failure(runner, exit_):
                return  # an int3 or a fetch VMI answered (pyxen/vmi/core.py)
            handle_emulation_failure(runner, exit_)  # crashes the domain itself
            return
        runner.domain.crash(
            f"vcpu {runner.vcpu_id}: KVM internal error, suberror {exit_.suberror} "
            f"data {[hex(d) for d in exit_.data]}\n{runner.describe()}"
        )
    elif isinstance(exit_, ex.FailEntryExit):
        runner.domain.crash(
            f"vcpu {runner.vcpu_id}: VM entry failed, reason {exit_.reason:#x}\n"
            f"{runner.describe()}"
        )
    elif isinstance(exit_, ex.DebugExit):
        # Only VMI turns guest debug on.  Without it (closed while the exit was in
        # flight) the exit is dropped: Req.DEBUG turns guest debug off before the
        # next entry.
        vmi = runner.domain.vmi
        if vmi is not None:
            vmi.debug_exit(runner, exit_)
    else:
        runner.domain.crash(f"vcpu {runner.vcpu_id}: unexpected KVM exit {exit_}")


# -- hypercalls (the hot path) -----------------------------------------------------------


def hypercall(runner: VcpuRunner) -> None:
    kvm = runner.kvm
    (rax, rbx, rcx, rdx, rsi, rdi, _rsp, rbp, r8, r9, r10, _r11, _r12, _r13, _r14, _r15,
     _rip, rflags) = kvm.unpack_regs()
    cs_l, ss_dpl, cr0, efer = kvm.unpack_mode()
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
        result = runner.serve_hypercall(nr, compat, *args)
    if compat:
        result &= _M32
    kvm.set_rax(result)


def restart_hypercall(runner: VcpuRunner, nr: int, args: tuple[int, ...],
                      compat: bool) -> None:
    """Make the guest issue hypercall ``nr`` again with ``args`` (see the module docstring).

    The caller's worker then returns ``nr``, which becomes RAX.  Raises
    GuestFault if the guest's code before RIP cannot be read, CannotContinue
    if it is not an OUT to the hypercall port (another vCPU unmapped or
    rewrote it, or the guest used a string OUT): the domain crashes, as
    nothing else can be done."""
    kvm = runner.kvm
    runner.control.complete_pending_io(kvm.run)  # RIP is past the OUT from here on
    regs = kvm.regs  # synced again by that KVM_RUN
    linear = (int(regs.rip) + int(kvm.sregs.cs.base)) & (_M32 if compat else _M64)
    before = runner.guest_access().read(linear - 2, 2)
    if before[1] in _OUT_DX:
        length = 1
    elif before[0] in _OUT_IMM8 and before[1] == hypercall_page.HYPERCALL_PORT:
        length = 2
    else:
        raise CannotContinue(f"no OUT to port {hypercall_page.HYPERCALL_PORT:#x} ends at "
                           f"{linear:#x}: cannot restart the hypercall")
    regs.rip = (int(regs.rip) - length) & (_M32 if compat else _M64)
    regs.rax = nr
    mask = _M32 if compat else _M64
    for name, value in zip(_ARGS_32 if compat else _ARGS_64, args, strict=False):
        setattr(regs, name, value & mask)
    kvm.mark_regs_dirty()


# -- other exits -------------------------------------------------------------------------


def _debug_console(runner: VcpuRunner, io: ex.IoExit) -> None:
    if not io.is_out:
        # Xen handles only writes to port 0xE9; a read is an ordinary unhandled port.
        _unhandled_io(runner, io)
        return
    data = bytes(runner.kvm.io_data(io.data_offset, io.size * io.repeat))
    runner.domain.hv.console.guest_write(runner.domain.domid, data, source="e9")


def _unhandled_io(runner: VcpuRunner, io: ex.IoExit) -> None:
    if not io.is_out:
        length = io.size * io.repeat
        runner.kvm.io_data(io.data_offset, length)[:] = b"\xff" * length
    if io.port not in runner.io_warned:
        runner.io_warned.add(io.port)
        kind = "write to" if io.is_out else "read of"
        runner.domain.log(f"vcpu {runner.vcpu_id}: {kind} unhandled I/O port {io.port:#x} "
                          "(reads return all ones, writes are dropped)")


def _hvm_io(runner: VcpuRunner, io: ex.IoExit) -> None:
    """An HVM domain's port: the platform's (in the hypervisor), else the device model's."""
    domain = runner.domain
    platform = domain.platform
    assert platform is not None
    port, size, count = io.port, io.size, io.repeat
    data = runner.kvm.io_data(io.data_offset, size * count)
    if platform.claims_port(port):
        for at in range(0, size * count, size):
            if io.is_out:
                platform.pio_write(port, size, int.from_bytes(data[at:at + size], "little"))
            else:
                value = platform.pio_read(port, size) & ((1 << (8 * size)) - 1)
                data[at:at + size] = value.to_bytes(size, "little")
        return
    dm = domain.device_model
    if dm is None:
        _unhandled_io(runner, io)
        return
    channel = dm.channel
    vcpu = runner.vcpu_id
    try:
        if count == 1:
            value = int.from_bytes(data, "little") if io.is_out else 0
            answer = channel.request(vcpu, IoreqType.PIO, port, size, 1, not io.is_out, value)
            if not io.is_out:
                data[:] = answer.to_bytes(8, "little")[:size]
            return
        area = channel.data_area(vcpu)
        if io.is_out:
            area[:len(data)] = data
        channel.request(vcpu, IoreqType.PIO, port, size, count, not io.is_out, 0,
                        data_is_ptr=True)
        if not io.is_out:
            data[:] = area[:len(data)]
    except DeviceModelGone:
        if not io.is_out:
            data[:] = b"\xff" * len(data)  # the vCPU is being stopped anyway


def _mmio(runner: VcpuRunner, mmio: ex.MmioExit) -> None:
    """The APIC page, an HVM platform device or the device model; else a frame with
    nothing behind it: reads all ones, writes dropped."""
    if runner.apic.mmio(mmio):
        return
    domain = runner.domain
    if domain.altp2m.engaged:  # a frame a view maps differently (hv/altp2m.py)
        vmi = domain.vmi
        if vmi is not None and vmi.mmio(runner, mmio):
            return
        if vmi is None and domain.altp2m.emulate_mmio(runner, mmio):
            return  # a slot being re-made: the access goes to the view's frame
    platform = domain.platform
    if platform is not None and _hvm_mmio(runner, platform, mmio):
        return
    if not mmio.is_write:
        _mmio_answer(runner, (1 << 64) - 1, mmio.length)


def _mmio_answer(runner: VcpuRunner, value: int, size: int) -> None:
    """The data of an MMIO read exit: ``size`` bytes of ``value``, little-endian."""
    data = runner.kvm.kvm_run.exit.mmio.data
    for i in range(size):
        data[i] = value >> (8 * i) & 0xFF


def _hvm_mmio(runner: VcpuRunner, platform: Platform, mmio: ex.MmioExit) -> bool:
    """An HVM domain's MMIO access; False if nothing emulates that address."""
    addr, size = mmio.phys_addr, mmio.length
    if platform.claims_mmio(addr):
        if mmio.is_write:
            platform.mmio_write(addr, size, int.from_bytes(mmio.data[:size], "little"))
        else:
            _mmio_answer(runner, platform.mmio_read(addr, size), size)
        return True
    dm = runner.domain.device_model
    if dm is None or size not in (1, 2, 4, 8):
        return False
    try:
        value = dm.channel.request(runner.vcpu_id, IoreqType.COPY, addr, size, 1,
                                   not mmio.is_write,
                                   int.from_bytes(mmio.data[:size], "little") if mmio.is_write
                                   else 0)
    except DeviceModelGone:
        value = (1 << 64) - 1
    if not mmio.is_write:
        _mmio_answer(runner, value, size)
    return True


def _msr(runner: VcpuRunner, msr: ex.MsrExit) -> None:
    if msr.number != HYPERCALL_MSR:
        runner.apic.msr(msr)  # the APIC's, or one KVM refused (see Domain.__init__)
        return
    run = runner.kvm.kvm_run.exit.msr
    if not msr.is_write:
        run.data = 0
        run.error = 0
        return
    domain = runner.domain
    gfn, index = msr.data >> 12, msr.data & 0xFFF
    found = domain.memory.lookup(Gfn(gfn)) if gfn < domain.max_gfn else None
    if index != 0 or found is None or found[1] is not PageKind.RAM:
        domain.log(f"vcpu {runner.vcpu_id}: bad hypercall page MSR write {msr.data:#x}: #GP")
        run.error = 1
        return
    hypercall_page.fill_page(domain.memory.page(Gfn(gfn)))
    sregs = runner.kvm.sregs
    domain.latch_mode(compat=not (sregs.efer & _EFER_LMA and sregs.cs.l))
    run.error = 0


def _hlt(runner: VcpuRunner) -> None:
    vmi = runner.domain.vmi
    if vmi is not None and not vmi.genuine_hlt(runner):
        return  # a stray HLT exit after single-stepping a HLT (pyxen/vmi/core.py)
    if not runner.kvm.regs.rflags & _RFLAGS_IF:
        # Xen: HLT with interrupts off takes the vCPU down; the last one down is poweroff.
        runner.take_down()
        return
    runner.block()
    if runner.domain.platform is not None:
        # An HVM guest's HLT ends with an interrupt, as on hardware: a wake that brought
        # none (a kick for a line that went down again, say) sleeps again.  Firmware
        # counts timer ticks by HLTs.  Anything that needs the thread ends it too.
        while not _hlt_ends(runner):
            runner.block()


def _hlt_ends(runner: VcpuRunner) -> bool:
    return bool(runner.control.requests & _HLT_ENDERS or runner.domain.pause_count
                or not runner.online or runner.apic.signals
                or wakes_a_block(runner, until_deliverable=False))
