"""vcpu_op (hypercall 24): bring vCPUs up and down, timers, runstate, vcpu_info (§8.1, §3.4).

VCPUOP_initialise loads a ``vcpu_hvm_context`` into the target vCPU with
Xen 4.12's checks (segment sanity, EIP within CS, DPL rules, canonical RIP
and long-mode bits in 64-bit mode).  It may act from the caller's thread
because a vCPU that was never initialised has never entered KVM_RUN.
KVM's own refusal of a register state (KVM_SET_SREGS) is -EINVAL as well.

register_vcpu_time_memory_area (13) keeps a second copy of the pvclock
parameters at a guest virtual address; it is written by the vCPU's own
thread (the only one that can translate it) at its next exit after each
update.  get_physid (12) is -EINVAL, as for an unpinned vCPU.
"""

from __future__ import annotations

import contextlib

from pyxen.abi.errno import XenErrno
from pyxen.abi.hvm import VCPU_HVM_MODE_32B, VCPU_HVM_MODE_64B, vcpu_hvm_context
from pyxen.abi.vcpu import (
    VCPU_SSHOTTMR_future,
    VcpuOp,
    compat_vcpu_register_runstate_memory_area,
    compat_vcpu_register_time_memory_area,
    compat_vcpu_set_singleshot_timer,
    vcpu_register_runstate_memory_area,
    vcpu_register_time_memory_area,
    vcpu_register_vcpu_info,
    vcpu_set_periodic_timer,
    vcpu_set_singleshot_timer,
)
from pyxen.hv import atomic
from pyxen.hv.dispatch import Call, signed32
from pyxen.hv.errors import HypercallError
from pyxen.hv.shared_info import UPCALL_MASK, UPCALL_PENDING, VCPU_INFO_SIZE
from pyxen.hv.vcpu import VcpuRunner
from pyxen.hv.vcpu_control import Req
from pyxen.kvm import structs as ks
from pyxen.memory import PAGE_SIZE, Gfn, GuestFault, PageKind

PERIOD_MIN_NS = 1_000_000
PERIOD_MAX_NS = (1 << 62) - 1
_CR0_PG = 1 << 31
_CR4_PAE = 1 << 5
_EFER_LME = 1 << 8
_EFER_LMA = 1 << 10
_TSS_BUSY = 0xB


def do_vcpu_op(call: Call, cmd: int, vcpuid: int, arg: int, *_: int) -> int:
    cmd = signed32(cmd)
    vcpuid = signed32(vcpuid)
    domain = call.domain
    if not 0 <= vcpuid < len(domain.vcpus):
        return -XenErrno.ENOENT
    v = domain.vcpus[vcpuid]
    if cmd == VcpuOp.initialise:
        return _initialise(call, v, arg)
    if cmd == VcpuOp.up:
        with domain.lock:
            if not v.initialised:
                return -XenErrno.EINVAL
            v.online = True
        v.request(Req.STATE)
        return 0
    if cmd == VcpuOp.down:
        v.take_down()  # asynchronous for another vCPU; the last one down is a poweroff
        return 0
    if cmd == VcpuOp.is_up:
        return 1 if v.online else 0
    if cmd == VcpuOp.get_runstate_info:
        now = domain.hv.system_time_ns()
        call.guest.write_struct(arg, v.time.runstate.snapshot(call.compat, now))
        return 0
    if cmd == VcpuOp.register_runstate_memory_area:
        a = call.guest.read_struct(arg, compat_vcpu_register_runstate_memory_area
                                   if call.compat else vcpu_register_runstate_memory_area)
        gva = int(a.addr.h)
        v.time.runstate_gva = gva
        at = None if v is call.vcpu else domain.hv.system_time_ns()
        with contextlib.suppress(*GuestFault):  # Xen copies without checking the result
            call.guest.write_struct(gva, v.time.runstate.snapshot(call.compat, at))
        return 0
    if cmd == VcpuOp.set_periodic_timer:
        period = int(call.guest.read_struct(arg, vcpu_set_periodic_timer).period_ns)
        if period < PERIOD_MIN_NS or period > PERIOD_MAX_NS:
            return -XenErrno.EINVAL
        v.time.periodic_period = period
        v.time.periodic.arm(domain.hv.system_time_ns() + period)
        return 0
    if cmd == VcpuOp.stop_periodic_timer:
        v.time.periodic_period = 0
        v.time.periodic.cancel()
        return 0
    if cmd == VcpuOp.set_singleshot_timer:
        if v is not call.vcpu:
            return -XenErrno.EINVAL
        t = call.guest.read_struct(arg, compat_vcpu_set_singleshot_timer
                                   if call.compat else vcpu_set_singleshot_timer)
        deadline = int(t.timeout_abs_ns)
        if t.flags & VCPU_SSHOTTMR_future and deadline < domain.hv.system_time_ns():
            return -XenErrno.ETIME
        v.time.singleshot.arm(deadline)
        return 0
    if cmd == VcpuOp.stop_singleshot_timer:
        if v is not call.vcpu:
            return -XenErrno.EINVAL
        v.time.singleshot.cancel()
        return 0
    if cmd == VcpuOp.register_vcpu_info:
        info = call.guest.read_struct(arg, vcpu_register_vcpu_info)
        _register_vcpu_info(call, v, int(info.mfn), int(info.offset))
        return 0
    if cmd == VcpuOp.send_nmi:
        if arg:
            return -XenErrno.EINVAL
        v.request(Req.NMI)
        return 0
    if cmd == VcpuOp.get_physid:
        return -XenErrno.EINVAL  # only pinned vCPUs of the hardware domain have one
    if cmd == VcpuOp.register_vcpu_time_memory_area:
        a = call.guest.read_struct(arg, compat_vcpu_register_time_memory_area
                                   if call.compat else vcpu_register_time_memory_area)
        v.time.time_area_gva = int(a.addr.h)
        if v is call.vcpu:
            v.time.write_time_area(call.guest)
        else:
            domain.publish_time(v)  # written by that vCPU at its next exit
        return 0
    return -XenErrno.ENOSYS


