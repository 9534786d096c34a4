"""hvm_op (hypercall 34): HVM params, get_time, flush_tlbs, the upcall vector (§4.1-4.3).

A guest may set and read only the params Xen 4.12 lets a domain touch on
itself (``GUEST_SETTABLE`` / ``GUEST_READABLE``); the others are the
toolstack's (-EPERM).  Setting CALLBACK_IRQ latches the shared-info layout
from the caller's mode, as the hypercall-page MSR write does.

HVMOP_set_evtchn_upcall_vector gives one vCPU its own event vector,
delivered through its local APIC as an edge interrupt that the guest EOIs
(see VcpuRunner.raise_upcall).  It records the vector and raises it once
at once, as Xen's hvm_assert_evtchn_irq does (see
``_set_evtchn_upcall_vector``).
"""

from __future__ import annotations

from pyxen.abi.errno import XenErrno
from pyxen.abi.hvm import (
    HVM_EVTCHN_UPCALL_VECTOR_MIN,
    HVM_NR_PARAMS,
    HvmOp,
    xen_hvm_evtchn_upcall_vector,
    xen_hvm_get_time,
    xen_hvm_param,
)
from pyxen.abi.hvm import HvmParam as P
from pyxen.hv.dispatch import Call, report_missing_subop
from pyxen.hv.errors import HypercallError
from pyxen.hv.hypercalls.altp2m_op import do_altp2m_op
from pyxen.hv.hypercalls.domids import target_domain

GUEST_SETTABLE = frozenset({
    P.CALLBACK_IRQ, P.VM86_TSS, P.VM86_TSS_SIZED, P.ACPI_IOPORTS_LOCATION,
    P.VM_GENERATION_ID_ADDR, P.STORE_EVTCHN, P.CONSOLE_EVTCHN, P.X87_FIP_WIDTH,
})
GUEST_READABLE = GUEST_SETTABLE | {P.STORE_PFN, P.CONSOLE_PFN, P.ALTP2M}


def do_hvm_op(call: Call, op: int, arg: int, *_: int) -> int:
    if op in (HvmOp.set_param, HvmOp.get_param):
        return _param(call, op == HvmOp.set_param, arg)
    if op == HvmOp.flush_tlbs:
        if arg:
            raise HypercallError(XenErrno.EINVAL)
        return 0  # KVM flushes guest TLBs itself whenever pyxen changes the p2m
    if op == HvmOp.get_time:
        call.guest.write_struct(arg, xen_hvm_get_time(call.domain.hv.system_time_ns()))
        return 0
    if op == HvmOp.set_evtchn_upcall_vector:
        return _set_evtchn_upcall_vector(call, arg)
    if op == HvmOp.altp2m:
        return do_altp2m_op(call, arg)
    try:
        name = HvmOp(op).name
    except ValueError:
        return -XenErrno.ENOSYS
    if op in (HvmOp.set_pci_intx_level, HvmOp.set_isa_irq_level, HvmOp.set_pci_link_route,
              HvmOp.set_mem_access, HvmOp.get_mem_access):
        return -XenErrno.ENOSYS
    return report_missing_subop(call, "hvm_op", op, name)


def _param(call: Call, is_set: bool, arg: int) -> int:
    a = call.guest.read_struct(arg, xen_hvm_param)
    if a.index >= HVM_NR_PARAMS:
        raise HypercallError(XenErrno.EINVAL)
    d = target_domain(call, a.domid)
    index = int(a.index)
    if d is call.domain and index not in (GUEST_SETTABLE if is_set else GUEST_READABLE):
        raise HypercallError(XenErrno.EPERM)
    if not is_set:
        a.value = d.params[index]
        call.guest.write_struct(arg, a)
        return 0
    value = int(a.value)
    if index == P.X87_FIP_WIDTH and value not in (0, 4, 8):
        raise HypercallError(XenErrno.EINVAL)
    if index == P.ACPI_IOPORTS_LOCATION and value not in (0, 1):
        raise HypercallError(XenErrno.EINVAL)
    d.params[index] = value
    if d.platform is not None:
        d.platform.set_param(index, value)  # ACPI_IOPORTS_LOCATION moves the PM block
    if index == P.CALLBACK_IRQ:
        d.latch_mode(call.compat)
        d.set_callback_irq(value)
    return 0


def _set_evtchn_upcall_vector(call: Call, arg: int) -> int:
    """Xen's hvmop_set_evtchn_upcall_vector: checks in its order, record, assert once.

    Like Xen (hvm_assert_evtchn_irq right after recording the vector), the
    vector is raised once at once: an event that became pending before the
    guest had any way to receive it (a console notification during early
    boot leaves evtchn_upcall_pending and a selector bit set) would
    otherwise block every later upcall, since only a 0 -> 1 edge of
    evtchn_upcall_pending raises the vector.  Solo5 relies on this."""
    a = call.guest.read_struct(arg, xen_hvm_evtchn_upcall_vector)
    vector, vcpu_id = int(a.vector), int(a.vcpu)
    if vector < HVM_EVTCHN_UPCALL_VECTOR_MIN:
        raise HypercallError(XenErrno.EINVAL)
    domain = call.domain
    if vcpu_id >= len(domain.vcpus):
        raise HypercallError(XenErrno.ENOENT)
    domain.log_once(f"upcall-vector-{vcpu_id}-{vector}",
                    f"vcpu {vcpu_id}: upcall vector {vector:#04x}")
    lapic = domain.vcpus[vcpu_id].apic.lapic
    lapic.upcall_vector = vector
    lapic.set_irq(vector)
    return 0
