"""pyxen's own vCPU scheduling under a real daemon: shares, pinning, tunables, traces.

The daemon is given one host CPU (``--cpus``) so that guests compete for it
under the chosen scheduler; CPU time is read from the vCPUs' runstate
(``pyxen list -l``).  Shares are checked with a stated, generous tolerance:
this host is shared and every guest instruction is emulated, so a few
seconds give a rough but real measurement, not a benchmark
(``bench/sched.py`` measures properly).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyxen.control.client import ControlClient
from pyxen.control.protocol import ControlError

from .daemon_helpers import Daemon, running_daemon, wait_for

CPU = sorted(os.sched_getaffinity(0))[0]
SHARE_TOLERANCE = 0.12  # absolute, on shares of one CPU


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, guests_built: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("sched"), "--cpus", str(CPU),
                        "--sched", "credit2") as d:
        yield d


def _cpu_ns(daemon: Daemon, name: str) -> int:
    infos = json.loads(daemon.ok("list", "-l"))
    return next(int(i["cpu_time_ns"]) for i in infos if i["name"] == name)


@pytest.mark.kvm
def test_weights_share_one_cpu(daemon: Daemon) -> None:
    daemon.ok("create", str(daemon.cfg("light", "hog", "secs=60")), "cpu_weight=256")
    daemon.ok("create", str(daemon.cfg("heavy", "hog", "secs=60")), "cpu_weight=768")
    try:
        wait_for(lambda: _cpu_ns(daemon, "light") > 0 and _cpu_ns(daemon, "heavy") > 0,
                 "both hogs to run")
        start = {n: _cpu_ns(daemon, n) for n in ("light", "heavy")}
        # Measure over a window of CPU time rather than of wall time.
        wait_for(lambda: sum(_cpu_ns(daemon, n) - start[n] for n in start) > 3_000_000_000,
                 "3 s of CPU time between the hogs", timeout=120)
        used = {n: _cpu_ns(daemon, n) - start[n] for n in start}
        heavy_share = used["heavy"] / sum(used.values())
        assert abs(heavy_share - 0.75) <= SHARE_TOLERANCE, used
        out = daemon.ok("sched-credit2")
        assert "768" in out and "256" in out
    finally:
        daemon.pyxen("destroy", "light")
        daemon.pyxen("destroy", "heavy")


@pytest.mark.kvm
def test_tunables_pinning_and_trace(daemon: Daemon, tmp_path: Path) -> None:
    daemon.ok("create", str(daemon.cfg("smp", "ipi", "n=100000", vcpus=2)))
    try:
        daemon.ok("sched-credit2", "-d", "smp", "-w", "1024")
        assert "1024" in daemon.ok("sched-credit2", "-d", "smp")
        bad = daemon.pyxen("sched-credit2", "-d", "smp", "-w", "70000")
        assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
        daemon.ok("sched-credit2", "-s", "-r", "2000")
        assert "ratelimit_us=2000" in daemon.ok("sched-credit2", "-s")
        daemon.ok("vcpu-pin", "smp", "all", str(CPU))
        rows = daemon.ok("vcpu-list", "smp").splitlines()[1:]
        assert all(r.split()[3] in (str(CPU), "-") for r in rows), rows
        assert all(r.rstrip().endswith(f"{CPU} / {CPU}") for r in rows), rows  # soft: all
        refused = daemon.pyxen("vcpu-pin", "smp", "0", "4095")
        assert refused.returncode == 1

        daemon.ok("trace", "start")
        wait_for(lambda: _cpu_ns(daemon, "smp") > 0, "smp to run")
        out = tmp_path / "trace.json"
        daemon.ok("trace", "export", "-o", str(out))
        trace = json.loads(out.read_text())
        runs = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
        assert runs and all(e["tid"] == CPU for e in runs)
        csv = tmp_path / "trace.csv"
        daemon.ok("trace", "export", "--format", "csv", "-o", str(csv))
        assert csv.read_text().startswith("time_ns,kind,pcpu,domid,vcpu,data0,data1")
        # The daemon writes no file a client names (it would be root writing
        # anywhere): the CLI above opened its output and sent it.
        named = tmp_path / "named-by-the-client.csv"
        with ControlClient(daemon.socket) as client, pytest.raises(ControlError) as e:
            client.call("trace", action="export", format="csv", path=str(named))
        assert e.value.code == "EINVAL" and not named.exists()
        daemon.ok("trace", "stop")
    finally:
        daemon.pyxen("destroy", "smp")


@pytest.mark.kvm
def test_host_scheduler_is_still_available(tmp_path: Path, guests_built: Path) -> None:
    with running_daemon(tmp_path, "--sched", "host") as d:
        r = d.pyxen("sched-credit2")
        assert r.returncode == 1 and "host kernel" in r.stderr
        assert d.pyxen("create", "-F", str(d.cfg("hello", "hello"))).returncode == 0
    (tmp_path / "bad").mkdir()
    bad = Daemon(tmp_path / "bad").pyxen("hypervisor", "--sched", "fair")
    assert bad.returncode == 2 and "unknown scheduler" in bad.stderr


@pytest.mark.kvm
def test_cpupools(tmp_path: Path, guests_built: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("cpupools need two host CPUs")
    first, second = cpus[0], cpus[1]
    with running_daemon(tmp_path, "--cpus", f"{first},{second}") as d:
        d.ok("create", str(d.cfg("pooled", "ipi", "n=100000", vcpus=2)))
        d.ok("cpupool-cpu-remove", "Pool-0", str(second))
        d.ok("cpupool-create", 'name="p1"', 'sched="credit"', f'cpus="{second}"')
        listing = d.ok("cpupool-list")
        assert "p1" in listing and "credit " in listing
        d.ok("cpupool-migrate", "pooled", "p1")
        wait_for(lambda: any(r.split()[3] == str(second)
                             for r in d.ok("vcpu-list", "pooled").splitlines()[1:]),
                 "a vCPU of the migrated domain to run on the pool's CPU")
        rows = d.ok("vcpu-list", "pooled").splitlines()[1:]
        assert all(r.split()[3] in (str(second), "-") for r in rows), rows
        d.ok("sched-credit", "-d", "pooled", "-w", "512")
        busy = d.pyxen("cpupool-destroy", "p1")
        assert busy.returncode == 1 and "still has domains" in busy.stderr
        d.ok("cpupool-migrate", "pooled", "Pool-0")
        d.ok("cpupool-destroy", "p1")
        d.ok("cpupool-cpu-add", "Pool-0", str(second))
        assert f"{first}-{second}" in d.ok("cpupool-list", "-c") or \
            f"{first},{second}" in d.ok("cpupool-list", "-c")
        assert d.names()["pooled"][3] == "-"  # still running, never shut down
        d.ok("destroy", "pooled")