# -- VCPUOP_register_vcpu_info ----------------------------------------------------


def _register_vcpu_info(call: Call, v: VcpuRunner, gfn: int, offset: int) -> None:
    domain = call.domain
    if offset > PAGE_SIZE - VCPU_INFO_SIZE:
        raise HypercallError(XenErrno.EINVAL)
    if v.vcpu_info_registered:
        raise HypercallError(XenErrno.EINVAL)
    if v is not call.vcpu and v.online:
        raise HypercallError(XenErrno.EINVAL)
    with domain.lock:
        found = domain.memory.lookup(Gfn(gfn)) if 0 <= gfn < domain.max_gfn else None
        if found is None or found[1] is not PageKind.RAM:
            raise HypercallError(XenErrno.EINVAL)
        pool_page = found[0]
        page = domain.memory.pool_view(pool_page)
        new_view = page[offset : offset + VCPU_INFO_SIZE]
        new_host = domain.memory.host_base + pool_page * PAGE_SIZE + offset
    layout = domain.layout
    with domain.hv.event_lock, domain.time_lock:
        if v.vcpu_id < 32:
            new_view[:] = v.vcpu_info_view
        else:
            new_view[:] = bytes(VCPU_INFO_SIZE)
            new_view[UPCALL_MASK] = 1
        v.vcpu_info_view.release()
        v.vcpu_info_view = new_view
        v.vcpu_info_host = new_host
        v.vcpu_info_registered = True
        # Xen marks everything pending so nothing is lost: a spurious upcall.
        new_view[UPCALL_PENDING] = 1
        for bit in range(layout.word_bits):
            atomic.test_and_set_bit(new_host + layout.selector, bit)
    page.release()
    domain.publish_time(v)
    v.raise_upcall()


# -- VCPUOP_initialise -------------------------------------------------------------


def _initialise(call: Call, v: VcpuRunner, arg: int) -> int:
    if v.vcpu_id >= 32 and not v.vcpu_info_registered:
        return -XenErrno.EINVAL
    ctx = call.guest.read_struct(arg, vcpu_hvm_context)
    with call.domain.lock:
        if v.initialised:
            return -XenErrno.EEXIST
        regs, sregs = _context_to_kvm(ctx, v.kvm.get_sregs())
        try:
            v.kvm.set_sregs(sregs)
            v.kvm.set_regs(regs)
        except OSError as e:
            call.domain.log(f"vcpu {v.vcpu_id}: KVM refused the VCPUOP_initialise state: "
                            f"{e.strerror}")
            return -XenErrno.EINVAL
        v.kvm.clear_dirty_regs()
        v.initialised = True
    return 0


