"""Boot each test guest of guests/ as a PVH domain and check its verdict.

Each guest prints ``(dN) ...`` lines on pyxen's stdout and ends with exactly
one ``RESULT <prog>: PASS (<n> checks)`` or ``RESULT <prog>: FAIL (...)``
line before it shuts itself down.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

RunGuest = Callable[..., tuple[int, str, str]]

# Exit status of `pyxen create -F` per shutdown reason.
EXIT_STATUS = {
    "poweroff": 0,
    "reboot": 11,
    "suspend": 12,
    "crash": 13,
    "watchdog": 14,
    "soft_reset": 15,
}

RESULT_RE = re.compile(r"^\(d(\d+)\) RESULT (\S+): (PASS|FAIL)\b.*$", re.MULTILINE)


def _describe(status: int, out: str, err: str) -> str:
    return f"exit status {status}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"


def assert_result(prog: str, status: int, out: str, err: str, want_status: int = 0) -> int:
    """Checks the single RESULT line and the exit status; returns the domid."""
    results = [m for m in RESULT_RE.finditer(out) if m.group(2) == prog]
    assert len(results) == 1, f"expected one RESULT line for {prog}\n" + _describe(status, out, err)
    assert results[0].group(3) == "PASS", f"{prog} failed\n" + _describe(status, out, err)
    assert status == want_status, f"{prog}: want exit status {want_status}\n" + _describe(
        status, out, err
    )
    domid = int(results[0].group(1))
    assert domid >= 1
    return domid


@pytest.mark.kvm
@pytest.mark.parametrize("prog", ["hello", "version", "memory", "hvmparam", "hostile"])
def test_guest_passes(run_guest: RunGuest, prog: str) -> None:
    status, out, err = run_guest(prog)
    assert_result(prog, status, out, err)


@pytest.mark.kvm
@pytest.mark.parametrize("prog", ["version", "hostile"])
def test_guest_passes_with_the_pure_python_run_loop(run_guest: RunGuest, prog: str) -> None:
    """PYXEN_PURE_RUN_LOOP=1: every exit decoded in Python, no C fast path
    (pyxen.kvm.vcpu.RUN_ONCE); the guests must not see a difference."""
    status, out, err = run_guest(prog, environ={"PYXEN_PURE_RUN_LOOP": "1"})
    assert_result(prog, status, out, err)


@pytest.mark.kvm
def test_hello_output(run_guest: RunGuest) -> None:
    status, out, err = run_guest("hello")
    domid = assert_result("hello", status, out, err)
    assert f"(d{domid}) Hello from a pyxen PVH guest" in out.splitlines(), _describe(
        status, out, err
    )
    assert "hello via port e9" in out, _describe(status, out, err)


@pytest.mark.kvm
def test_console(run_guest: RunGuest) -> None:
    status, out, err = run_guest("console")
    domid = assert_result("console", status, out, err)
    lines = out.splitlines()
    prefix = f"(d{domid}) "
    # Non-printable characters are stripped from domU console output.
    assert f"{prefix}ctl:end" in lines, _describe(status, out, err)
    for n in range(1, 6):
        assert any(line.startswith(f"{prefix}console line {n}:") for line in lines), _describe(
            status, out, err
        )
    assert any(line.endswith("e9 works") for line in lines), _describe(status, out, err)
    guest_lines = [line for line in lines if line.startswith("(d")]
    assert all(line.startswith(prefix) for line in guest_lines), _describe(status, out, err)


@pytest.mark.kvm
@pytest.mark.parametrize("action", list(EXIT_STATUS))
def test_sched_shutdown_reason(run_guest: RunGuest, action: str) -> None:
    # xl's default for on_reboot is "restart": make it end the run instead.
    status, out, err = run_guest("sched", cmdline=f"action={action}", on_reboot="destroy")
    assert_result("sched", status, out, err, want_status=EXIT_STATUS[action])


@pytest.mark.kvm
@pytest.mark.parametrize(
    ("action", "want"),
    [("code", EXIT_STATUS["crash"]), ("triple", EXIT_STATUS["crash"]), ("halt", 0),
     ("watchdog_timer", EXIT_STATUS["watchdog"])],
)
def test_sched_other_endings(run_guest: RunGuest, action: str, want: int) -> None:
    status, out, err = run_guest("sched", cmdline=f"action={action}")
    assert_result("sched", status, out, err, want_status=want)


@pytest.mark.kvm
def test_hostile_then_hello(run_guest: RunGuest) -> None:
    """A hostile guest leaves the hypervisor able to run the next domain."""
    status, out, err = run_guest("hostile")
    assert_result("hostile", status, out, err)
    status, out, err = run_guest("hello")
    assert_result("hello", status, out, err)


@pytest.mark.kvm
def test_bench_reports(run_guest: RunGuest) -> None:
    status, out, err = run_guest("bench", cmdline="n=200")
    assert_result("bench", status, out, err)
    m = re.search(
        r"BENCH null_hypercall cycles_per_call=(\d+) baseline_cycles=(\d+) "
        r"tsc_khz=(\d+) n=(\d+)",
        out,
    )
    assert m is not None, _describe(status, out, err)
    assert int(m.group(4)) == 200
