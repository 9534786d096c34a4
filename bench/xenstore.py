#!/usr/bin/env python3
"""xenstore round trips per second over the Unix socket, beside a raw echo.

    python3 bench/xenstore.py [--n 5000] [--rounds 3]

Starts pyxen's xenstored (`python -m pyxen.services.xenstored --socket ...`)
and, as the reference, an echo server process (a selectors loop that sends
every byte back, the least any Python socket server can do per request).
One client in this process sends the same 16-byte-header messages to both,
one at a time, and waits for each reply:

    echo          a READ-sized request echoed back
    xs read       XS_READ of /bench/key (a 32-byte value)
    xs write      XS_WRITE of /bench/key (the state file is not used)
    xs directory  XS_DIRECTORY of a node with 16 children

Rounds are interleaved; medians are printed with their ratio to the echo.

Then, persistence (``--state-nodes``, default 10,000; 0 skips it): two
xenstored processes load the same state file of that many nodes and serve
``--state`` writes (XS_WRITE of one node, each saved before its reply):

    journal         what xenstored does: one line appended per change
    full rewrite    the previous behaviour, a snapshot of the whole store
                    per change (xenstored with ``StateJournal.save``
                    replaced by ``persistence.save``, in this bench only)

Both run in the same run, rounds interleaved (``--state-n`` writes each).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import history  # noqa: E402

from pyxen.control.xenstore import XenstoreClient  # noqa: E402

ECHO_SERVER = r"""
import os, selectors, socket, sys
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(8)
sel = selectors.DefaultSelector(); sel.register(srv, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is srv:
            conn, _ = srv.accept(); sel.register(conn, selectors.EVENT_READ)
        else:
            data = key.fileobj.recv(65536)
            if not data:
                sel.unregister(key.fileobj); key.fileobj.close()
            else:
                key.fileobj.sendall(data)
"""


def _wait_socket(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(0.01)


def echo_rate(path: Path, n: int, payload: bytes) -> float:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        t0 = time.perf_counter()
        for _ in range(n):
            s.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(s.recv(65536))
        return n / (time.perf_counter() - t0)


def xs_rate(client: XenstoreClient, n: int, op: str) -> float:
    t0 = time.perf_counter()
    if op == "read":
        for _ in range(n):
            client.read("/bench/key")
    elif op == "write":
        for i in range(n):
            client.write("/bench/key", f"value-{i:026d}")
    else:
        for _ in range(n):
            client.request(1, b"/bench/dir\0")  # XS_DIRECTORY
    return n / (time.perf_counter() - t0)


# xenstored, optionally with the previous save (a full snapshot per change).
XENSTORED = r"""
import sys
from pyxen.services.xenstored import cli, persistence
if sys.argv[1] == "full":
    def full_rewrite(self, xs):
        persistence.save(self.path, xs)
    persistence.StateJournal.save = full_rewrite
sys.exit(cli.main(sys.argv[2:]))
"""


def state_rates(base: Path, env: dict[str, str], nodes: int, n: int,
                rounds: int) -> dict[str, list[float]]:
    """writes/s of xenstored with ``--state`` at ``nodes`` nodes, per mode."""
    from pyxen.services.xenstored import persistence
    from pyxen.services.xenstored.core import Xenstore
    from pyxen.services.xenstored.permissions import DEFAULT_PERMS
    from pyxen.services.xenstored.tree import Node

    store = Xenstore()
    tree = store.tree
    per_dir = 100
    for d in range(nodes // per_dir):
        parent = f"/bench/{d}"
        for p in ("/bench", parent):
            if tree.peek(p) is None:
                up = tree.nodes[p.rsplit("/", 1)[0] or "/"]
                tree.put(p.rsplit("/", 1)[0] or "/",
                         Node(up.value, up.perms, (*up.children, p.rsplit("/", 1)[1])))
                tree.put(p, Node(b"", DEFAULT_PERMS))
        children = tuple(f"k{i}" for i in range(per_dir))
        tree.put(parent, Node(b"", DEFAULT_PERMS, children))
        for c in children:
            tree.put(f"{parent}/{c}", Node(b"some value", DEFAULT_PERMS))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    clients: dict[str, XenstoreClient] = {}
    rates: dict[str, list[float]] = {"journal": [], "full rewrite": []}
    try:
        for mode in rates:
            state = base / f"state-{mode.replace(' ', '-')}.json"
            persistence.save(str(state), store)
            sock = base / f"xs-{mode.replace(' ', '-')}.sock"
            procs[mode] = subprocess.Popen(
                [sys.executable, "-c", XENSTORED, "full" if mode == "full rewrite" else "new",
                 "--socket", str(sock), "--state", str(state), "--log", str(base / "xs.log")],
                env=env)
            _wait_socket(sock)
            clients[mode] = XenstoreClient(sock)
        for rnd in range(rounds):
            for mode, client in clients.items():
                t0 = time.perf_counter()
                for i in range(n):
                    client.write(f"/bench/{i % (nodes // per_dir)}/k{i % per_dir}", f"v{rnd}-{i}")
                rates[mode].append(n / (time.perf_counter() - t0))
            print(f"state round {rnd + 1}/{rounds}: " + ", ".join(
                f"{k} {v[-1]:,.0f} writes/s" for k, v in rates.items()), file=sys.stderr)
        for client in clients.values():
            client.close()
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(10)
    sizes = {p.name: p.stat().st_size for p in base.glob("state-*")}
    print(f"\nxenstored --state writes with {len(tree.nodes):,} nodes, n={n} per run, "
          f"{rounds} interleaved rounds; files at the end: {sizes}")
    print(f"{'save per change':<16}{'writes/s':>10}{'ms each':>9}")
    for mode, values in rates.items():
        med = statistics.median(values)
        print(f"{mode:<16}{med:>10,.0f}{1e3 / med:>9.2f}")
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--state-nodes", type=int, default=10_000)
    ap.add_argument("--state-n", type=int, default=200)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pyxen-xsbench-"))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src")
    xs_path, echo_path = base / "xenstored.sock", base / "echo.sock"
    xs = subprocess.Popen([sys.executable, "-m", "pyxen.services.xenstored", "--socket",
                           str(xs_path), "--log", str(base / "xs.log")], env=env)
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_path)],
                            stdout=subprocess.DEVNULL)
    rates: dict[str, list[float]] = {"echo": [], "xs read": [], "xs write": [],
                                     "xs directory": []}
    try:
        _wait_socket(xs_path)
        _wait_socket(echo_path)
        client = XenstoreClient(xs_path)
        client.write("/bench/key", "x" * 32)
        for i in range(16):
            client.write(f"/bench/dir/child{i:02d}", "1")
        request = b"\x02\0\0\0" + b"\1\0\0\0" + b"\0" * 4 + b"\x0b\0\0\0" + b"/bench/key\0"
        for rnd in range(args.rounds):
            rates["echo"].append(echo_rate(echo_path, args.n, request))
            rates["xs read"].append(xs_rate(client, args.n, "read"))
            rates["xs write"].append(xs_rate(client, args.n, "write"))
            rates["xs directory"].append(xs_rate(client, args.n, "directory"))
            print(f"round {rnd + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()), file=sys.stderr)
        client.close()
    finally:
        for proc in (xs, echo):
            proc.terminate()
            proc.wait(10)
    ref = statistics.median(rates["echo"])
    print()
    print(f"xenstore round trips over a Unix socket, n={args.n} per run, {args.rounds} "
          "interleaved rounds (one run; compare ratios, not absolute rates)")
    print(f"{'what':<14}{'median/s':>11}{'us each':>9}{'/ echo':>8}")
    for key, values in rates.items():
        med = statistics.median(values)
        print(f"{key:<14}{med:>11,.0f}{1e6 / med:>9.1f}{med / ref:>8.2f}")
    meds = {key: statistics.median(values) for key, values in rates.items()}
    history.record("xenstore", meds, {f"{k}/echo": v / ref for k, v in meds.items()},
                   unit="requests/s")
    try:
        if args.state_nodes:
            state_rates(base, env, args.state_nodes, args.state_n, args.rounds)
    finally:
        shutil.rmtree(base, ignore_errors=True)  # sockets, state files, the log
    return 0


if __name__ == "__main__":
    sys.exit(main())
