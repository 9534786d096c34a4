"""What `info`, `vcpu-list`, `top` and `create` report, against a daemon of its
own (started with --sched credit, so a hard-coded scheduler name would show)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import _env
from .daemon_helpers import Daemon, running_daemon
from .daemon_helpers import wait_for as _wait_for


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, guests_built: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("xlinfo"), "--sched", "credit") as d:
        yield d


def host_memory_mib() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20


def _info(daemon: Daemon) -> dict[str, str]:
    rows = (line.split(":", 1) for line in daemon.ok("info").splitlines())
    return {key.strip(): value.strip() for key, value in rows}


@pytest.mark.kvm
def test_info_reports_the_pool_scheduler_and_counts_domain0(daemon: Daemon) -> None:
    info = _info(daemon)
    assert info["xen_scheduler"] == "credit"
    assert info["nr_domains"] == "1"  # Domain-0 alone, as xl counts it
    daemon.ok("create", str(daemon.cfg("counted", "idle", "secs=600")))
    assert _info(daemon)["nr_domains"] == "2"
    daemon.ok("destroy", "counted")


@pytest.mark.kvm
def test_vcpu_list_includes_domain0(daemon: Daemon) -> None:
    ncpus = os.cpu_count() or 1
    for args in ((), ("0",), ("Domain-0",)):
        rows = daemon.ok("vcpu-list", *args).splitlines()[1:]
        dom0 = [r.split() for r in rows if r.split()[0] == "Domain-0"]
        assert [int(r[2]) for r in dom0] == list(range(ncpus)), rows  # vCPU N on host CPU N
        assert [r[3] for r in dom0] == [str(c) for c in range(ncpus)]


@pytest.mark.kvm
def test_memory_beyond_the_hosts_ram_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    too_much = str(host_memory_mib() + 1024)
    cfg = daemon.cfg("huge", "idle", "secs=600")
    r = daemon.pyxen("create", str(cfg), f"memory={too_much}")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.splitlines()[-1].startswith(f"pyxen create: cannot allocate {too_much} MiB")
    assert "huge" not in daemon.names()
    env = _env()  # standalone: no daemon at this run directory
    alone = subprocess.run([sys.executable, "-m", "pyxen", "create", "-F", str(cfg),
                            f"memory={too_much}"], capture_output=True, text=True, env=env,
                           timeout=120, check=False)
    assert alone.returncode == 2, alone.stderr
    assert f"cannot allocate {too_much} MiB" in alone.stderr.splitlines()[-1]


@pytest.mark.kvm
def test_top_shows_a_busy_domains_cpu_in_its_first_table(daemon: Daemon) -> None:
    daemon.ok("create", str(daemon.cfg("busy", "hog", "secs=600 hc=1")))
    try:
        _wait_for(lambda: daemon.names().get("busy", "")[:1] == "r", "the hog to run")
        rows = daemon.ok("top", "-b", "-i", "1", "-d", "1").splitlines()
        busy = next(r.split() for r in rows if r.split()[:1] == ["busy"])
        assert float(busy[3]) > 0.0, rows  # CPU(%): xentop's first table says 0.0
    finally:
        daemon.ok("destroy", "busy")


@pytest.mark.kvm
def test_create_foreground_keeps_a_preserved_domain_until_interrupted(daemon: Daemon) -> None:
    cfg = daemon.cfg("kept", "sched", "action=poweroff", on_poweroff="preserve")
    with subprocess.Popen([sys.executable, "-m", "pyxen", "create", "-F", str(cfg)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=daemon.env) as proc:
        assert proc.stderr is not None
        seen = ""
        while "is preserved" not in seen:
            line = proc.stderr.readline()
            assert line, f"create -F ended with the domain preserved: {seen}"
            seen += line
        assert daemon.names()["kept"][3] == "s"  # shut down, still there
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=60)
    assert status == 0  # the shutdown reason's (poweroff)
    assert "kept" not in daemon.names()
