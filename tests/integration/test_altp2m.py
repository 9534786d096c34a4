"""HVMOP_altp2m from a real guest (guests/tests/altp2m.c), in each HVM_PARAM_ALTP2M mode.

The guest is told the mode on its command line (``mode=<0-3>``), checks that
HVM_PARAM_ALTP2M says the same, and makes the calls a guest may (or may not)
make in that mode, expecting Xen 4.12's answers.  In mode 1 (mixed) it
drives the whole interface itself: views, a remapped page it reads and
writes through, access rights, suppress #VE bits and the errors.  In modes 2
and 3 a tool (pyxen.vmi) may turn altp2m on first (``active=1``), so that
the mode, not the inactive state, is what refuses the guest.

The guest prints "XFAIL" lines where pyxen is known to answer differently
from Xen 4.12; they are not checks and do not change the RESULT.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyxen.abi.xen import ShutdownReason
from pyxen.hv.domain import Domain
from pyxen.vmi import Vmi

from .domains import GUEST_BUILD, Host

ELF = GUEST_BUILD / "altp2m.elf"
TIMEOUT = 60


@pytest.fixture
def host() -> Iterator[Host]:
    if not ELF.exists():
        pytest.skip("guests/build/altp2m.elf not built (make -C guests)")
    h = Host()
    yield h
    h.close()


def _passed(host: Host, d: Domain) -> str:
    """Wait for the guest; check its RESULT and the hypervisor log; its output lines."""
    assert d.wait(TIMEOUT) == ShutdownReason.poweroff, host.describe()
    assert host.result(d.domid, "altp2m") == "PASS", host.describe()
    assert "pyxen bug" not in host.log.getvalue(), host.describe()
    prefix = f"(d{d.domid}) "
    lines = [ln[len(prefix):] for ln in host.output().splitlines() if ln.startswith(prefix)]
    assert "ok - HVM_PARAM_ALTP2M is the mode= of the command line" in lines, host.describe()
    return "\n".join(lines)


@pytest.mark.kvm
@pytest.mark.parametrize("mode", [0, 1, 2, 3], ids=["disabled", "mixed", "external", "limited"])
def test_guest_altp2m(host: Host, mode: int) -> None:
    d = host.build("altp2m", f"mode={mode}", altp2m=mode)
    d.start()
    out = _passed(host, d)
    if mode == 1:
        # The views changed what the guest read and wrote.
        for line in ("ok - view 1: A shows B's frame",
                     "ok - view 0: the store made through A in view 1 is in B",
                     "ok - view 0: A shows A (the store did not reach A)",
                     "ok - altp2m off: A shows A"):
            assert line in out, host.describe()


@pytest.mark.kvm
@pytest.mark.parametrize("mode", [2, 3], ids=["external", "limited"])
def test_guest_altp2m_after_a_tool_turned_it_on(host: Host, mode: int) -> None:
    d = host.build("altp2m", f"mode={mode} active=1", altp2m=mode)
    with Vmi(d) as vmi:
        vmi.altp2m_set_state(True)
        assert vmi.altp2m_create_view() == 1
        d.start()
        out = _passed(host, d)
    name = "external" if mode == 2 else "limited"
    assert f"ok - {name}, active: create_p2m -> -EPERM" in out, host.describe()
    # The guest's calls changed nothing the tool set up.
    assert d.altp2m.active
    assert d.altp2m.views[1] is not None
