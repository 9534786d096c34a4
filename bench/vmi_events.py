#!/usr/bin/env python3
"""VMI memory-event round trips beside a raw exit, in one run.

    python3 bench/vmi_events.py [--n 5000] [--rounds 5]

Boots guests/build/vmibench.elf in an in-process hypervisor (as the
integration tests do), twice per round:

    plain   no tool attached: ``hole-write`` (a 64-bit store to an address
            with no RAM, an MMIO exit the hypervisor drops) is the raw exit,
            the reference; watch-write and watch-read are plain memory
    vmi     a Vmi with a memory event (trap "rw") on ``watch_page``'s frame
            and a Python callback that counts: each watch-write and
            watch-read is an event round trip (guest access -> exit ->
            callback -> the access carried out -> resume)

The guest times each phase with rdtsc, interrupts off
(guests/tests/vmibench.c); its ``loop`` row (the loop alone) is taken off
every other row.  Cycles become µs with the host TSC rate measured over the
run (``pvclock.TscClock``, as bench/hvm_ioreq.py).  The ``/raw`` column is
each row over the plain run's hole-write of the same round; the table shows
the median over the rounds.  The script checks that the callback saw one
event per access and that the guest read back what it wrote.
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "src"))

import history  # noqa: E402

from pyxen.abi.xen import ShutdownReason  # noqa: E402
from pyxen.hv.builder import BuildSpec, build_domain  # noqa: E402
from pyxen.hv.hypervisor import Hypervisor  # noqa: E402
from pyxen.hv.pvclock import TscClock  # noqa: E402
from pyxen.hv.vcpu import install_kick_handler  # noqa: E402
from pyxen.vmi import Event, EventInfo, Vmi  # noqa: E402
from pyxen.vmi.symbols import elf_symbol  # noqa: E402

GUEST = ROOT / "guests" / "build" / "vmibench.elf"
PHASES = ("hole-write", "watch-write", "watch-read")
LINE = re.compile(r"vmibench: (\S+) (\d+) (\d+)\r?$", re.M)
DONE = re.compile(r"vmibench: done sum=(\d+)")
TIMEOUT = 300.0


def expected_sum(n: int) -> int:
    """What the guest reads back from watch_page's words 0..7 (vmibench.c)."""
    total = 0
    for k in range(8):
        last = list(range(k, n, 512))
        total += last[-1] + 1 if last else 0
    return total


def run_guest(n: int, watch_gfn: int | None) -> tuple[dict[str, float], int]:
    """One boot; per-access cycles of each phase (loop taken off) and the events seen."""
    out, log = io.StringIO(), io.StringIO()
    hv = Hypervisor(out, log)
    events = 0

    def count(vmi: Vmi, info: EventInfo) -> None:
        nonlocal events
        events += 1

    try:
        domain = build_domain(hv, BuildSpec(name="vmibench", kernel=GUEST, cmdline=f"n={n}",
                                            memory_mib=16, maxmem_mib=16))
        vmi = Vmi(domain) if watch_gfn is not None else None
        try:
            if vmi is not None and watch_gfn is not None:
                vmi.register_event(Event.memory(watch_gfn, "rw", count))
            domain.start()
            reason = domain.wait(TIMEOUT)
        finally:
            if vmi is not None:
                vmi.close()
    finally:
        hv.close()
    text = out.getvalue()
    done = DONE.search(text)
    if reason != ShutdownReason.poweroff or done is None:
        raise SystemExit(f"vmibench failed (reason {reason}):\n{text}\n--- log\n{log.getvalue()}")
    if int(done.group(1)) != expected_sum(n):
        raise SystemExit(f"vmibench read back sum={done.group(1)}, "
                         f"expected {expected_sum(n)}:\n{text}")
    rows = {m.group(1): int(m.group(3)) / int(m.group(2)) for m in LINE.finditer(text)}
    if "loop" not in rows or any(p not in rows for p in PHASES):
        raise SystemExit(f"vmibench printed no complete table:\n{text}")
    return {p: rows[p] - rows["loop"] for p in PHASES}, events


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="accesses per phase (default 5000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    args = ap.parse_args()
    if args.n < 1 or args.rounds < 1:
        ap.error("--n and --rounds must be at least 1")
    if not GUEST.exists():
        print("build the guests first: make -C guests", file=sys.stderr)
        return 1
    install_kick_handler()
    watch_gfn = elf_symbol(GUEST, "watch_page") >> 12
    clock = TscClock(time.monotonic_ns, 0)  # 0: measure the rate, do not trust KVM's
    plain: list[dict[str, float]] = []
    vmi: list[dict[str, float]] = []
    for r in range(args.rounds):
        print(f"vmi_events: round {r + 1}/{args.rounds}", file=sys.stderr)
        plain.append(run_guest(args.n, None)[0])
        cycles, events = run_guest(args.n, watch_gfn)
        if events != 2 * args.n + 8:  # + the read-back of words 0..7
            raise SystemExit(f"the callback saw {events} events, expected {2 * args.n + 8}")
        vmi.append(cycles)
    clock.calibrate()
    hz = clock.hz

    figures: dict[str, float | None] = {}
    ratios: dict[str, float | None] = {}

    def row(label: str, runs: list[dict[str, float]], phase: str) -> None:
        per = statistics.median(run[phase] for run in runs)
        ratio = statistics.median(run[phase] / ref["hole-write"]
                                  for run, ref in zip(runs, plain, strict=True))
        print(f"{label:<22}{per:>12.0f}{per * 1e6 / hz:>10.2f}{ratio:>8.2f}")
        figures[f"{label} ns"] = per * 1e9 / hz
        ratios[f"{label}/raw"] = ratio

    print(f"vmi_events: n={args.n} accesses per phase, {args.rounds} rounds, "
          f"TSC {hz / 1e9:.4f} GHz (measured over the run)")
    print(f"{'row':<22}{'cycles':>12}{'us':>10}{'/raw':>8}")
    row("raw exit (hole-write)", plain, "hole-write")
    row("hole-write, vmi on", vmi, "hole-write")
    row("write event", vmi, "watch-write")
    row("read event", vmi, "watch-read")
    row("write, no vmi", plain, "watch-write")
    print("per access, the loop's own cost taken off; medians over the rounds; /raw: over "
          "the raw exit of the same round")
    history.record("vmi_events", figures, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
