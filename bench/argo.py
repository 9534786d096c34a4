#!/usr/bin/env python3
"""Argo throughput and latency, beside memcpy measured in the same run.

    python3 bench/argo.py [--quick] [--sizes 64,4096,65536,1048576]

Starts a hypervisor daemon (``--argo=1,mac-permissive=1``) in a temporary
run directory and measures one-way streams of ``count`` messages of each size:

    host->host    one process sends to another's domain 0 ring (pyxen.argo:
                  a control request per send; the receiver reads the shared
                  ring, copies each payload into a bytes object, and sends one
                  notify per batch)
    guest->guest  guests/tests/argobench.c role=send -> role=recv (the
                  receiver reads headers only, as argobench does)
    host->guest   a pyxen.argo process -> argobench role=recv
    guest->host   argobench role=send -> a pyxen.argo receiver

Throughput is the receiver's: (count - 1) x size over the time from its
first message to its last.  The references, measured in this run on the
same sizes: a Python memoryview copy between two shared mmaps and
``ctypes.memmove`` (what the hypervisor's copy into a ring is), each ratio
being Argo's rate over memmove's.  The "sendv path" column is the
hypervisor's own part alone: ``Argo.sendv`` called in this process into a
warm ring whose reader keeps up (no exit, guest or control request).
Round trips of 64-byte messages (host<->host, guest<->guest,
host<->guest) are printed beside a Python ping-pong over a Unix socketpair
between two processes (the least a Python IPC round trip costs) and the raw
KVM exit of bench/hypercall.py's C reference program.  On this
nested KVM every guest instruction is emulated (bench/README.md): guest
rows are dominated by that, and only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "src"))

from pyxen import argo  # noqa: E402
from pyxen.control.client import ControlClient  # noqa: E402

GUEST = ROOT / "guests" / "build" / "argobench.elf"
RECV_APORT, SEND_APORT = 6000, 6001  # argobench's
RING_LEN = 4 << 20  # every ring: room for a 1 MiB message and more
COUNTS = {64: 4000, 4096: 2000, 65536: 400, 1 << 20: 40}


class BenchError(Exception):
    pass


# -- the helper processes (this script with --role) ------------------------------------------


def role_recv(a: argparse.Namespace) -> None:
    with argo.Socket(a.port, a.partner, RING_LEN) as sock:
        print("ready", flush=True)
        first = last = 0
        for i in range(a.count):
            msg = sock.recv(timeout=120)
            last = time.monotonic_ns()
            if i == 0:
                first = last
            if len(msg.data) != a.size:
                raise BenchError(f"message {i}: {len(msg.data)} bytes, not {a.size}")
    print(f"first_ns={first} last_ns={last}", flush=True)


def role_send(a: argparse.Namespace) -> None:
    data = bytes(a.size)
    with argo.Socket(None) as sock:
        print("ready", flush=True)
        for i in range(a.count):
            sock.send(data, (a.dst, a.port), i, timeout=120, from_port=SEND_APORT)


def role_echo(a: argparse.Namespace) -> None:
    with argo.Socket(a.port, a.partner, RING_LEN) as sock:
        print("ready", flush=True)
        for _ in range(a.count):
            msg = sock.recv(timeout=120)
            sock.send(msg.data, (msg.domid, msg.aport), msg.message_type, timeout=120)


def role_ping(a: argparse.Namespace) -> None:
    data = bytes(a.size)
    rtts = []
    with argo.Socket(SEND_APORT, a.partner, RING_LEN) as sock:
        for i in range(a.count):
            t0 = time.perf_counter_ns()
            sock.send(data, (a.dst, a.port), i, timeout=120)
            msg = sock.recv(timeout=120)
            rtts.append(time.perf_counter_ns() - t0)
            if msg.message_type != i:
                raise BenchError(f"round trip {i}: the echo of {msg.message_type}")
    rtts.sort()
    print(f"median_ns={rtts[len(rtts) // 2]} p99_ns={rtts[len(rtts) * 99 // 100]}", flush=True)


def role_pong(a: argparse.Namespace) -> None:
    sock = socket.socket(fileno=a.fd)
    while data := sock.recv(65536):
        sock.sendall(data)


# -- references ------------------------------------------------------------------------------


def memcpy_rates(size: int) -> tuple[float, float]:
    """Bytes/s of a memoryview copy and of ctypes.memmove between two shared mmaps."""
    src = mmap.mmap(-1, max(size, mmap.PAGESIZE))
    dst = mmap.mmap(-1, max(size, mmap.PAGESIZE))
    src[:size] = os.urandom(size)
    s_anchor = ctypes.c_char.from_buffer(src)
    d_anchor = ctypes.c_char.from_buffer(dst)
    s_addr, d_addr = ctypes.addressof(s_anchor), ctypes.addressof(d_anchor)
    sv, dv = memoryview(src), memoryview(dst)
    n = max(10, (64 << 20) // size)

    def best(copy: Any) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                copy()
            times.append(time.perf_counter() - t0)
        return n * size / min(times)

    view = best(lambda: dv.__setitem__(slice(0, size), sv[:size]))
    move = best(lambda: ctypes.memmove(d_addr, s_addr, size))
    sv.release()
    dv.release()
    del s_anchor, d_anchor
    src.close()
    dst.close()
    return view, move


def sendv_rate(size: int) -> float:
    """Bytes/s of the hypervisor's own sendv path (hv/argo/core.py: checks, ring
    lookup, header, copy, tx_ptr) into a warm 4 MiB ring whose reader keeps up:
    what pyxen adds to a memmove, without exits, guests or control requests."""
    from pyxen.hv.argo import ring as R
    from pyxen.hv.argo.config import ArgoConfig
    from pyxen.hv.argo.core import Argo

    hv_argo = Argo(ArgoConfig(enabled=True), lambda line: None, lambda domid: True)
    for domid in (1, 2):
        hv_argo.attach(domid, "system_u:system_r:domU_t", lambda: None)
    length = RING_LEN
    ring = mmap.mmap(-1, R.npages(length) * mmap.PAGESIZE)
    ring[:] = b"\1" * len(ring)  # resident, as a guest's ring is once used
    ring[:8] = bytes(8)
    src = mmap.mmap(-1, max(size, mmap.PAGESIZE))
    src[:size] = os.urandom(size)
    anchors = [ctypes.c_char.from_buffer(ring), ctypes.c_char.from_buffer(src)]
    base, s_addr = (ctypes.addressof(a) for a in anchors)
    pages = [base + i * mmap.PAGESIZE for i in range(R.npages(length))]
    hv_argo.register(2, 5, 1, 0, length, len(pages), False, lambda: (pages, lambda: None))
    header = ctypes.c_uint32.from_address(base)  # rx_ptr; tx_ptr follows
    tx = ctypes.c_uint32.from_address(base + 4)
    spans = [(s_addr, size)]
    n = max(10, min(20000, (64 << 20) // size))

    def send() -> None:
        header.value = tx.value  # the reader has consumed everything
        hv_argo.sendv(1, 7, 1, 0, 5, 2, 0, [size], [0], 0, lambda i: spans)

    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            send()
        times.append(time.perf_counter() - t0)
    hv_argo.unregister(2, 5, 1, 0)
    del anchors
    return n * size / min(times)


def raw_exit_ns() -> float:
    """ns of one port-I/O exit with synced registers, from bench/hypercall.py's C
    reference program (a KVM_RUN round trip: the least any hypercall costs)."""
    sys.path.insert(0, str(BENCH))
    import hypercall  # bench/hypercall.py

    hypercall.build()
    return statistics.median(hypercall.run_c("syncregs", 20000, 2000)["ns"] for _ in range(3))


def socketpair_rtt(count: int) -> int:
    """Median ns of a 64-byte ping-pong with another Python process over a socketpair."""
    mine, theirs = socket.socketpair()
    child = subprocess.Popen([sys.executable, __file__, "--role", "pong", "--fd",
                              str(theirs.fileno())], pass_fds=[theirs.fileno()])
    theirs.close()
    data = bytes(64)
    rtts = []
    for _ in range(count):
        t0 = time.perf_counter_ns()
        mine.sendall(data)
        got = b""
        while len(got) < 64:
            got += mine.recv(64 - len(got))
        rtts.append(time.perf_counter_ns() - t0)
    mine.close()
    child.wait(30)
    return int(statistics.median(rtts))


# -- the daemon and the measurements -------------------------------------------------------------


class Daemon:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"),
                                                  self.env.get("PYTHONPATH", "")])
        self.env["PYXEN_RUN_DIR"] = str(base / "run")
        self.env["PYXEN_LOG_DIR"] = str(base / "log")
        os.environ.update({k: self.env[k] for k in ("PYXEN_RUN_DIR", "PYXEN_LOG_DIR")})
        r = subprocess.run([sys.executable, "-m", "pyxen", "hypervisor", "--daemon",
                            "--argo=1,mac-permissive=1"], env=self.env, capture_output=True,
                           text=True, timeout=60, check=False)
        if r.returncode:
            raise BenchError(f"the daemon did not start:\n{r.stdout}{r.stderr}")
        self.client = ControlClient(base / "run" / "control.sock")
        self.next_domid = 400
        self.guests: list[int] = []

    def log(self) -> str:
        path = self.base / "log" / "hypervisor.log"
        return path.read_text() if path.exists() else ""

    def guest(self, cmdline: str, domid: int | None = None, paused: bool = False) -> int:
        if domid is None:
            domid = self.allocate()
        self.client.call("create", paused=paused, config={
            "name": f"argobench-{domid}", "kernel": str(GUEST), "cmdline": cmdline,
            "memory_mib": 48, "domid": domid, "on_poweroff": "preserve"})
        # Preserved until the run's results are in: a unicast ring dies with its
        # partner (Xen's teardown rule), and argobench's receiver unregisters its
        # ring after the sender has finished.
        self.guests.append(domid)
        return domid

    def destroy_guests(self) -> None:
        for domid in self.guests:
            self.client.call("destroy", domid=domid)
        self.guests.clear()

    def allocate(self) -> int:
        self.next_domid += 1
        return self.next_domid

    def wait_guest(self, domid: int, pattern: str, timeout: float = 600) -> dict[str, str]:
        """The key=value pairs of domain ``domid``'s line matching ``pattern``, once its
        RESULT is out (which must be PASS)."""
        deadline = time.monotonic() + timeout
        while f"(d{domid}) RESULT" not in self.log():
            if time.monotonic() > deadline:
                raise BenchError(f"d{domid} gave no result:\n{self.tail(domid)}")
            time.sleep(0.1)
        if f"(d{domid}) RESULT argobench: PASS" not in self.log():
            raise BenchError(f"d{domid} failed:\n{self.tail(domid)}")
        for line in self.log().splitlines():
            if line.startswith(f"(d{domid}) ") and re.search(pattern, line):
                return dict(t.split("=", 1) for t in line.split() if "=" in t)
        raise BenchError(f"d{domid} printed no '{pattern}' line:\n{self.tail(domid)}")

    def tail(self, domid: int) -> str:
        return "\n".join(x for x in self.log().splitlines() if x.startswith(f"(d{domid})"))

    def helper(self, role: str, **args: Any) -> subprocess.Popen[str]:
        argv = [sys.executable, __file__, "--role", role]
        for key, value in args.items():
            argv += [f"--{key}", str(value)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=self.env)
        return proc

    @staticmethod
    def ready(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            proc.wait(10)
            raise BenchError(f"a helper ({proc.args}) did not start")

    @staticmethod
    def result(proc: subprocess.Popen[str], timeout: float = 600) -> dict[str, str]:
        out, _ = proc.communicate(timeout=timeout)
        if proc.returncode:
            raise BenchError(f"a helper ({proc.args}) failed with status {proc.returncode}")
        return dict(t.split("=", 1) for t in out.split() if "=" in t)

    def close(self) -> None:
        self.client.close()
        pid = int((self.base / "run" / "hypervisor.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def rate(size: int, count: int, first_ns: str, last_ns: str) -> float:
    span = int(last_ns) - int(first_ns)
    return (count - 1) * size / span * 1e9 if span > 0 else float("nan")


def host_to_host(d: Daemon, size: int, count: int) -> float:
    rx = d.helper("recv", port=RECV_APORT, partner=argo.ANY, size=size, count=count)
    d.ready(rx)
    tx = d.helper("send", dst=0, port=RECV_APORT, size=size, count=count)
    r = d.result(rx)
    d.result(tx)
    return rate(size, count, r["first_ns"], r["last_ns"])


def guest_to_guest(d: Daemon, size: int, count: int) -> float:
    recv_id, send_id = d.allocate(), d.allocate()
    common = f"size={size} count={count} ringlen={RING_LEN}"
    d.guest(f"role=recv peer={send_id} {common}", recv_id)
    d.guest(f"role=send peer={recv_id} {common}", send_id)
    r = d.wait_guest(recv_id, "first_ns=")
    d.wait_guest(send_id, "start_ns=")
    return rate(size, count, r["first_ns"], r["last_ns"])


def host_to_guest(d: Daemon, size: int, count: int) -> float:
    recv_id = d.guest(f"role=recv peer=0 size={size} count={count} ringlen={RING_LEN}")
    _wait_ring(recv_id)
    tx = d.helper("send", dst=recv_id, port=RECV_APORT, size=size, count=count)
    d.ready(tx)
    r = d.wait_guest(recv_id, "first_ns=")
    d.result(tx)
    return rate(size, count, r["first_ns"], r["last_ns"])



def guest_to_host(d: Daemon, size: int, count: int) -> float:
    send_id = d.guest(f"role=send peer=0 size={size} count={count} ringlen={RING_LEN}",
                      paused=True)
    rx = d.helper("recv", port=RECV_APORT, partner=send_id, size=size, count=count)
    d.ready(rx)  # a unicast ring: its partner must exist first
    d.client.call("unpause", domid=send_id)
    r = d.result(rx)
    d.wait_guest(send_id, "start_ns=")
    return rate(size, count, r["first_ns"], r["last_ns"])


def rtt_host_host(d: Daemon, count: int) -> int:
    echo = d.helper("echo", port=RECV_APORT, partner=argo.ANY, count=count)
    d.ready(echo)
    ping = d.helper("ping", dst=0, port=RECV_APORT, partner=argo.ANY, size=64, count=count)
    r = d.result(ping)
    d.result(echo)
    return int(r["median_ns"])


def rtt_guest_guest(d: Daemon, count: int) -> int:
    recv_id, send_id = d.allocate(), d.allocate()
    d.guest(f"role=recv mode=rtt peer={send_id} size=64 count={count}", recv_id)
    d.guest(f"role=send mode=rtt peer={recv_id} size=64 count={count}", send_id)
    r = d.wait_guest(send_id, "median_ns=")
    return int(r["median_ns"])


def rtt_host_guest(d: Daemon, count: int) -> int:
    recv_id = d.guest(f"role=recv mode=rtt peer=0 size=64 count={count}")
    _wait_ring(recv_id)
    ping = d.helper("ping", dst=recv_id, port=RECV_APORT, partner=recv_id, size=64, count=count)
    r = d.result(ping)
    d.wait_guest(recv_id, "RESULT")
    return int(r["median_ns"])


def _wait_ring(domid: int, timeout: float = 120) -> None:
    """Until domain ``domid``'s argobench ring takes domain 0's messages."""
    deadline = time.monotonic() + timeout
    with argo.Socket(None) as sock:
        while not sock.query((domid, RECV_APORT)).flags & argo.ArgoRingFlags.EXISTS:
            if time.monotonic() > deadline:
                raise BenchError(f"d{domid}'s ring did not appear")
            time.sleep(0.05)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tenth of the messages")
    p.add_argument("--sizes", default="64,4096,65536,1048576")
    p.add_argument("--rtt", type=int, default=500, help="round trips per latency row")
    p.add_argument("--role", help=argparse.SUPPRESS)
    for name in ("port", "partner", "size", "count", "dst", "fd"):
        p.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.role:
        roles = {"recv": role_recv, "send": role_send, "echo": role_echo, "ping": role_ping,
                 "pong": role_pong}
        roles[a.role](a)
        return 0
    if not GUEST.exists():
        subprocess.run(["make", "-C", str(ROOT / "guests"), f"-j{os.cpu_count() or 1}"],
                       check=True, capture_output=True)
    sizes = [int(s) for s in a.sizes.split(",")]
    scale = 10 if a.quick else 1
    rtt_n = max(20, a.rtt // scale)
    # A SIGTERM (a killed benchmark) unwinds like Ctrl-C, so the daemon goes too.
    signal.signal(signal.SIGTERM, lambda signo, frame: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="pyxen-bench-argo-"))
    rows: dict[int, dict[str, float]] = {}
    d = Daemon(base)
    try:
        for size in sizes:
            count = max(10, COUNTS.get(size, 1000) // scale)
            print(f"size {size}: memcpy ...", file=sys.stderr, flush=True)
            view, move = memcpy_rates(size)
            row = {"memoryview": view, "memmove": move, "sendv path": sendv_rate(size)}
            for label, fn in (("host->host", host_to_host), ("guest->guest", guest_to_guest),
                              ("host->guest", host_to_guest), ("guest->host", guest_to_host)):
                if label != "host->host" and not GUEST.exists():
                    continue
                print(f"size {size}: {label} x {count} ...", file=sys.stderr, flush=True)
                row[label] = fn(d, size, count)
                d.destroy_guests()
            rows[size] = row
        print("round trips ...", file=sys.stderr, flush=True)
        raw_exit = raw_exit_ns()
        rtts = {"python socketpair (reference)": socketpair_rtt(rtt_n),
                "host<->host": rtt_host_host(d, rtt_n)}
        if GUEST.exists():
            rtts["guest<->guest"] = rtt_guest_guest(d, rtt_n)
            rtts["host<->guest"] = rtt_host_guest(d, rtt_n)
            d.destroy_guests()
    except BenchError as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    finally:
        d.close()
        shutil.rmtree(base, ignore_errors=True)  # the daemon's run and log directories
    print()
    print("pyxen Argo benchmark (one run; MB/s = 10^6 bytes/s; ratio = Argo / memmove)")
    cols = ["memoryview", "memmove", "sendv path", "host->host", "guest->guest",
            "host->guest", "guest->host"]
    print(f"{'size':>8} " + " ".join(f"{c:>13}" for c in cols))
    for size, row in rows.items():
        cells = [f"{row[c] / 1e6:13.1f}" if c in row else f"{'-':>13}" for c in cols]
        print(f"{size:>8} " + " ".join(cells))
    print(f"{'ratio':>8} " + " ".join(f"{'':>13}" for _ in range(2)))
    for size, row in rows.items():
        cells = [f"{row[c] / row['memmove']:13.5f}" if c in row else f"{'-':>13}"
                 for c in cols[2:]]
        print(f"{size:>8} " + " " * 28 + " ".join(cells))
    print()
    print(f"64-byte round trips, median of {rtt_n}:")
    ref = rtts["python socketpair (reference)"]
    print(f"  {'raw KVM exit, C (reference)':<32}{raw_exit / 1000:10.1f} us")
    for label, ns in rtts.items():
        print(f"  {label:<32}{ns / 1000:10.1f} us  x{ns / ref:6.1f} the socketpair"
              f"  x{ns / raw_exit:7.1f} the raw exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