def _segment(ar: int, base: int, limit: int, name: str) -> ks.kvm_segment:
    """A segment from Xen's packed access rights, checked as Xen's check_segment does."""
    if ar & 0xF000:
        raise HypercallError(XenErrno.EINVAL)
    if ar == 0:
        if name not in ("ds", "es"):
            raise HypercallError(XenErrno.EINVAL)  # null CS, SS or TR
        return ks.kvm_segment(unusable=1)
    present = (ar >> 7) & 1
    seg_type = ar & 0xF
    s = (ar >> 4) & 1
    if present:
        seg_type |= 2 if name == "tr" else 1  # busy TSS / accessed
    if name == "tr":
        if s or seg_type != _TSS_BUSY:
            raise HypercallError(XenErrno.EINVAL)
    elif not s:
        raise HypercallError(XenErrno.EINVAL)
    if not present:
        raise HypercallError(XenErrno.EINVAL)
    if ((name == "cs" and not seg_type & 8)
            or (name == "ss" and (seg_type & 8 or not seg_type & 2))
            or (name in ("ds", "es") and seg_type & 8 and not seg_type & 2)):
        raise HypercallError(XenErrno.EINVAL)
    return ks.kvm_segment(base=base, limit=limit, selector=0, type=seg_type, present=1,
                          dpl=(ar >> 5) & 3, db=(ar >> 10) & 1, s=s, l=(ar >> 9) & 1,
                          g=(ar >> 11) & 1, avl=(ar >> 8) & 1)


def _context_to_kvm(ctx: vcpu_hvm_context, sregs: ks.kvm_sregs
                    ) -> tuple[ks.kvm_regs, ks.kvm_sregs]:
    if ctx.pad != 0:
        raise HypercallError(XenErrno.EINVAL)
    regs = ks.kvm_regs()
    if ctx.mode == VCPU_HVM_MODE_32B:
        r32 = ctx.cpu_regs.x86_32
        if r32.pad1 or any(r32.pad2):
            raise HypercallError(XenErrno.EINVAL)
        segs = {name: _segment(getattr(r32, f"{name}_ar"), getattr(r32, f"{name}_base"),
                               getattr(r32, f"{name}_limit"), name)
                for name in ("cs", "ds", "ss", "es", "tr")}
        cs = segs["cs"]
        limit = (cs.limit << 12 | 0xFFF) & 0xFFFF_FFFF if cs.g else cs.limit
        if r32.eip > limit or segs["ss"].dpl != cs.dpl:
            raise HypercallError(XenErrno.EINVAL)
        for name in ("ds", "es"):
            if segs[name].present and segs[name].dpl > cs.dpl:
                raise HypercallError(XenErrno.EINVAL)
        if r32.efer & _EFER_LMA and not r32.efer & _EFER_LME:
            raise HypercallError(XenErrno.EINVAL)
        for name in ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi"):
            setattr(regs, name, getattr(r32, "e" + name[1:]))
        regs.rip, regs.rflags = r32.eip, r32.eflags
        cr0, cr3, cr4, efer = r32.cr0, r32.cr3, r32.cr4, r32.efer
    elif ctx.mode == VCPU_HVM_MODE_64B:
        r64 = ctx.cpu_regs.x86_64
        rip = int(r64.rip)
        if not (rip < 1 << 47 or rip >= (1 << 64) - (1 << 47)):
            raise HypercallError(XenErrno.EINVAL)
        if not r64.cr0 & _CR0_PG or not r64.cr4 & _CR4_PAE or not r64.efer & _EFER_LME:
            raise HypercallError(XenErrno.EINVAL)
        for name in ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "rip", "rflags"):
            setattr(regs, name, getattr(r64, name))
        cr0, cr3, cr4, efer = r64.cr0, r64.cr3, r64.cr4, r64.efer
        flat = 0xFFFF_FFFF
        segs = {"cs": _segment(0xA9B, 0, flat, "cs"), "tr": _segment(0x8B, 0, 0x67, "tr")}
        for name in ("ds", "ss", "es"):
            segs[name] = _segment(0xC93, 0, flat, name)
    else:
        raise HypercallError(XenErrno.EINVAL)
    if efer & _EFER_LME:
        efer |= _EFER_LMA
    for name, seg in segs.items():
        setattr(sregs, name, seg)
    sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = cr0, cr3, cr4, efer
    regs.rflags |= 2  # the always-one bit
    return regs, sregs
