#!/usr/bin/env python3
"""Null-hypercall benchmark: pyxen against a C KVM program doing the same exits.

    python3 bench/hypercall.py [--n 20000] [--rounds 5]

Builds bench/build/kvm_exit_ref (gcc -O2) and the test guests (make -C guests),
then for each round runs, one after the other:

    C bare       kvm_exit_ref bare      exit, re-enter, nothing else
    C syncregs   kvm_exit_ref syncregs  exit + sync-regs read/rax write (pyxen's scheme)
    C getset     kvm_exit_ref getset    exit + KVM_GET_REGS + KVM_SET_REGS
    C noexit     kvm_exit_ref noexit    control: same loop, stub without OUT
    pyxen        python3 -m pyxen create -F bench.cfg  (guests/build/bench.elf)
    pure         the same with PYXEN_PURE_RUN_LOOP=1
    one-line     bench.elf in-process, xen_version answered by a one-line worker

All four run the same guest loop (15 instructions and one port-I/O exit per
iteration; see README.md) N times.  Only ratios measured in one run are
comparable across runs and machines.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import history

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SRC = ROOT / "src"
GUESTS = ROOT / "guests"
BUILD = BENCH / "build"
REF_C = BENCH / "kvm_exit_ref.c"
REF_BIN = BUILD / "kvm_exit_ref"
BENCH_ELF = GUESTS / "build" / "bench.elf"

C_MODES = ("bare", "syncregs", "getset", "noexit")
# Issue 17's goals: a null hypercall within 1.2x the C reference, pyxen's part
# of an exit (the guest's own instructions taken out) within 1.5x C's.
GOAL_NULL_HYPERCALL = 1.2
GOAL_EXIT_PART = 1.5

_KVMREF = re.compile(r"^KVMREF .*$", re.M)
_BENCH = re.compile(
    r"BENCH null_hypercall cycles_per_call=(\d+) baseline_cycles=(\d+) tsc_khz=(\d+) n=(\d+)"
)


class BenchError(Exception):
    pass


def _kv(line: str) -> dict[str, str]:
    return dict(tok.split("=", 1) for tok in line.split() if "=" in tok)


def build() -> None:
    BUILD.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "gcc")
    cmd = [cc, "-O2", "-Wall", "-Wextra", "-o", str(REF_BIN), str(REF_C)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"building {REF_BIN} failed:\n$ {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    r = subprocess.run(["make", "-C", str(GUESTS)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"make -C {GUESTS} failed:\n{r.stdout}{r.stderr}")
    if not BENCH_ELF.is_file():
        sys.exit(f"{BENCH_ELF} was not built")


def run_c(mode: str, n: int, warmup: int) -> dict[str, float]:
    """One run of the C reference; returns ns per exit (host clock and guest TSC)."""
    cmd = [str(REF_BIN), mode, str(n), str(warmup)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    m = _KVMREF.search(r.stdout)
    if r.returncode != 0 or not m:
        raise BenchError(f"$ {' '.join(cmd)}\nexit status {r.returncode}\n{r.stdout}{r.stderr}")
    kv = _kv(m.group(0))
    return {"ns": float(kv["ns_per_exit"]), "guest_ns": float(kv["guest_ns_per_iter"]),
            "user_ns": float(kv["user_ns_per_exit"])}


def run_pyxen(n: int, tmp: Path, pure: bool = False) -> dict[str, float]:
    """One run of pyxen with bench.elf; returns ns per hypercall from the guest's TSC.
    ``pure``: with PYXEN_PURE_RUN_LOOP=1 (every exit decoded in Python, no C fast path)."""
    cfg = tmp / "bench.cfg"
    cfg.write_text(
        'name = "bench"\n'
        'type = "pvh"\n'
        f'kernel = "{BENCH_ELF}"\n'
        "memory = 32\n"
        f'extra = "n={n}"\n'
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYXEN_PURE_RUN_LOOP"] = "1" if pure else "0"
    cmd = [sys.executable, "-m", "pyxen", "create", "-F", str(cfg)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
    out = r.stdout + r.stderr
    m = _BENCH.search(r.stdout)
    if r.returncode != 0 or not m or "RESULT bench: PASS" not in out:
        raise BenchError(f"$ {' '.join(cmd)}   (cfg: {cfg.read_text()!r})\n"
                         f"exit status {r.returncode}\n{out}")
    cyc, base, khz, got_n = (int(x) for x in m.groups())
    if got_n != n:
        raise BenchError(f"guest ran n={got_n}, asked for n={n}:\n{out}")
    if khz == 0:
        raise BenchError(f"guest reported tsc_khz=0:\n{out}")
    return {"ns": cyc * 1e6 / khz, "baseline_ns": base * 1e6 / khz, "tsc_khz": khz}


# Run in a subprocess: bench.elf in a hypervisor of its own, the vCPU thread's
# user-space CPU time (getrusage RUSAGE_THREAD) from its start to its end.
# With "minimal", xen_version(XENVER_version) is answered by a one-line Python
# worker: the C run loop plus one trivial Python call, the floor of the design.
_USER_CPU = r"""
import io, resource, sys
from pathlib import Path
import pyxen.hv.vcpu as vcpu
from pyxen.abi.xen import Hypercall
from pyxen.hv.builder import BuildSpec, build_domain
from pyxen.hv.hypercalls.xen_version import do_xen_version
from pyxen.hv.hypervisor import Hypervisor
elf, n, pure, minimal = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"
if pure:
    vcpu.RUN_ONCE = None  # what PYXEN_PURE_RUN_LOOP=1 does at import
