"""dom0_mem where a user meets it: ``pyxen hypervisor --dom0-mem``, ``pyxen info``
and Domain-0 in ``pyxen list`` (no KVM: a stand-in daemon and a stand-in server)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from control_fakes import FakeDaemon

from pyxen.control import server as control_server
from pyxen.hv.dom0_mem import UINT_MAX, size_dom0

SRC = Path(__file__).resolve().parents[2] / "src"
GiB = 1 << 30


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyxen", "--run-dir", str(tmp_path / "run"),
                           "--log-dir", str(tmp_path / "log"), *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(SRC)}, check=False)


@pytest.mark.parametrize("spec, message", [
    ("10%+1G", "pyxen hypervisor: dom0_mem: '10%+1G': the size comes first; write 1G+10%"),
    ("dom0_mem=100%", "pyxen hypervisor: dom0_mem: '100%': 100% is not below 100%; write 0% "
                      "to 99% (all of avail is -0)"),
    ("-1000T", "pyxen hypervisor: dom0_mem: '-1000T': asks for"),
])
def test_hypervisor_refuses_a_bad_dom0_mem(tmp_path: Path, spec: str, message: str) -> None:
    done = _run(tmp_path, "hypervisor", f"--dom0-mem={spec}")
    assert done.returncode == 2
    assert done.stdout == "" and done.stderr.startswith(message)
    assert done.stderr.count("\n") == 1


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(tmp_path / "run")
    yield daemon
    daemon.close()


INFO = {"host": "h", "release": "r", "machine": "x86_64", "nr_cpus": 4, "tsc_khz": 2_000_000,
        "total_memory_mib": 16384, "free_memory_mib": 8192, "xen_major": 4, "xen_minor": 12,
        "xen_extra": ".0-pyxen", "scheduler": "credit2", "nr_domains": 1, "emulated": 0}


def test_info_reports_dom0_mem(fake: FakeDaemon, tmp_path: Path) -> None:
    fake.results["info"] = {**INFO, "dom0_mem": "1G+10%", "dom0_memory_mib": 2662}
    out = _run(tmp_path, "info").stdout.splitlines()
    assert "xen_commandline        : dom0_mem=1G+10%" in out
    assert "dom0_mem               : 1G+10%" in out
    assert "dom0_memory            : 2662" in out
    assert _run(tmp_path, "info", "dom0_memory").stdout == "dom0_memory            : 2662\n"


def test_info_without_dom0_mem(fake: FakeDaemon, tmp_path: Path) -> None:
    fake.results["info"] = INFO
    out = _run(tmp_path, "info").stdout
    assert "xen_commandline        : \n" in out and "dom0_mem" not in out


def _server(dom0: Any) -> Any:
    manager = SimpleNamespace(dom0=dom0, dom0_is_guest=False, started=0.0, nr_domains=lambda: 0,
                              scheduler=lambda: "credit2", emulated_total=lambda: 0)
    return SimpleNamespace(manager=manager, hv=SimpleNamespace(tsc=SimpleNamespace(hz=10**9)))


def test_domain0_is_the_computed_size() -> None:
    sizing = size_dom0("512M,max:1G", 16 * GiB)
    server = _server(sizing)
    info = control_server._dom0_info(server)
    assert (info["current_memkb"], info["max_memkb"]) == (512 << 10, 1 << 20)
    reply = control_server._info(server, None, {})  # type: ignore[arg-type]
    assert (reply["dom0_mem"], reply["dom0_memory_mib"]) == ("512M,max:1G", 512)
    unlimited = control_server._dom0_info(_server(size_dom0("1G", 16 * GiB)))
    assert unlimited["max_memkb"] == UINT_MAX * 4  # no max: Xen's d->max_pages = UINT_MAX


def test_domain0_without_dom0_mem_is_this_process() -> None:
    server = _server(None)
    info = control_server._dom0_info(server)
    assert info["current_memkb"] == info["max_memkb"] > 0
    assert "dom0_mem" not in control_server._info(server, None, {})  # type: ignore[arg-type]


def test_a_dom0_guest_has_the_size_not_domain0() -> None:
    """pyxen boot with a dom0 kernel in the tree: the guest named dom0 is sized by
    dom0_mem, so Domain-0's row is this process (the size is not listed twice)."""
    server = _server(size_dom0("512M", 16 * GiB))
    server.manager.dom0_is_guest = True
    info = control_server._dom0_info(server)
    assert info["current_memkb"] == info["max_memkb"] != 512 << 10
    reply = control_server._info(server, None, {})  # type: ignore[arg-type]
    assert reply["dom0_mem"] == "512M"
