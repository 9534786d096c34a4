"""Grant tables on KVM: the gnttab guest alone, two domains sharing pages, and a
service-process-style mapping through ``pyxen.hv.grant_table.map_grant``.

Domain ids are allocated before the domains are built (as the pingpong test
does) so that each guest learns its peer's id from its command line; the
granter uses fixed refs (8 read-only and 9 writable for the peer, 10 for
domain 0, where services live).
"""

from __future__ import annotations

import mmap
import os
import re
import time
from collections.abc import Callable

import pytest

from pyxen.abi.grant_table import GnttabStatus, GTF_permit_access, GTF_reading, GTF_writing
from pyxen.abi.xen import ShutdownReason
from pyxen.hv.grant_table import GrantError, map_grant, unmap_grant

from .domains import Host
from .test_guests import assert_result

RunGuest = Callable[..., tuple[int, str, str]]
SVC_REF = 10
SVC_MARK = 0x656369767265535F  # "_Service", which the granter checks for


def _wait_line(host: Host, pattern: str, timeout: float = 60) -> re.Match[str]:
    end = time.monotonic() + timeout
    regex = re.compile(pattern, re.MULTILINE)
    while time.monotonic() < end:
        m = regex.search(host.output())
        if m:
            return m
        time.sleep(0.01)
    pytest.fail(f"no line matching {pattern!r} within {timeout}s\n{host.describe()}")


def _assert_passed(host: Host, domid: int, prog: str) -> None:
    assert host.result(domid, prog) == "PASS", host.describe()
    assert "pyxen bug" not in host.log.getvalue(), host.describe()


@pytest.mark.kvm
def test_gnttab_guest(run_guest: RunGuest) -> None:
    status, out, err = run_guest("gnttab")
    assert_result("gnttab", status, out, err)


@pytest.mark.kvm
def test_two_domains_share_pages_and_a_service_maps_one(host: Host) -> None:
    a_id = host.hv.allocate_domid()
    b_id = host.hv.allocate_domid()
    a = host.build("gnttab", f"role=granter peer={b_id}", domid=a_id)
    b = host.build("gnttab", f"role=grantee peer={a_id}", domid=b_id)
    a.start()
    b.start()
    _wait_line(host, rf"^\(d{a_id}\) gnttab: granted ")

    # The service (domain 0's stand-in) may not map a grant meant for B.
    with pytest.raises(GrantError) as e:
        map_grant(a, 8, 0, readonly=True)
    assert e.value.status == GnttabStatus.general_error

    mapping = map_grant(a, SVC_REF, 0, readonly=False)
    try:
        flags, domid = a.grants.read_header(SVC_REF)
        assert domid == 0
        assert flags == GTF_permit_access | GTF_reading | GTF_writing
        page = mapping.view()
        # The granter filled the page with (150 + 7 i) & 0xFF.
        assert bytes(page[:8]) == bytes((150 + 7 * i) & 0xFF for i in range(8))
        page.release()
        # What a service process gets: the page moved into a file of its own while
        # A runs; a write through that file is the guest's (A checks the mark).
        export = a.grants.exports.acquire(mapping.pool_page, readonly=False)
        try:
            assert os.fstat(export.fd).st_size == 4096
            with mmap.mmap(export.fd, 4096) as shared:
                assert shared[:8] == bytes((150 + 7 * i) & 0xFF for i in range(8))
                _wait_line(host, rf"^\(d{a_id}\) gnttab: revoke while mapped refused")
                assert a.grants.read_header(SVC_REF)[0] & 3 == GTF_permit_access
                shared[64:72] = SVC_MARK.to_bytes(8, "little")
        finally:
            a.grants.exports.release(export)
        assert bytes(a.memory.pool_view(mapping.pool_page)[64:72]) == SVC_MARK.to_bytes(8, "little")
    finally:
        unmap_grant(mapping)
    assert a.grants.read_header(SVC_REF)[0] & (GTF_reading | GTF_writing) == 0

    reasons = host.wait_all([a, b], timeout=120)
    assert reasons == [ShutdownReason.poweroff] * 2, host.describe()
    _assert_passed(host, a_id, "gnttab")
    _assert_passed(host, b_id, "gnttab")


@pytest.mark.kvm
def test_destroying_a_granter_unmaps_its_page_from_the_mapper(host: Host) -> None:
    a_id = host.hv.allocate_domid()
    b_id = host.hv.allocate_domid()
    a = host.build("gnttab", f"role=giver peer={b_id}", domid=a_id)
    b = host.build("gnttab", f"role=holder peer={a_id}", domid=b_id)
    a.start()
    b.start()
    _wait_line(host, rf"^\(d{b_id}\) gnttab: holding the mapping")
    mapping = map_grant(a, 8, b_id, readonly=True)  # a service acting for b
    a.destroy()
    assert mapping.released
    unmap_grant(mapping)  # harmless once the granter is gone
    assert b.wait(60) == ShutdownReason.poweroff, host.describe()
    _assert_passed(host, b_id, "gnttab")


@pytest.mark.kvm
def test_mapping_over_a_grant_mapping_crashes_the_mapper(host: Host) -> None:
    d = host.build("gnttab", "role=overmap")
    d.start()
    assert host.wait_all([d], timeout=60) == [ShutdownReason.crash], host.describe()
    assert "over the grant mapping" in host.log.getvalue(), host.describe()
    assert "still running" not in host.output(), host.describe()
    assert "pyxen bug" not in host.log.getvalue(), host.describe()
