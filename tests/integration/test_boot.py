"""``pyxen boot``: whole systems from a device tree, on KVM (needs dtc)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import GUEST_BUILD, REPO, _env

pytestmark = pytest.mark.skipif(shutil.which("dtc") is None,
                                reason="needs dtc (apt-get install device-tree-compiler)")


def _instance(tmp_path: Path) -> dict[str, str]:
    env = _env()
    env["PYXEN_RUN_DIR"] = str(tmp_path / "run")
    env["PYXEN_LOG_DIR"] = str(tmp_path / "log")
    return env


def _domain(name: str, prog: str, bootargs: str = "", extra: str = "") -> str:
    return f'''{name} {{ compatible = "xen,domain"; memory = <0 32768>; cpus = <1>; {extra}
        module@0 {{ compatible = "multiboot,kernel", "multiboot,module";
                    xen,uefi-binary = "{GUEST_BUILD / (prog + '.elf')}";
                    bootargs = "{bootargs}"; }}; }};'''


def _tree(tmp_path: Path, chosen: str) -> Path:
    path = tmp_path / "system.dts"
    path.write_text(f"/dts-v1/;\n/ {{ chosen {{ {chosen} }}; }};\n")
    return path


def _boot(tmp_path: Path, tree: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyxen", "boot", str(tree)], capture_output=True,
                          text=True, env=_instance(tmp_path), timeout=timeout, check=False)


def test_quickstart(tmp_path: Path) -> None:
    proc = _boot(tmp_path, REPO / "examples" / "quickstart.dts")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    for line in ("(d1) ring: d1 is up, between d3 and d2",
                 "(d1) ring: d1 starts the token towards d2",
                 "(d2) ring: d2 got the token (hop 1) from d1, passes it to d3",
                 "(d3) ring: d3 got the token (hop 2) from d2, passes it to d1",
                 "(d1) ring: d1 got the token (hop 3) from d3, passes it to d2",
                 "(d3) ring: d3 got the token (hop 5) from d2, passes it to d1",
                 "(d1) ring: d1 got the token back after 6 hops: done",
                 *(f"(d{i}) RESULT ring: PASS (12 checks)" for i in (1, 2, 3))):
        assert line in out, proc.stdout
    err = proc.stderr.splitlines()
    assert err[-1] == "pyxen boot: all 3 domains powered off"
    for i, name in ((1, "ring1"), (2, "ring2"), (3, "ring3")):
        assert f"(XEN) d{i}: created '{name}'" in err
    assert "(XEN) argo: on, mac-permissive off, XSM policy dummy" in err


def test_a_bad_property_is_one_line(tmp_path: Path) -> None:
    tree = _tree(tmp_path, _domain("a", "hello", extra="memory-kb = <1>;"))
    proc = _boot(tmp_path, tree)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (f"pyxen boot: {tree}: /chosen/a: memory-kb: not a property of Xen's "
                           "xen,domain binding (memory, cpus, xen,enhanced, vpl011)\n")


def test_pv_interfaces_only_where_asked(tmp_path: Path) -> None:
    """xen,enhanced: xenstore and the PV console (shown as (dN) lines); none without it."""
    tree = _tree(tmp_path, 'xen,xen-bootargs = "dom0_mem=32M";'
                 '''k { compatible = "multiboot,kernel", "multiboot,module";
                        xen,uefi-binary = "%s"; };''' % (GUEST_BUILD / "hvmparam.elf")
                 + _domain("pv", "pvconsole", "secs=2", "xen,enhanced;")
                 + _domain("xs", "xenstore", "", 'xen,enhanced = "enabled";')
                 + _domain("plain", "hvmparam"))
    proc = _boot(tmp_path, tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert "(d2) pvconsole: hello from the PV console (0)" in out  # from consoled's log
    assert "(d3) xenstore: name=xs domid=3" in out
    for i, prog in ((1, "hvmparam"), (2, "pvconsole"), (3, "xenstore")):
        assert any(line.startswith(f"(d{i}) RESULT {prog}: PASS") for line in out), proc.stdout
    # hvmparam expects libxl's PV set-up; without xen,enhanced d4 has none (params 0),
    # and nothing else differs.
    assert [line for line in out if line.startswith("(d4) FAIL")] == [
        f"(d4) FAIL - {what}: got 0 want {want}" for what, want in (
            ("STORE_PFN", 1044476), ("CONSOLE_PFN", 1044479), ("STORE_EVTCHN", 1),
            ("CONSOLE_EVTCHN", 2), ("STORE_PFN by own domid", 1044476))]
    assert "(XEN) d1: created 'dom0'" in proc.stderr
    assert "dom0_mem=32M: the control domain has 32 MiB" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "pyxen boot: all 4 domains powered off"
    # No console log for "plain" (no PV console).  dom0 has PV interfaces: its log
    # exists if consoled found it before it powered off, which is a race.
    logs = {p.name for p in (tmp_path / "log" / "console").iterdir()}
    assert {"guest-pv.log", "guest-xs.log"} <= logs <= {"guest-pv.log", "guest-xs.log",
                                                         "guest-dom0.log"}


def test_list_and_destroy_while_it_runs(tmp_path: Path) -> None:
    tree = _tree(tmp_path, _domain("sleeper", "idle", "secs=60")
                 + _domain("helper", "idle", "secs=60", "xen,enhanced;"))
    env = _instance(tmp_path)
    boot = subprocess.Popen([sys.executable, "-m", "pyxen", "boot", str(tree)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def pyxen(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pyxen", *args], capture_output=True,
                              text=True, env=env, timeout=60, check=False)

    try:
        deadline = time.monotonic() + 60
        while True:
            listing = pyxen("list")
            names = [line.split()[0] for line in listing.stdout.splitlines()[1:]]
            if {"sleeper", "helper"} <= set(names):
                break
            assert time.monotonic() < deadline, listing.stdout + listing.stderr
            time.sleep(0.2)
        assert names[0] == "Domain-0"
        assert pyxen("domid", "helper").stdout.strip() == "2"
        assert pyxen("destroy", "sleeper").returncode == 0
        assert pyxen("destroy", "helper").returncode == 0
        out, err = boot.communicate(timeout=60)
    finally:
        if boot.poll() is None:
            boot.kill()
            boot.wait()
    assert boot.returncode == 1, out + err
    assert err.splitlines()[-1] == ("pyxen boot: 0 of 2 domains powered off; sleeper (d1) was "
                                    "destroyed, helper (d2) was destroyed")
    assert not (tmp_path / "run" / "control.sock").exists()


def test_ctrl_c_destroys_everything(tmp_path: Path) -> None:
    tree = _tree(tmp_path, _domain("a", "idle", "secs=60") + _domain("b", "idle", "secs=60"))
    boot = subprocess.Popen([sys.executable, "-m", "pyxen", "boot", str(tree)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_instance(tmp_path))
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "run" / "control.sock").exists():
            assert time.monotonic() < deadline and boot.poll() is None
            time.sleep(0.05)
        time.sleep(0.5)
        boot.send_signal(signal.SIGINT)
        _out, err = boot.communicate(timeout=60)
    finally:
        if boot.poll() is None:
            boot.kill()
            boot.wait()
    assert boot.returncode == 130
    assert err.splitlines()[-1] == "pyxen boot: interrupted: every domain destroyed"
