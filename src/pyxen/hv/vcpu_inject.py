"""Interrupt injection into one vCPU, done by its own thread before KVM_RUN.

Order (Xen's hvm_vcpu_has_pending_irq): an NMI, then the event callback
vector, then (vCPU 0 of an HVM domain) the 8259's ExtINT, then the local
APIC's highest deliverable vector.

Event delivery (HVM_PARAM_CALLBACK_IRQ type 2, §4.3): while the vCPU's
``evtchn_upcall_pending`` is set the callback vector is injected at entry
when the guest can take it (KVM_INTERRUPT), otherwise an interrupt window
is requested; ``inject`` reports that something is still pending, and the
thread looks again after the next exit (Req.RECHECK), which gives Xen's
level-triggered behaviour.  Xen ignores ``evtchn_upcall_mask`` for HVM
delivery, and so does pyxen.  A vCPU given a per-vCPU upcall vector
(HVMOP_set_evtchn_upcall_vector) gets events as an edge interrupt in its
APIC instead (``VcpuRunner.raise_upcall``), which the guest EOIs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyxen.hv.shared_info import UPCALL_PENDING

if TYPE_CHECKING:
    from pyxen.hv.vcpu import VcpuRunner

_RFLAGS_IF = 1 << 9


def inject(runner: VcpuRunner, nmi: bool) -> bool:
    """Inject what is pending; True while an interrupt waits for the guest to take it."""
    kvm = runner.kvm
    if nmi:
        kvm.inject_nmi()
    vector = runner.domain.callback_vector
    if vector is not None and runner.vcpu_info_view[UPCALL_PENDING]:
        if kvm.ready_for_interrupt():
            kvm.inject_interrupt(vector)
            kvm.set_interrupt_window(False)
        else:
            kvm.set_interrupt_window(True)
        return True  # level-triggered: look again after the next exit
    apic = runner.apic
    if apic.lapic.irr or apic.ext_int_waiting():
        return apic.inject()
    kvm.set_interrupt_window(False)
    return False


def upcall_deliverable(runner: VcpuRunner) -> bool:
    """An event is pending and the guest could take the callback (or an APIC vector) now."""
    if not runner.kvm.regs.rflags & _RFLAGS_IF:
        return False
    return ((runner.domain.callback_vector is not None
             and bool(runner.vcpu_info_view[UPCALL_PENDING]))
            or runner.apic.deliverable())


def wakes_a_block(runner: VcpuRunner, until_deliverable: bool) -> bool:
    """Whether a block should end at once for the vCPU's interrupts.

    By default an event already pending (upcall_pending set) ends it even
    with interrupts disabled.  Xen 4.12 would sleep there until the next
    kick and rely on an interrupt window to have delivered the event
    earlier; on a KVM without interrupt-window exits (nested PVM) that
    event would never be delivered, so a guest blocking with IF=0 would
    sleep for ever.  ``until_deliverable`` keeps Xen's stricter test
    (SCHEDOP_poll's "events need delivery")."""
    if until_deliverable:
        return upcall_deliverable(runner)
    if runner.apic.deliverable():
        return True
    if not runner.vcpu_info_view[UPCALL_PENDING]:
        return False
    # An HVM guest without an event callback (firmware polling xenstore's port, as
    # hvmloader and SeaBIOS do) leaves upcall_pending set for good: as in Xen, that
    # is no interrupt and must not end its HLTs.
    domain = runner.domain
    return (domain.platform is None or domain.callback_vector is not None
            or runner.apic.lapic.upcall_vector != 0)
