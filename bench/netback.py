#!/usr/bin/env python3
"""PV network throughput and packet rate through netback, beside a TAP-to-TAP copy loop.

    python3 bench/netback.py [--quick]

Everything runs in a network namespace this script makes (``ip netns
add``; root needed): a hypervisor daemon, its netback, the bridge and TAP
devices.  For 64-byte and 1500-byte frames it measures, at the receiver:

    guest->guest  guests/tests/netbench mode=send -> mode=recv over the bridge
    host->guest   this process sends raw frames (AF_PACKET on the bridge) ->
                  netbench mode=recv
    tap->tap      the reference, measured in the same run: two TAP devices on
                  a bridge, frames written into one and read from the other by
                  this process (the host's own cost of moving a frame through
                  a bridge, with the same TAP device code netback uses)

Ratios are each path's packet rate over the reference's.  On this nested
KVM every guest instruction is emulated (bench/README.md): only ratios
within one run mean anything.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "src"))

import history  # noqa: E402

from pyxen.services.netback.tap import Tap  # noqa: E402

GUEST = ROOT / "guests" / "build" / "netbench.elf"
ETHERTYPE = 0x88B5
MAGIC = 0x314E424E  # "NBN1"
BRIDGE = "benchbr0"
SEND_MAC, RECV_MAC = "00:16:3e:00:be:01", "00:16:3e:00:be:02"


def frame(dst: str, src: str, seq: int, n: int, size: int) -> bytes:
    head = bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", "")) + \
        ETHERTYPE.to_bytes(2, "big") + struct.pack("<III", MAGIC, seq, n)
    return head + bytes(i & 0xFF for i in range(len(head), size))


def tap_to_tap(n: int, size: int) -> float:
    """Frames per second from one TAP device through a bridge to another."""
    with Tap.create("benchtap0") as a, Tap.create("benchtap1") as b:
        a.attach("benchref0")
        b.attach("benchref0")
        b.txqueuelen = max(n, 1000)
        time.sleep(0.5)  # the bridge learns nothing yet: let its ports settle
        frames = [frame("00:16:3e:00:be:99", "00:16:3e:00:be:98", i, n, size) for i in range(n)]
        got = 0
        t0 = time.perf_counter()
        for f in frames:
            a.write(f)
            while b.read() is not None:
                got += 1
        deadline = time.perf_counter() + 2
        while got < n and time.perf_counter() < deadline:
            select.select([b.fileno()], [], [], 0.1)
            while b.read() is not None:
                got += 1
        return got / (time.perf_counter() - t0)


class Daemon:
    def __init__(self, base: Path) -> None:
        self.env = dict(os.environ, PYXEN_RUN_DIR=str(base / "run"),
                        PYXEN_LOG_DIR=str(base / "log"), PYTHONPATH=str(ROOT / "src"))
        self.base = base
        self.pyxen("hypervisor", "--daemon")

    def pyxen(self, *args: str, timeout: float = 600) -> str:
        r = subprocess.run([sys.executable, "-m", "pyxen", *args], env=self.env, text=True,
                           capture_output=True, timeout=timeout, check=False)
        if r.returncode:
            raise SystemExit(f"pyxen {' '.join(args)}: {r.stdout}{r.stderr}{self.log()}")
        return r.stdout

    def log(self) -> str:
        path = self.base / "log" / "hypervisor.log"
        return path.read_text() if path.exists() else ""

    def cfg(self, name: str, mac: str, extra: str) -> Path:
        path = self.base / f"{name}.cfg"
        path.write_text(f'name = "{name}"\ntype = "pvh"\nkernel = "{GUEST}"\nmemory = 32\n'
                        f'extra = "{extra}"\nvif = [\'bridge={BRIDGE},mac={mac}\']\n')
        return path

    def stop(self) -> None:
        pid = int((self.base / "run" / "hypervisor.pid").read_text())
        os.kill(pid, signal.SIGTERM)


def _bench_line(log: str, kind: str) -> dict[str, int]:
    line = re.findall(rf"BENCH {kind} (.*)", log)[-1]
    return {k: int(v) for k, v in (kv.split("=") for kv in line.split())}


def guest_to_guest(d: Daemon, n: int, size: int) -> dict[str, int]:
    recv = d.cfg("recv", RECV_MAC, f"mode=recv n={n} idle_ms=3000")
    send = d.cfg("send", SEND_MAC, f"mode=send peer={RECV_MAC} n={n} size={size} "
                                   "start_ms=1500")
    receiver = threading.Thread(target=d.pyxen, args=("create", "-F", str(recv)))
    receiver.start()
    d.pyxen("create", "-F", str(send))
    receiver.join()
    return _bench_line(d.log(), "net_recv")


def host_to_guest(d: Daemon, n: int, size: int) -> dict[str, int]:
    recv = d.cfg("hrecv", RECV_MAC, f"mode=recv n={n} idle_ms=3000")
    receiver = threading.Thread(target=d.pyxen, args=("create", "-F", str(recv)))
    receiver.start()
    deadline = time.monotonic() + 120
    while "netbench: " not in d.log().split("created 'hrecv'")[-1] and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # netbench is waiting for its first frame
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((BRIDGE, 0))
    for i in range(n):
        sock.send(frame(RECV_MAC, "00:16:3e:00:be:03", i, n, size))
    sock.close()
    receiver.join()
    return _bench_line(d.log(), "net_recv")


def inside(quick: bool) -> int:
    counts = {64: 1000 if quick else 4000, 1500: 500 if quick else 2000}
    with tempfile.TemporaryDirectory(prefix="pyxen-bench-net-") as tmp:
        d = Daemon(Path(tmp))
        try:
            rows = []
            for size, n in counts.items():
                ref = tap_to_tap(n, size)
                g2g = guest_to_guest(d, n, size)
                h2g = host_to_guest(d, n, size)
                rows.append((size, n, ref, g2g, h2g))
        finally:
            d.stop()
    print("netback: frames per second at the receiver (and Mbit/s), one run")
    print(f"{'size':>6}{'frames':>8}{'tap->tap':>11}{'guest->guest':>14}{'host->guest':>13}"
          f"{'g2g/ref':>10}{'h2g/ref':>10}")
    for size, n, ref, g2g, h2g in rows:
        print(f"{size:>6}{n:>8}{ref:>11.0f}{g2g['pps']:>7} ({g2g['kbit_s'] / 1000:4.1f})"
              f"{h2g['pps']:>6} ({h2g['kbit_s'] / 1000:4.1f}){g2g['pps'] / ref:>10.4f}"
              f"{h2g['pps'] / ref:>10.4f}")
        lost = n - h2g["frames"]
        if lost:
            print(f"        host->guest: {lost} of {n} frames were dropped on the way "
                  "(the host sends faster than the guest takes them)")
    history.record(  # the netns child inherits PYXEN_BENCH_RECORD
        "netback",
        {f"{what} {size}B pps": float(v) for size, _n, ref, g2g, h2g in rows
         for what, v in (("tap->tap", ref), ("guest->guest", g2g["pps"]),
                         ("host->guest", h2g["pps"]))},
        {f"{what} {size}B/tap->tap": float(v) / ref for size, _n, ref, g2g, h2g in rows
         for what, v in (("guest->guest", g2g["pps"]), ("host->guest", h2g["pps"]))},
        unit="frames/s")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not GUEST.exists():
        print("build the guests first: make -C guests", file=sys.stderr)
        return 1
    if args.inside:
        return inside(args.quick)
    name = f"pyxen-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        return subprocess.run(["ip", "netns", "exec", name, sys.executable, __file__,
                               "--inside", *(["--quick"] if args.quick else [])],
                              check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    sys.exit(main())
