"""PV networking end to end: netback (a service of the daemon) against the guests' netfront.

The daemon, its services and every command run in a network namespace the
module makes (``ip netns add``), so the TAP devices and bridges netback
creates, and the host's ping, never touch the machine's own network.  The
guests are guests/tests/netpair (two guests exchange checksummed frames),
netpong (ARP and ICMP echo for the host's ping), nethostile (malformed TX
packets) and idle (a domain for hot plug).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import GUEST_BUILD
from .daemon_helpers import Daemon, running_daemon, wait_for

BRIDGE = "pyxenbr0"


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2's ip is not installed (apt-get install iproute2)")
    name = f"pyxen-test-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                       check=False)
    if r.returncode:
        pytest.skip(f"cannot make a network namespace: {r.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="module")
def daemon(netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("netback"),
                        prefix=("ip", "netns", "exec", netns)) as d:
        yield d


def _in_ns(d: Daemon, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*d.prefix, *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _cfg(d: Daemon, name: str, prog: str, extra: str, vifs: list[str], memory: int = 32
         ) -> Path:
    path = d.base / f"{name}.cfg"
    listed = ", ".join(f"'{spec}'" for spec in vifs)
    path.write_text(f'name = "{name}"\ntype = "pvh"\nkernel = "{GUEST_BUILD / (prog + ".elf")}"\n'
                    f'memory = {memory}\nextra = "{extra}"\nvif = [{listed}]\n')
    return path


def _pair(d: Daemon, n: int, tag: str, extra: str = "", size: int = 100
          ) -> tuple[Path, Path]:
    mac_a, mac_b = f"00:16:3e:00:{tag}:0a", f"00:16:3e:00:{tag}:0b"
    return (_cfg(d, f"pair{tag}a", "netpair", f"role=a peer={mac_b} n={n} size={size} {extra}",
                 [f"bridge={BRIDGE},mac={mac_a}"]),
            _cfg(d, f"pair{tag}b", "netpair", f"role=b peer={mac_a} n={n} size={size} {extra}",
                 [f"bridge={BRIDGE},mac={mac_b}"]))


def _run_both(d: Daemon, cfgs: tuple[Path, Path], during: object = None) -> None:
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(cfg: Path) -> None:
        results[cfg.stem] = d.pyxen("create", "-F", str(cfg), timeout=600)

    threads = [threading.Thread(target=run, args=(cfg,)) for cfg in cfgs]
    for t in threads:
        t.start()
    if callable(during):
        during()
    for t in threads:
        t.join()
    log = d.log()
    for name, r in results.items():
        assert r.returncode == 0, f"{name}: {r.stdout}{r.stderr}{log}"
    assert log.count("RESULT netpair: PASS") >= 2, log


def test_two_guests_exchange_10000_checksummed_frames(daemon: Daemon) -> None:
    _run_both(daemon, _pair(daemon, 10000, "01"))
    line = [x for x in daemon.log().splitlines() if "netpair: role=a n=10000" in x][-1]
    assert " sent=10000 got=10000 dup=0 bad=0 " in line


def test_several_queues_split_event_channels_and_multi_slot_frames(daemon: Daemon) -> None:
    """Two queues each with TX and RX event channels of their own, and 6000-byte
    frames: two TX slots and two RX slots each (feature-sg), through a 9000-byte
    MTU bridge."""
    _in_ns(daemon, "ip", "link", "add", "jumbo0", "type", "bridge")
    _in_ns(daemon, "ip", "link", "set", "jumbo0", "mtu", "9000", "up")
    a, b = _pair(daemon, 300, "03", "queues=2 split=1", size=6000)
    for cfg in (a, b):
        cfg.write_text(cfg.read_text().replace(f"bridge={BRIDGE},", "bridge=jumbo0,mtu=9000,"))
    _run_both(daemon, (a, b))
    log = daemon.log()
    assert log.count("connected (2 queues, split event channels") >= 2
    line = [x for x in log.splitlines() if "netpair: role=a n=300 size=6000" in x][-1]
    assert " sent=300 got=300 dup=0 bad=0 " in line


def test_the_host_pings_a_guest(daemon: Daemon) -> None:
    cfg = _cfg(daemon, "pong", "netpong", "ip=10.77.0.2 count=3",
               [f"bridge={BRIDGE}"])
    daemon.ok("create", str(cfg))
    wait_for(lambda: f"vif{daemon.ok('domid', 'pong').strip()}.0" in
             _in_ns(daemon, "ip", "-br", "link").stdout, "the vif's TAP device")
    _in_ns(daemon, "ip", "addr", "add", "10.77.0.1/24", "dev", BRIDGE)
    _in_ns(daemon, "ip", "link", "set", BRIDGE, "up")
    wait_for(lambda: "netpong: listening" in daemon.ok("dmesg"), "netpong to listen")
    ping = _in_ns(daemon, "ping", "-c", "3", "-W", "10", "10.77.0.2", timeout=120)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "3 received" in ping.stdout
    wait_for(lambda: "pong" not in daemon.names(), "netpong to finish after 3 replies")
    assert "RESULT netpong: PASS" in daemon.log()


def test_malformed_tx_packets_get_errors_or_a_disconnect(daemon: Daemon) -> None:
    other = _cfg(daemon, "bystander", "idle", "secs=600", [f"bridge={BRIDGE}"])
    daemon.ok("create", str(other))
    pid = daemon.service_pids("netback")
    cfg = _cfg(daemon, "hostile", "nethostile",
               "expect_error=badgref,hugegref,foreign,size0,runt,slots "
               "expect_fatal=short,huge,offset,extra", [f"bridge={BRIDGE}"])
    r = daemon.pyxen("create", "-F", str(cfg), timeout=300)
    log = daemon.log()
    assert r.returncode == 0 and "RESULT nethostile: PASS" in log, r.stderr + log
    assert "the frontend broke the TX protocol" in log and "Traceback" not in log
    assert daemon.service_pids("netback") == pid  # never crashed
    domid = daemon.ok("domid", "bystander").strip()
    rows = daemon.ok("network-list", "bystander").splitlines()[1:]
    assert rows and rows[0].split()[-1] == f"/local/domain/0/backend/vif/{domid}/0"
    daemon.ok("destroy", "bystander")


def test_a_killed_netback_is_restarted_and_the_guests_go_on(daemon: Daemon) -> None:
    up = "is up (its first frame"
    before = daemon.ok("dmesg").count(up)

    def kill_midway() -> None:
        wait_for(lambda: daemon.ok("dmesg").count(up) >= before + 2, "both guests up",
                 timeout=120)
        os.kill(daemon.service_pids("netback")[0], signal.SIGKILL)

    _run_both(daemon, _pair(daemon, 3000, "02"), during=kill_midway)
    assert "netback exited with status -9: restarting it" in daemon.log()
    assert "resumed" in daemon.log()


def test_network_attach_list_detach_and_counters(daemon: Daemon) -> None:
    daemon.ok("create", str(daemon.cfg("plug", "idle", "secs=600")))
    domid = daemon.ok("domid", "plug").strip()

    def links() -> str:
        return _in_ns(daemon, "ip", "-br", "link").stdout

    daemon.ok("network-attach", "plug", "mac=00:16:3e:0c:0d:0e")
    daemon.ok("network-attach", "plug", "bridge=br-test,", "vifname=plugvif")
    assert re.search(rf"^vif{domid}\.0\s", links(), re.M)
    assert re.search(r"^plugvif\s", links(), re.M) and re.search(r"^br-test\s", links(), re.M)
    rows = daemon.ok("network-list", "plug").splitlines()
    assert rows[0].split()[:3] == ["Idx", "BE", "Mac"]
    assert rows[1].split()[:3] == ["0", "0", "00:16:3e:0c:0d:0e"]
    assert rows[2].split()[0] == "1"
    bad = daemon.pyxen("network-attach", "plug", "mac=01:00:5e:00:00:01")
    assert bad.returncode == 2 and "multicast" in bad.stderr
    listing = daemon.ok("list", "-l", "plug")
    assert '"nets": 1' in listing, listing + links() + daemon.log()  # xentop: vifD.N only
    daemon.ok("network-detach", "plug", "00:16:3e:0c:0d:0e")
    daemon.ok("network-detach", "plug", "1")
    assert daemon.ok("network-list", "plug").splitlines()[1:] == []
    assert "plugvif" not in links() and f"vif{domid}." not in links()
    daemon.ok("destroy", "plug")
