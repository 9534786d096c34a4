"""One module per hypercall family; ``register_all`` fills the dispatch table."""

from __future__ import annotations

from pyxen.abi.xen import Hypercall
from pyxen.hv.dispatch import HypercallTable
from pyxen.hv.hypercalls import (
    argo_op,
    console_io,
    event_channel_op,
    grant_table_op,
    hvm_op,
    memory_op,
    sched_op,
    vcpu_op,
    xen_version,
)


def register_all(table: HypercallTable) -> None:
    table.register(Hypercall.xen_version, xen_version.do_xen_version)
    table.register(Hypercall.console_io, console_io.do_console_io)
    table.register(Hypercall.sched_op, sched_op.do_sched_op)
    table.register(Hypercall.memory_op, memory_op.do_memory_op)
    table.register(Hypercall.hvm_op, hvm_op.do_hvm_op)
    table.register(Hypercall.event_channel_op, event_channel_op.do_event_channel_op)
    table.register(Hypercall.vcpu_op, vcpu_op.do_vcpu_op)
    table.register(Hypercall.set_timer_op, sched_op.do_set_timer_op)
    table.register(Hypercall.argo_op, argo_op.do_argo_op)
    table.register(Hypercall.grant_table_op, grant_table_op.do_grant_table_op)
