"""A guest that balloons every other page of 256 MiB: the p2m's KVM slot budget.

The ``balloon`` guest (guests/tests/balloon.c) fragments its p2m until the
hypervisor cannot follow, checks Xen's answers (a short count, -ENOMEM), gives
everything back and fragments a small region again.  Before the slot budget,
this crashed the domain through the internal-error path once KVM refused a
slot.  Here, after it powers off (its memory still there), the hypervisor's
books must agree with each other and with KVM.
"""

from __future__ import annotations

import itertools

import pytest

from pyxen.abi.xen import ShutdownReason
from pyxen.hv.domain import Domain
from pyxen.kvm import KvmError
from pyxen.memory import PAGE_SIZE, PageKind

from .domains import Host


def _kvm_has_slot_at(d: Domain, gfn: int) -> bool:
    """Whether KVM has a memory slot covering ``gfn``: a new slot there collides."""
    assert d.memory.slot_limit is not None
    probe = d.memory.slot_limit - 1  # never used: the budget keeps a reserve
    assert probe not in d.memory.slot_ids().values()
    host = d.memory.host_base  # any page of the pool will do
    try:
        d.vm.set_memory_region(probe, gfn * PAGE_SIZE, PAGE_SIZE, host)
    except KvmError as e:
        assert "File exists" in str(e), e  # EEXIST: overlaps a slot
        return True
    d.vm.set_memory_region(probe, gfn * PAGE_SIZE, 0, 0)
    return False


def _check_books(d: Domain) -> None:
    extents = list(d.memory.extents())
    ram = sum(e.pages for e in extents if e.kind is PageKind.RAM)
    assert d.tot_pages == ram, "every owned page is mapped (none orphaned in this run)"
    assert d.memory.free_ram_available() == d.max_pages - d.tot_pages
    ids = d.memory.slot_ids()
    assert sorted(ids) == [e.gfn for e in extents]
    assert len(set(ids.values())) == len(extents)
    for a, b in itertools.pairwise(extents):
        assert a.end <= b.gfn and not a.joins(b), (a, b)
    # KVM holds a slot over the first and last frame of every extent, and none
    # over the first and last frame of every hole between them.
    for e in extents:
        assert _kvm_has_slot_at(d, e.gfn) and _kvm_has_slot_at(d, e.end - 1), e
    for a, b in itertools.pairwise(extents):
        if a.end < b.gfn:
            assert not _kvm_has_slot_at(d, a.end) and not _kvm_has_slot_at(d, b.gfn - 1), (a, b)


@pytest.mark.kvm
def test_balloon_every_other_page_of_256_mib(host: Host) -> None:
    d = host.build("balloon", "full=1", memory=256)
    slots_at_start = d.memory.slots_in_use
    d.start()
    assert host.wait_all([d], timeout=600) == [ShutdownReason.poweroff], host.describe()
    assert host.result(d.domid, "balloon") == "PASS", host.describe()
    log = host.log.getvalue()
    assert "pyxen bug" not in log and "crashed" not in log, host.describe()
    assert "KVM memory slots" in log, host.describe()  # the budget was reached, and said so
    # Everything came back and merged; then 64 holes were made again.
    assert d.memory.slots_in_use == slots_at_start + 64, host.describe()
    _check_books(d)