used = []
loop = vcpu.VcpuRunner._loop
def timed(self):
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_utime
    try:
        loop(self)
    finally:
        used.append(resource.getrusage(resource.RUSAGE_THREAD).ru_utime - before)
vcpu.VcpuRunner._loop = timed
vcpu.install_kick_handler()
out = io.StringIO()
hv = Hypervisor(out, io.StringIO())
if minimal:
    version = do_xen_version(None, 0, 0)
    hv.hypercalls.register(Hypercall.xen_version, lambda call, cmd, *args:
                           version if cmd == 0 else do_xen_version(call, cmd, *args))
d = build_domain(hv, BuildSpec(name="bench", kernel=elf, cmdline=f"n={n}", memory_mib=32,
                               maxmem_mib=32, vcpus=1, maxvcpus=1))
d.start()
d.wait(600)
hv.close()
if "RESULT bench: PASS" not in out.getvalue() or len(used) != 1:
    sys.exit(out.getvalue())
print(f"USER_NS {used[0] * 1e9:.0f}")
print(out.getvalue())
"""


def run_in_process(n: int, pure: bool, minimal: bool = False) -> tuple[float, float]:
    """ns of the vCPU thread's user-space CPU per hypercall, and ns per hypercall
    by the guest's TSC: two runs (n and 2n calls); the user CPU is their
    difference, so the thread's start-up and the guest's boot hypercalls cancel
    out; the guest's figure is the 2n run's."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    totals = []
    guest_ns = 0.0
    for calls in (n, 2 * n):
        cmd = [sys.executable, "-c", _USER_CPU, str(BENCH_ELF), str(calls), "1" if pure else "0",
               "1" if minimal else "0"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        m = re.search(r"USER_NS (\d+)", r.stdout)
        b = _BENCH.search(r.stdout)
        if r.returncode != 0 or not m or not b:
            raise BenchError(f"in-process run (n={calls}, pure={pure}, minimal={minimal}) "
                             f"failed:\n{r.stdout}{r.stderr}")
        totals.append(int(m.group(1)))
        guest_ns = int(b.group(1)) * 1e6 / int(b.group(3))
    return (totals[1] - totals[0]) / n, guest_ns


def paired(rounds: list[dict[str, float]], num: str, num0: str | None, den: str,
           den0: str | None) -> list[float]:
    """Per round: (num - num0) / (den - den0) (a missing key counts as 0), for the
    rounds that have them all and a positive denominator."""
    out = []
    for r in rounds:
        keys = [k for k in (num, num0, den, den0) if k is not None]
        if not all(k in r for k in keys):
            continue
        top = r[num] - (r[num0] if num0 else 0.0)
        bottom = r[den] - (r[den0] if den0 else 0.0)
        if bottom > 0:
            out.append(top / bottom)
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="hypercalls per run (default 20000)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="C reference: exits before the clock starts (default max(500, n/20))")
    args = ap.parse_args()
    if args.n < 1 or args.rounds < 1:
        ap.error("--n and --rounds must be positive")
    warmup = args.warmup if args.warmup is not None else max(500, args.n // 20)

    build()

    per_round: list[dict[str, float]] = []  # each round's values, for paired ratios
    failures: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="pyxen-bench-"))
    try:
        for rnd in range(1, args.rounds + 1):
            parts = []
            this: dict[str, float] = {}  # this round's values
            per_round.append(this)
            for mode in C_MODES:
                try:
                    res = run_c(mode, args.n, warmup)
                except (BenchError, subprocess.TimeoutExpired) as e:
                    failures.append(f"round {rnd}, C {mode}:\n{e}")
                    parts.append(f"C {mode} FAILED")
                    continue
                this[mode] = res["ns"]
                if mode == "syncregs":
                    this["syncregs_tsc"] = res["guest_ns"]
                    this["user_c"] = res["user_ns"]
                parts.append(f"C {mode} {res['ns']:,.0f}")
            for key, pure in (("pyxen", False), ("pure", True)):
                try:
                    res = run_pyxen(args.n, tmp, pure)
                except (BenchError, subprocess.TimeoutExpired) as e:
                    failures.append(f"round {rnd}, {key}:\n{e}")
                    parts.append(f"{key} FAILED")
                    continue
                this[key] = res["ns"]
                if not pure:
                    this["baseline"] = res["baseline_ns"]
                parts.append(f"{key} {res['ns']:,.0f}")
                try:
                    this[f"user_{key}"] = run_in_process(args.n, pure)[0]
                except (BenchError, subprocess.TimeoutExpired) as e:
                    failures.append(f"round {rnd}, {key} user CPU:\n{e}")
            try:
                user_ns, guest_ns = run_in_process(args.n, pure=False, minimal=True)
                this["user_minimal"] = user_ns
                this["minimal"] = guest_ns
                parts.append(f"minimal {guest_ns:,.0f}")
            except (BenchError, subprocess.TimeoutExpired) as e:
                failures.append(f"round {rnd}, one-line worker:\n{e}")
            print(f"round {rnd}/{args.rounds}: " + ", ".join(parts) + "  (ns/call)",
                  file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    samples = {key: [r[key] for r in per_round if key in r] for key in
               ("bare", "syncregs", "getset", "noexit", "syncregs_tsc", "pyxen", "pure",
                "minimal", "baseline", "user_c", "user_pyxen", "user_pure", "user_minimal")}

    med = {k: (statistics.median(v) if v else None) for k, v in samples.items()}
    mn = {k: (min(v) if v else None) for k, v in samples.items()}

    rows = [
        ("C bare", "bare", "exit to user space and straight back (KVM_RUN only)"),
        ("C syncregs", "syncregs",
         "exit + read args/efer/cs.l from kvm_run sync regs, write rax (the target)"),
        ("C getset", "getset", "exit + KVM_GET_REGS + KVM_SET_REGS per call"),
        ("pyxen", "pyxen", "pyxen create running guests/build/bench.elf (guest TSC)"),
        ("pyxen pure-Python loop", "pure", "the same with PYXEN_PURE_RUN_LOOP=1 (no C fast path)"),
        ("pyxen one-line worker", "minimal", "C fast path + a one-line Python worker for "
                                             "xen_version (in-process, guest TSC)"),
        ("C syncregs, guest TSC", "syncregs_tsc",
         "C syncregs timed by the guest's rdtsc, as pyxen is"),
        ("C noexit", "noexit", "control: same loop, stub `mov eax,17; ret` (no exit) in the C VM"),
        ("pyxen noexit", "baseline",
         "control: bench.elf's local-call loop under pyxen (guest TSC)"),
        ("user CPU: C syncregs", "user_c", "user-space CPU per exit (getrusage, sampled per tick: "
                                           "C's is often too small to be seen)"),
        ("user CPU: pyxen", "user_pyxen",
         "the vCPU thread's, per hypercall (runs of n and 2n calls)"),
        ("user CPU: pure loop", "user_pure", "the same with the pure-Python loop"),
        ("user CPU: one-line", "user_minimal", "the same with the one-line worker"),
    ]

    print()
    print(f"pyxen null-hypercall benchmark: xen_version(XENVER_version, NULL), n={args.n} "
          f"calls per run, {args.rounds} interleaved round(s), C warm-up {warmup} exits")
    print("ns per null hypercall (one guest loop iteration: 15 instructions incl. the stub, "
          "one port-I/O exit).")
    print("Numbers are from this run on this machine only; compare ratios, not absolute times, "
          "across runs.")
    print("C rows: host CLOCK_MONOTONIC over n exits after warm-up (C noexit: whole run). "
          "pyxen rows: guest rdtsc over all n calls, ns = cycles * 1e6 / tsc_khz.")
    print()
    print(f"{'what':<24}{'median':>10}{'min':>10}{'runs':>6}  description")
    for label, key, desc in rows:
        print(f"{label:<24}{fmt(med[key]):>10}{fmt(mn[key]):>10}{len(samples[key]):>6}  {desc}")
    print()

    def ratio(a: str, b: str) -> str:
        if med[a] is None or med[b] is None or med[b] == 0:
            return "n/a"
        return f"{med[a] / med[b]:.2f}"

    def goal(a: str, b: str, limit: float) -> str:
        if med[a] is None or med[b] is None or med[b] == 0:
            return ""
        return f"   goal <= {limit:.2f}: {'MET' if med[a] / med[b] <= limit else 'NOT MET'}"

    ratios: dict[str, float | None] = {
        "pyxen/C_syncregs": _div(med["pyxen"], med["syncregs"]),
        "pure/C_syncregs": _div(med["pure"], med["syncregs"]),
        "minimal/C_syncregs": _div(med["minimal"], med["syncregs"]),
        "pyxen/C_bare": _div(med["pyxen"], med["bare"]),
        "pyxen_noexit/C_noexit": _div(med["baseline"], med["noexit"]),
    }
    print("ratios of medians:")
    print(f"  pyxen / C syncregs     {ratio('pyxen', 'syncregs'):>6}"
          f"{goal('pyxen', 'syncregs', GOAL_NULL_HYPERCALL)}")
    print(f"  pyxen pure / C syncregs {ratio('pure', 'syncregs'):>5}")
    print(f"  one-line worker / C syncregs {ratio('minimal', 'syncregs'):>5}  (the design's floor: "
          "what the real worker path adds is pyxen minus this)")
    print(f"  pyxen / C bare         {ratio('pyxen', 'bare'):>6}")
    print(f"  C syncregs / C bare    {ratio('syncregs', 'bare'):>6}")
    print(f"  C getset / C bare      {ratio('getset', 'bare'):>6}")
    print(f"  pyxen / C syncregs (both timed by guest TSC) {ratio('pyxen', 'syncregs_tsc'):>6}")
    print("  pyxen noexit / C noexit (guest emulation speed, should be ~1) "
          f"{ratio('baseline', 'noexit'):>6}")
    for key in ("pyxen", "pure", "minimal"):
        if None in (med[key], med["baseline"], med["syncregs"], med["noexit"]):
            continue
        px = med[key] - med["baseline"]  # type: ignore[operator]
        cx = med["syncregs"] - med["noexit"]  # type: ignore[operator]
        if cx <= 0:
            print(f"  exit part only ({key}): n/a (C syncregs <= C noexit)")
            continue
        verdict = "MET" if px / cx <= GOAL_EXIT_PART else "NOT MET"
        met = f"   goal <= {GOAL_EXIT_PART:.2f}: {verdict}"
        print(f"  exit part only ({key}): ({key} - pyxen noexit) / (C syncregs - C noexit) = "
              f"{px:,.0f} / {cx:,.0f} = {px / cx:.2f}{met if key == 'pyxen' else ''}")
        ratios[f"exit_part_{key}"] = px / cx
    for key in ("pyxen", "pure", "minimal"):
        ratios[f"user_cpu_{key}/C"] = _div(med[f"user_{key}"], med["user_c"])
    if med["user_pyxen"] is not None and med["user_pure"]:
        ratios["user_cpu_pyxen/pure"] = med["user_pyxen"] / med["user_pure"]
        print(f"  user-space CPU per exit (guest time excluded, so far less noisy): pyxen "
              f"{med['user_pyxen']:,.0f} ns, pure loop {med['user_pure']:,.0f} ns: "
              f"pyxen / pure {med['user_pyxen'] / med['user_pure']:.2f}")

    # Each round's C and pyxen runs are seconds apart, so a ratio per round
    # cancels the machine's slower and faster spells that a ratio of medians
    # (over runs minutes apart) keeps.
    print("per-round ratios (median of the rounds [95% bootstrap interval], rounds):")
    for label, key, num, num0, den, den0, limit in (
            ("pyxen / C syncregs", "paired_pyxen/C_syncregs", "pyxen", None, "syncregs", None,
             GOAL_NULL_HYPERCALL),
            ("exit part, pyxen / C", "paired_exit_part_pyxen", "pyxen", "baseline", "syncregs",
             "noexit", GOAL_EXIT_PART),
            ("one-line worker / C syncregs", "paired_minimal/C_syncregs", "minimal", None,
             "syncregs", None, None)):
        values = paired(per_round, num, num0, den, den0)
        if not values:
            continue
        mid, low, high = history.median_interval(values)
        ratios[key] = mid
        verdict = "" if limit is None else \
            f"   goal <= {limit:.2f}: {'MET' if mid <= limit else 'NOT MET'}"
        print(f"  {label:<30}{mid:6.2f} [{low:.2f}, {high:.2f}], {len(values)}{verdict}")

    history.record("hypercall", med, ratios)
    if failures:
        print()
        print(f"{len(failures)} run(s) FAILED:")
        for f in failures:
            print("---")
            print(f.rstrip())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
