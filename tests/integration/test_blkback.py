"""PV disks end to end: blkback (a service of the daemon) against the guests' blkfront.

One daemon serves every test of this module (each test names its own
domains and images).  The guests are guests/tests/blktest (patterns through
every request shape, read-only disks), blkhostile (malformed requests and
raw ring slots), blkfill (acknowledged writes while blkback is killed) and
idle (a domain for hot plug).  Images are checked from the host too.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import GUEST_BUILD
from .daemon_helpers import Daemon, running_daemon, wait_for


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("blkback")) as d:
        yield d


def _raw(d: Daemon, name: str, mib: int = 2) -> Path:
    path = d.base / f"{name}.img"
    with path.open("wb") as f:
        f.truncate(mib << 20)
    return path


def _cfg(d: Daemon, name: str, prog: str, disks: list[str], extra: str = "",
         memory: int = 16) -> Path:
    path = d.base / f"{name}.cfg"
    listed = ", ".join(f"'{spec}'" for spec in disks)
    path.write_text(f'name = "{name}"\ntype = "pvh"\nkernel = "{GUEST_BUILD / (prog + ".elf")}"\n'
                    f'memory = {memory}\nextra = "{extra}"\ndisk = [{listed}]\n')
    return path


def _run(d: Daemon, cfg: Path, prog: str) -> str:
    r = d.pyxen("create", "-F", str(cfg), timeout=300)
    log = d.log()
    assert r.returncode == 0, r.stdout + r.stderr + log
    assert f"RESULT {prog}: PASS" in log, log
    return log


def _blkback_pid(d: Daemon) -> int:
    pids = d.service_pids("blkback")
    assert len(pids) == 1, pids
    return pids[0]


def test_blktest_on_a_raw_disk_with_a_multi_page_ring(daemon: Daemon) -> None:
    img = _raw(daemon, "plain")
    log = _run(daemon, _cfg(daemon, "plain", "blktest", [f"format=raw, vdev=xvda, target={img}"],
                            "ring_order=2 reopen=1"), "blktest")
    assert "(4-page ring, x86_64-abi)" in log
    assert img.stat().st_size == 2 << 20  # never grown


def test_several_disks_per_domain(daemon: Daemon) -> None:
    first, second = _raw(daemon, "first"), _raw(daemon, "second")
    log = _run(daemon, _cfg(daemon, "two", "blktest",
                            [f"{first},raw,xvda,rw", f"format=raw, vdev=xvdb, target={second}"],
                            "devid=51728"), "blktest")
    domid = int(re.findall(r"d(\d+): created 'two'", log)[-1])
    assert f"vbd {domid}/51712: connected" not in log  # xvda was offered, never used
    assert f"vbd {domid}/51728: connected" in log
    assert first.read_bytes() == bytes(2 << 20)
    assert second.read_bytes() != bytes(2 << 20)


def test_a_read_only_disk_refuses_writes(daemon: Daemon) -> None:
    img = _raw(daemon, "ro")
    img.write_bytes(bytes(range(256)) * (8 << 12))
    before = img.read_bytes()
    _run(daemon, _cfg(daemon, "ro", "blktest", [f"{img},raw,xvda,ro"], "ro=1"), "blktest")
    assert img.read_bytes() == before


def test_hostile_requests_get_errors_and_the_backend_keeps_serving(daemon: Daemon) -> None:
    img = _raw(daemon, "hostile")
    pid = _blkback_pid(daemon)
    log = _run(daemon, _cfg(daemon, "hostile", "blkhostile",
                            [f"format=raw, vdev=xvda, target={img}"], "ring_order=1 burst=40"),
               "blkhostile")
    assert "request failed" in log  # blkback logged the bad requests ...
    assert "Traceback" not in log
    assert _blkback_pid(daemon) == pid  # ... and never crashed


def test_a_qcow2_disk(daemon: Daemon) -> None:
    if shutil.which("qemu-img") is None or shutil.which("qemu-nbd") is None:
        pytest.skip("qemu-img and qemu-nbd are not installed (apt-get install qemu-utils)")
    img = daemon.base / "q.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "2M"], check=True,
                   timeout=60)
    _run(daemon, _cfg(daemon, "qcow", "blktest", [f"format=qcow2, vdev=xvda, target={img}"]),
         "blktest")
    check = subprocess.run(["qemu-img", "check", str(img)], capture_output=True, text=True,
                           timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def _pattern_ok(img: Path, blocks: int, gen: int) -> int:
    """Sectors of the first ``blocks`` 4 KiB blocks that do not hold blkfill's pattern."""
    data = img.read_bytes()
    bad = 0
    for sector in range(blocks * 8):
        words = struct.unpack_from("<64Q", data, sector * 512)
        if words != tuple(gen << 56 | sector << 8 | w for w in range(64)):
            bad += 1
    return bad


def _in_dmesg(d: Daemon, text: str) -> Callable[[], bool]:
    return lambda: text in d.ok("dmesg")


def test_killing_blkback_mid_io_loses_no_acknowledged_write(daemon: Daemon) -> None:
    img = _raw(daemon, "kill")
    cfg = _cfg(daemon, "kill", "blkfill", [f"format=raw, vdev=xvda, target={img}"],
               "n=256 gen=7")
    daemon.ok("create", str(cfg))
    for cue in (64, 160):
        wait_for(_in_dmesg(daemon, f"blkfill: {cue} written"), f"blkfill at block {cue}",
                 timeout=120)
        os.kill(_blkback_pid(daemon), signal.SIGKILL)
        wait_for(lambda: len(daemon.service_pids("blkback")) == 1, "blkback to restart")
    wait_for(lambda: "kill" not in daemon.names(), "blkfill to finish", timeout=300)
    log = daemon.log()
    assert "RESULT blkfill: PASS" in log, log
    assert log.count("vbd ") and "resumed" in log
    assert _pattern_ok(img, 256, 7) == 0


def test_block_attach_list_and_detach(daemon: Daemon) -> None:
    daemon.ok("create", str(daemon.cfg("hotplug", "idle", "secs=600")))
    img = _raw(daemon, "hot")
    daemon.ok("block-attach", "hotplug", "format=raw,", "vdev=xvdb,", f"target={img}")
    rows = daemon.ok("block-list", "hotplug").splitlines()
    assert rows[0].split() == ["Vdev", "BE", "handle", "state", "evt-ch", "ring-ref", "BE-path"]
    assert rows[1].split()[0] == "51728"
    domid = daemon.ok("domid", "hotplug").strip()
    assert rows[1].split()[-1] == f"/local/domain/0/backend/vbd/{domid}/51728"
    again = daemon.pyxen("block-attach", "hotplug", f"{img},raw,xvdb")
    assert again.returncode == 1 and "already has a disk xvdb" in again.stderr
    missing = daemon.pyxen("block-attach", "hotplug", f"{daemon.base / 'none.img'},raw,xvdc")
    assert missing.returncode == 1 and "cannot open it" in missing.stderr
    daemon.ok("block-detach", "hotplug", "xvdb")
    assert daemon.ok("block-list", "hotplug").splitlines()[1:] == []
    gone = daemon.pyxen("block-detach", "hotplug", "xvdb")
    assert gone.returncode == 1 and "no disk" in gone.stderr
    daemon.ok("destroy", "hotplug")
