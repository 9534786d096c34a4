"""Which pending interrupts end a vCPU's block (hv/vcpu_inject.py ``wakes_a_block``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pyxen.hv.shared_info import UPCALL_PENDING
from pyxen.hv.vcpu_inject import wakes_a_block


def _runner(*, hvm: bool, pending: bool, callback: int | None = None, upcall_vector: int = 0,
            apic_deliverable: bool = False) -> Any:
    view = bytearray(64)
    view[UPCALL_PENDING] = int(pending)
    lapic = SimpleNamespace(upcall_vector=upcall_vector)
    apic = SimpleNamespace(lapic=lapic, deliverable=lambda: apic_deliverable)
    domain = SimpleNamespace(platform=object() if hvm else None, callback_vector=callback)
    return SimpleNamespace(vcpu_info_view=view, apic=apic, domain=domain)


def test_an_interrupt_the_apic_or_pic_can_deliver_always_wakes() -> None:
    assert wakes_a_block(_runner(hvm=True, pending=False, apic_deliverable=True), False)
    assert not wakes_a_block(_runner(hvm=True, pending=False), False)


def test_a_pending_event_wakes_a_pvh_guest_even_without_a_callback() -> None:
    """pyxen's documented deviation: on a KVM without interrupt-window exits a PVH
    guest blocking with IF=0 would otherwise sleep for ever."""
    assert wakes_a_block(_runner(hvm=False, pending=True), False)


@pytest.mark.parametrize(("callback", "upcall_vector", "wakes"), [
    (None, 0, False),  # firmware polling an event channel: no interrupt, as in Xen
    (0xF3, 0, True),  # HVM_PARAM_CALLBACK_IRQ vector
    (None, 0xF4, True),  # HVMOP_set_evtchn_upcall_vector
])
def test_a_pending_event_wakes_an_hvm_guest_only_with_a_callback(
        callback: int | None, upcall_vector: int, wakes: bool) -> None:
    runner = _runner(hvm=True, pending=True, callback=callback, upcall_vector=upcall_vector)
    assert wakes_a_block(runner, False) is wakes
