#!/usr/bin/env python3
"""Scheduler benchmark: fairness, wake-up latency and decision cost of pyxen's schedulers.

    python3 bench/sched.py [--secs 5] [--warm 1] [--lat-secs 4] [--cpu N] [--parts abc]

Runs the hypervisor in-process (pyxen's Python API), each measurement with
a fresh ``Hypervisor`` whose ``Dispatcher`` schedules over ONE host CPU
(``--cpu``, default the highest this process may use), built as the daemon
builds it for ``--sched NAME --cpus N``; the reference is the same guests
with no dispatcher (``hv.dispatcher = None``), their vCPU threads pinned to
that CPU and left to the host kernel's scheduler, in the same run:

(a) fairness: three ``hog.elf`` domains (1 vCPU each) with weights
    256:512:1024 under credit2 and credit (RTDS: budgets 1.4/2.8/5.6 ms per
    10 ms, no extratime); the host kernel reference renices the threads to
    6/3/0 (CFS weights 272/526/1024).  Each vCPU's share of the time the
    three ran over ``--secs`` after ``--warm`` s: from its runstate (the time
    it held the pCPU), from its thread's CPU clock, and from the guest's own
    iteration count (whole run); beside the ideal 1/7:2/7:4/7.  Plus, for
    the dispatcher: decisions per second, the real cost of each
    ``pick_next`` there, and how late after a slice's end the pCPU decides
    again (split into the slice timer's lateness and the vCPU's reaction to
    the preemption request).
(b) latency: ``timer.elf`` (VIRQ_TIMER re-armed every 1 ms) beside three
    hogs on the CPU, under credit2, credit, rtds and the host kernel, plus
    the timer guest alone (host kernel) as the floor: the guest-measured
    timer lateness (median, p99, max), and host-side wake-to-run from the
    scheduler trace (each "wake" of the timer vCPU to its next "run"); the
    host-kernel cases have only the guest figure.  A 1 kHz tick costs this
    emulated guest about half a host CPU, so the timer domain is given a
    share above that (see TIMER_WEIGHT below) or it only falls behind.
(c) decision cost: ``simulate.decision_overhead`` (real ns per
    ``pick_next`` over a simulated mix of hogs, periodic and bursty vCPUs,
    4 per pCPU) for credit2, credit, rtds and null on 1, 2 and 4 pCPUs,
    beside a trivial round-robin scheduler in the same run.

Progress lines go to stderr, the tables to stdout; the goals are checked
for information only (no assertion).  The host is shared and noisy: only
figures from one run are comparable (see bench/README.md).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "src"))

import history  # noqa: E402

from pyxen.hv.builder import BuildSpec, build_domain  # noqa: E402
from pyxen.hv.domain import Domain  # noqa: E402
from pyxen.hv.hypervisor import Hypervisor  # noqa: E402
from pyxen.hv.sched import SCHEDULERS  # noqa: E402
from pyxen.hv.sched.dispatcher import Dispatcher  # noqa: E402
from pyxen.hv.sched.host import host_topology  # noqa: E402
from pyxen.hv.sched.interface import Decision, Scheduler, Topology  # noqa: E402
from pyxen.hv.sched.roundrobin import RoundRobin  # noqa: E402
from pyxen.hv.sched.simulate import SECOND, Overhead, decision_overhead  # noqa: E402
from pyxen.hv.sched.trace import T_DOMID, T_KIND, T_TIME, T_VCPU, SchedTrace, kind_code  # noqa: E402
from pyxen.hv.vcpu import Req, VcpuRunner, install_kick_handler  # noqa: E402

GUESTS = ROOT / "guests"
GUEST_BUILD = GUESTS / "build"

WEIGHTS = (256, 512, 1024)
IDEAL = tuple(w / sum(WEIGHTS) for w in WEIGHTS)
# CFS's weight table (kernel/sched/core.c sched_prio_to_weight): nice 6 -> 272,
# nice 3 -> 526, nice 0 -> 1024, the closest to 256:512:1024.
HOST_NICE = {256: 6, 512: 3, 1024: 0}
CFS_WEIGHT = {0: 1024, 3: 526, 6: 272}
# RTDS: fairness as reservations (no extratime, 98% of the pCPU reserved).
RTDS_FAIR_PERIOD_US = 10_000
RTDS_FAIR_BUDGET_US = {256: 1400, 512: 2800, 1024: 5600}
# Latency runs.  On this emulating nested KVM a 1 kHz tick costs the timer
# guest about half a host CPU (its handler, the upcall and the hypercalls at
# ~1 us per guest instruction), more than a quarter share beside three hogs:
# at equal weights it falls behind and its lateness only grows.  So the
# timer domain gets a share above its demand, the same way everywhere:
# credit/credit2 weight 2048 against the hogs' 256 (8:1); the host kernel
# nice 0 against the hogs' nice 9 (CFS 1024:137); RTDS 700 us every 1 ms
# against 800 us every 10 ms per hog (utilisation 0.94), extratime on for all.
TIMER_WEIGHT, LAT_HOG_WEIGHT = 2048, 256
TIMER_NICE, LAT_HOG_NICE = 0, 9
RTDS_TIMER = {"period": 1000, "budget": 700}
RTDS_HOG = {"period": 10_000, "budget": 800}

SHARE_GOAL_PP = 2.0  # percentage points from the ideal share
LATENCY_GOAL_NS = 2_000_000  # Credit2's p99 wake latency
TRACE_CAPACITY = 1 << 18  # events per pCPU ring: ~6 events/ms for the latency runs


class BenchError(Exception):
    pass


def _kv(line: str) -> dict[str, str]:
    return dict(tok.split("=", 1) for tok in line.split() if "=" in tok)


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_guests() -> None:
    r = subprocess.run(["make", "-C", str(GUESTS)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"make -C {GUESTS} failed:\n{r.stdout}{r.stderr}")
    for prog in ("hog", "timer"):
        if not (GUEST_BUILD / f"{prog}.elf").is_file():
            sys.exit(f"{GUEST_BUILD / prog}.elf was not built")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- one hypervisor per measurement ----------------------------------------------------


class ProbedDispatcher(Dispatcher):
    """The daemon's Dispatcher, timing the two halves of a preemption at a slice's end:
    the slice end -> the slice timer's callback (``timer_lag``), and that callback's
    request -> the vCPU out of KVM_RUN calling ``preempted`` (``exit_lag``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slice_due: dict[int, int] = {}  # pCPU -> its slice's end (set by Run)
        self._asked: dict[int, int] = {}
        self.timer_lag: list[int] = []
        self.exit_lag: list[int] = []

    def _slice_end(self, pcpu: int) -> None:
        now = self.clock()
        due = self.slice_due.get(pcpu)
        current = self._running.get(pcpu)
        if (due is not None and now >= due and current is not None
                and not current.control.requests & Req.PREEMPT):
            self.timer_lag.append(now - due)
            self._asked[pcpu] = now
        super()._slice_end(pcpu)

    def preempted(self, runner: VcpuRunner) -> None:
        pcpu = runner.grant
        asked = self._asked.pop(pcpu, None) if pcpu is not None else None
        if asked is not None:
            self.exit_lag.append(self.clock() - asked)
        super().preempted(runner)


class Run:
    """A hypervisor with captured output; ``sched`` None leaves the vCPU threads to Linux."""

    def __init__(self, sched: str | None, cpu: int,
                 sched_params: dict[str, Any] | None = None) -> None:
        self.sched = sched
        self.cpu = cpu
        self.out = io.StringIO()
        self.log = io.StringIO()
        self.hv = Hypervisor(self.out, self.log, realtime_timers=True)  # as the daemon
        self.trace: SchedTrace | None = None
        self.dispatcher: ProbedDispatcher | None = None
        self.slice_due: dict[int, int] = {}
        self.pick_ns: list[int] = []
        self.lag_ns: list[int] = []
        if sched is not None:
            # As the daemon's _scheduling does for --sched SCHED --cpus CPU.
            pcpus = [cpu]
            self.trace = SchedTrace(pcpus, capacity=TRACE_CAPACITY, enabled=False)
            scheduler = SCHEDULERS[sched](pcpus, host_topology(pcpus), self.trace,
                                          sched_params)
            self._time_decisions(scheduler)
            self.dispatcher = ProbedDispatcher(scheduler, pcpus, self.hv.timers,
                                               self.hv.system_time_ns, trace=self.trace)
            self.dispatcher.slice_due = self.slice_due
            self.hv.dispatcher = self.dispatcher

    def _time_decisions(self, scheduler: Scheduler) -> None:
        """Record the real time of every pick_next the dispatcher makes, and how long
        after the end of a slice the pCPU picked again (``lag_ns``: the slice timer, the
        signal, the vCPU leaving KVM_RUN and calling back)."""
        real = scheduler.pick_next
        samples, lags, due = self.pick_ns, self.lag_ns, self.slice_due
        clock = time.perf_counter_ns

        def pick_next(pcpu: int, now: int) -> Decision:
            end = due.pop(pcpu, None)
            if end is not None and now >= end:
                lags.append(now - end)
            t0 = clock()
            decision = real(pcpu, now)
            samples.append(clock() - t0)
            if decision.vcpu is not None:
                due[pcpu] = now + max(decision.slice_ns, 1)
            return decision

        scheduler.pick_next = pick_next  # type: ignore[method-assign]

    def domain(self, prog: str, cmdline: str) -> Domain:
        spec = BuildSpec(name=prog, kernel=GUEST_BUILD / f"{prog}.elf", cmdline=cmdline,
                         memory_mib=16, maxmem_mib=16, vcpus=1, maxvcpus=1)
        return build_domain(self.hv, spec)

    def set_params(self, d: Domain, params: dict[str, Any]) -> None:
        assert self.dispatcher is not None
        self.dispatcher.set_domain_params(d.domid, params)

    def start(self, d: Domain, nice: int = 0) -> None:
        """Start ``d``; with no dispatcher, pin its threads to the CPU and renice them."""
        d.start()
        if self.dispatcher is not None:
            return
        for runner in d.vcpus:
            thread = runner._thread
            assert thread is not None and thread.native_id is not None
            os.sched_setaffinity(thread.native_id, {self.cpu})
            os.setpriority(os.PRIO_PROCESS, thread.native_id, nice)

    def finish(self, domains: list[Domain], prog: str, timeout: float = 120) -> str:
        """Wait for ``domains`` to end; destroy everything; the guest output."""
        end = time.monotonic() + timeout
        for d in domains:
            d.wait(max(end - time.monotonic(), 0))
        out = self.out.getvalue()
        self.hv.close()
        if self.dispatcher is not None:
            self.dispatcher.close()
        if out.count(f"RESULT {prog}: PASS") != len(domains):
            raise BenchError(f"{prog} did not pass:\n{out}\n{self.log.getvalue()}")
        return out

    def guest_line(self, out: str, d: Domain, prefix: str) -> dict[str, str]:
        m = re.search(rf"^\(d{d.domid}\) {prefix}.*$", out, re.M)
        if not m:
            raise BenchError(f"no '{prefix}' line from d{d.domid} in:\n{out}")
        return _kv(m.group(0))


def thread_cpu_ns(d: Domain) -> int:
    thread = d.vcpus[0]._thread
    assert thread is not None and thread.ident is not None
    return time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))


def running_ns(r: Run, d: Domain) -> int:
    return int(d.vcpus[0].time.runstate.snapshot(now_ns=r.hv.system_time_ns()).time[0])


# -- (a) fairness -----------------------------------------------------------------------


@dataclass
class Fairness:
    label: str
    wall_s: float
    runstate: list[float] | None  # shares of the three's running time (pyxen schedulers)
    cpu: list[float]  # shares of the three's thread CPU time
    guest: list[float]  # shares of the guests' iterations (whole run)
    busy: float  # the three's thread CPU time / wall time (1.0 = the whole CPU)
    decisions_per_s: float = float("nan")
    pick_ns: list[int] = field(default_factory=list)
    lag_ns: list[int] = field(default_factory=list)
    timer_lag_ns: list[int] = field(default_factory=list)
    exit_lag_ns: list[int] = field(default_factory=list)

    @property
    def primary(self) -> list[float]:
        return self.runstate if self.runstate is not None else self.cpu

    @property
    def max_err_pp(self) -> float:
        return max(abs(s - i) * 100 for s, i in zip(self.primary, IDEAL, strict=True))


def _shares(values: Sequence[float]) -> list[float]:
    total = sum(values)
    return [v / total if total > 0 else float("nan") for v in values]


def fairness(sched: str | None, cpu: int, warm: float, secs: float) -> Fairness:
    r = Run(sched, cpu)
    hog_secs = math.ceil(warm + secs) + 1  # the hogs spin past the measurement window
    doms = [r.domain("hog", f"secs={hog_secs}") for _ in WEIGHTS]
    for d, w in zip(doms, WEIGHTS, strict=True):
        if sched in ("credit2", "credit"):
            r.set_params(d, {"weight": w})
        elif sched == "rtds":
            r.set_params(d, {"period": RTDS_FAIR_PERIOD_US, "budget": RTDS_FAIR_BUDGET_US[w],
                             "extratime": 0})
    for d, w in zip(doms, WEIGHTS, strict=True):
        r.start(d, nice=HOST_NICE[w])
    time.sleep(warm)

    def sample() -> tuple[int, list[int], list[int], list[int]]:
        t = time.monotonic_ns()
        disp = r.dispatcher
        counts = ([disp.decisions, len(r.pick_ns), len(r.lag_ns), len(disp.timer_lag),
                   len(disp.exit_lag)] if disp is not None else [0] * 5)
        return (t, [running_ns(r, d) for d in doms], [thread_cpu_ns(d) for d in doms],
                counts)

    t0, run0, cpu0, n0 = sample()
    time.sleep(secs)
    t1, run1, cpu1, n1 = sample()
    out = r.finish(doms, "hog", timeout=hog_secs + 120)
    wall = (t1 - t0) / 1e9
    cpu_used = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    iters = [int(r.guest_line(out, d, "hog:")["iterations"]) for d in doms]
    label = sched or "host kernel"
    res = Fairness(label, wall, None, _shares(cpu_used), _shares(iters),
                   sum(cpu_used) / 1e9 / wall)
    if r.dispatcher is not None:
        res.runstate = _shares([b - a for a, b in zip(run0, run1, strict=True)])
        res.decisions_per_s = (n1[0] - n0[0]) / wall
        res.pick_ns = r.pick_ns[n0[1]:n1[1]]
        res.lag_ns = r.lag_ns[n0[2]:n1[2]]
        res.timer_lag_ns = r.dispatcher.timer_lag[n0[3]:n1[3]]
        res.exit_lag_ns = r.dispatcher.exit_lag[n0[4]:n1[4]]
    return res


# -- (b) wake-up latency ----------------------------------------------------------------


@dataclass
class Latency:
    label: str
    count: int  # timer events the guest handled
    guest_median_ns: float
    guest_p99_ns: float
    guest_max_ns: float
    wake_to_run: list[int] | None  # host side, from the trace (pyxen schedulers)
    cpu: float  # the timer vCPU thread's CPU time / wall time, mid-run
    held: float  # its runstate "running" time / wall time, mid-run


def wake_to_run(events: Sequence[tuple[Any, ...]], domid: int, vcpu: int = 0) -> list[int]:
    """ns from each "wake" of d<domid>v<vcpu> to its next "run", from a trace snapshot."""
    wake, run = kind_code("wake"), kind_code("run")
    samples: list[int] = []
    woke: int | None = None
    for ev in events:
        if ev[T_DOMID] != domid or ev[T_VCPU] != vcpu:
            continue
        if ev[T_KIND] == wake:
            woke = ev[T_TIME]
        elif ev[T_KIND] == run and woke is not None:
            samples.append(ev[T_TIME] - woke)
            woke = None
    return samples


def latency(sched: str | None, cpu: int, secs: int, nr_hogs: int = 3,
            sched_params: dict[str, Any] | None = None) -> Latency:
    r = Run(sched, cpu, sched_params)
    # The hogs outlast the timer guest; finish() destroys them when it ends.
    hogs = [r.domain("hog", f"secs={secs + 600}") for _ in range(nr_hogs)]
    timer = r.domain("timer", f"secs={secs}")
    if sched == "rtds":
        r.set_params(timer, RTDS_TIMER)
        for d in hogs:
            r.set_params(d, RTDS_HOG)
    elif sched is not None:
        r.set_params(timer, {"weight": TIMER_WEIGHT})
        for d in hogs:
            r.set_params(d, {"weight": LAT_HOG_WEIGHT})
    for d in hogs:
        r.start(d, nice=LAT_HOG_NICE)
    if hogs:
        time.sleep(0.5)  # the hogs are spinning
    if r.trace is not None:
        r.trace.start()
    r.start(timer, nice=TIMER_NICE)
    # The timer vCPU's thread CPU time over the middle of its run (its demand, when
    # it keeps up): one sample after 1 s, one 1 s before its end.
    time.sleep(1)
    c0, h0, t0 = thread_cpu_ns(timer), running_ns(r, timer), time.monotonic_ns()
    time.sleep(max(secs - 2, 1))
    c1, h1, t1 = thread_cpu_ns(timer), running_ns(r, timer), time.monotonic_ns()
    timer.wait(secs + 120)
    events = []
    if r.trace is not None:
        r.trace.stop()
        events = r.trace.snapshot()
    out = r.finish([timer], "timer")
    kv = r.guest_line(out, timer, "timer: count=")
    label = ((sched or "host kernel") + ("" if nr_hogs else ", no hogs")
             + "".join(f", {k}={v}" for k, v in (sched_params or {}).items()))
    return Latency(label, int(kv["count"]),
                   float(kv["late_median_us"]) * 1000, float(kv["late_p99_us"]) * 1000,
                   float(kv["late_max_us"]) * 1000,
                   wake_to_run(events, timer.domid) if sched is not None else None,
                   (c1 - c0) / (t1 - t0), (h1 - h0) / (t1 - t0))


# -- (c) decision cost ------------------------------------------------------------------


OVERHEAD_PCPUS = (1, 2, 4)
OVERHEAD_VCPUS_PER_PCPU = 4
MIN_DECISIONS = 100  # fewer samples than this: no figures


def overhead(name: str, nr_pcpus: int, duration: int) -> Overhead:
    make: Callable[[list[int]], Scheduler]
    if name == "rr":
        make = RoundRobin
    else:
        cls = SCHEDULERS[name]

        def make(pcpus: list[int]) -> Scheduler:
            return cls(pcpus, Topology.flat(pcpus))

    return decision_overhead(make, nr_pcpus, OVERHEAD_VCPUS_PER_PCPU * nr_pcpus, duration)


# -- report -----------------------------------------------------------------------------


def us(ns: float) -> str:
    if math.isnan(ns):
        return "-"
    return f"{ns / 1000:,.1f}" if ns < 10_000_000 else f"{ns / 1000:,.0f}"


def met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def trio(shares: Sequence[float] | None) -> str:
    if shares is None:
        return f"{'-':>7}{'-':>7}{'-':>7}"
    return "".join(f"{s * 100:>6.1f}%" for s in shares)


def report_fairness(rows: list[Fairness], cpu: int, warm: float, secs: float) -> None:
    print(f"(a) fairness: three hogs, weights 256:512:1024, on host CPU {cpu}; shares over "
          f"{secs:g} s after a {warm:g} s warm-up")
    print(f"{'':<13}{'runstate':^21} {'thread CPU':^21} {'guest iterations':^21}"
          f"{'max err':>9}  goal")
    print(f"{'scheduler':<13}{'w256   w512  w1024':>21} {'w256   w512  w1024':>21} "
          f"{'w256   w512  w1024':>21}{'pp':>9}")
    print(f"{'ideal':<13}{trio(IDEAL)} {trio(IDEAL)} {trio(IDEAL)}")
    for f in rows:
        print(f"{f.label:<13}{trio(f.runstate)} {trio(f.cpu)} {trio(f.guest)}"
              f"{f.max_err_pp:>9.1f}  {met(f.max_err_pp <= SHARE_GOAL_PP)}")
    print("    runstate: the time each vCPU held the pCPU; thread CPU: its thread's CPU clock; "
          "guest: the hogs' iteration counts (whole run, boot and warm-up included); max err: "
          "on the runstate shares (host kernel: thread CPU)")
    cfs = [CFS_WEIGHT[HOST_NICE[w]] for w in WEIGHTS]
    print(f"    host kernel: threads reniced {'/'.join(str(HOST_NICE[w]) for w in WEIGHTS)} "
          f"(CFS weights {'/'.join(map(str, cfs))}: its own target "
          f"{'/'.join(f'{s * 100:.1f}%' for s in _shares(cfs))}); rtds: budgets "
          f"{'/'.join(str(RTDS_FAIR_BUDGET_US[w]) for w in WEIGHTS)} us every "
          f"{RTDS_FAIR_PERIOD_US} us, no extratime")
    print()
    print(f"{'':<13}{'hogs':>6}{'decisions':>10}{'pick_next us':^16}"
          f"{'slice end -> re-pick us':^24}{'of which: timer':^16}{'request -> out':^16}")
    print(f"{'scheduler':<13}{'CPU':>6}{'per s':>10}" + f"{'median':>8}{'p99':>8}" * 2
          + f"{'max':>8}" + f"{'median':>8}{'p99':>8}" * 2)

    def cells(values: list[int], with_max: bool = False) -> str:
        if not values:
            return f"{'-':>8}" * (3 if with_max else 2)
        text = f"{us(statistics.median(values)):>8}{us(pct(values, 0.99)):>8}"
        return text + (f"{us(max(values)):>8}" if with_max else "")

    for f in rows:
        dps = "-" if math.isnan(f.decisions_per_s) else f"{f.decisions_per_s:,.0f}"
        print(f"{f.label:<13}{f.busy * 100:>5.0f}%{dps:>10}{cells(f.pick_ns)}"
              f"{cells(f.lag_ns, True)}{cells(f.timer_lag_ns)}{cells(f.exit_lag_ns)}")
    print("    hogs CPU: the three threads' CPU time over wall time (100% = the whole host "
          "CPU); pick_next: real time of each decision inside the dispatcher (GIL hand-offs "
          "included); slice end -> re-pick: how long after a slice's end the pCPU decided "
          "again, of which the slice timer's lateness and then the vCPU's reaction to the "
          "preemption request (signal, leaving KVM_RUN, its thread scheduled)")
    c2 = next((f for f in rows if f.label == "credit2"), None)
    if c2 is not None:
        print(f"    goal: Credit2's shares within {SHARE_GOAL_PP:g} percentage points of "
              f"1/7:2/7:4/7 -> {met(c2.max_err_pp <= SHARE_GOAL_PP)} "
              f"(max error {c2.max_err_pp:.1f} pp)")


def report_latency(rows: list[Latency], cpu: int, secs: int) -> None:
    print(f"(b) wake-up latency: timer.elf (VIRQ_TIMER every 1 ms) beside three hogs on host "
          f"CPU {cpu}, {secs} s per scheduler")
    print(f"{'':<26}{'timer vCPU':^20}{'guest: lateness us':^33}{'host: wake -> run us':^40}")
    print(f"{'scheduler':<26}{'CPU':>6}{'held':>6}{'events':>8}{'median':>11}{'p99':>11}"
          f"{'max':>11}{'wakes':>7}{'median':>11}{'p99':>11}{'max':>11}")
    for lat in rows:
        w = lat.wake_to_run
        host = (f"{len(w):>7}{us(statistics.median(w)):>11}{us(pct(w, 0.99)):>11}"
                f"{us(max(w)):>11}" if w else f"{'-':>7}" + f"{'-':>11}" * 3)
        print(f"{lat.label:<26}{lat.cpu * 100:>5.0f}%{lat.held * 100:>5.0f}%{lat.count:>8}"
              f"{us(lat.guest_median_ns):>11}{us(lat.guest_p99_ns):>11}"
              f"{us(lat.guest_max_ns):>11}{host}")
    print("    CPU: the timer vCPU thread's CPU time, held: its runstate 'running' time (with a "
          "dispatcher: holding the pCPU; host kernel: not blocked), both over wall time "
          f"mid-run; events: ticks the guest handled (at most {secs * 1000}); guest lateness: "
          "deadline -> handler (pvclock; 10 us bins below 1 ms, 1 ms bins to 100 ms, then "
          "100 ms; a guest that falls behind stays behind, its deadlines advance by 1 ms); "
          "host: each scheduler 'wake' of the timer vCPU -> its next 'run' (trace)")
    print(f"    the timer domain's share exceeds its demand: weight {TIMER_WEIGHT} vs "
          f"{LAT_HOG_WEIGHT} per hog; host kernel nice {TIMER_NICE} vs {LAT_HOG_NICE}; rtds "
          f"{RTDS_TIMER['budget']} us every {RTDS_TIMER['period']} us vs {RTDS_HOG['budget']} "
          f"us every {RTDS_HOG['period']} us per hog, extratime on; 'no hogs': the timer "
          "guest alone, the floor; ratelimit_us=0: Credit2 without its default 1000 us "
          "ratelimit (a wake-up preempts a hog only once it ran 950 us)")
    by = {lat.label: lat for lat in rows}
    c2, c1 = by.get("credit2"), by.get("credit")
    if c2 is None or c1 is None:
        return
    for what, a, b in (
            ("host wake -> run", pct(c2.wake_to_run or [], 0.99),
             pct(c1.wake_to_run or [], 0.99)),
            ("guest lateness", c2.guest_p99_ns, c1.guest_p99_ns)):
        print(f"    goal ({what}): Credit2's p99 {us(a)} us below Credit's {us(b)} us -> "
              f"{met(a < b)}; at most {LATENCY_GOAL_NS // 1000:,} us -> "
              f"{met(a <= LATENCY_GOAL_NS)}")


def report_overhead(rows: dict[tuple[str, int], Overhead]) -> None:
    print(f"(c) decision cost: real us per pick_next in the simulator (hogs, periodic and "
          f"bursty vCPUs, {OVERHEAD_VCPUS_PER_PCPU} per pCPU); 'x rr': median over the "
          "round-robin reference's")
    header = "".join(f"{f'{n} pCPU' + ('s' if n > 1 else ''):^28}" for n in OVERHEAD_PCPUS)
    print(f"{'':<13}{header}")
    print(f"{'scheduler':<13}" + f"{'median':>8}{'p99':>8}{'x rr':>6}{'n':>6}" *
          len(OVERHEAD_PCPUS))
    for name in ("credit2", "credit", "rtds", "null", "rr"):
        cells = []
        for n in OVERHEAD_PCPUS:
            o, ref = rows[(name, n)], rows[("rr", n)]
            if o.decisions < MIN_DECISIONS:
                cells.append(f"{'-':>8}{'-':>8}{'-':>6}{o.decisions:>6}")
                continue
            cells.append(f"{us(o.median_ns):>8}{us(o.p99_ns):>8}"
                         f"{o.median_ns / ref.median_ns:>6.1f}{o.decisions:>6}")
        print(f"{name if name != 'rr' else 'rr (ref)':<13}" + "".join(cells))
    print(f"    '-': fewer than {MIN_DECISIONS} decisions (null gives each pCPU to one vCPU "
          "for good: with the hogs first in line it hardly decides)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--secs", type=float, default=5, help="fairness measurement window (s)")
    ap.add_argument("--warm", type=float, default=1, help="fairness warm-up (s)")
    ap.add_argument("--lat-secs", type=int, default=4, help="timer guest run per scheduler (s)")
    ap.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                    help="the host CPU to schedule on (default: the highest allowed)")
    ap.add_argument("--parts", default="abc", help="which parts to run (a, b, c)")
    args = ap.parse_args()
    if args.cpu not in os.sched_getaffinity(0):
        sys.exit(f"CPU {args.cpu} is not available to this process")
    build_guests()
    install_kick_handler()
    fair: list[Fairness] = []
    lats: list[Latency] = []
    costs: dict[tuple[str, int], Overhead] = {}
    t_start = time.monotonic()
    try:
        if "a" in args.parts:
            for sched in ("credit2", "credit", "rtds", None):
                progress(f"(a) fairness under {sched or 'the host kernel'} ...")
                fair.append(fairness(sched, args.cpu, args.warm, args.secs))
        if "b" in args.parts:
            for sched in ("credit2", "credit", "rtds", None):
                progress(f"(b) latency under {sched or 'the host kernel'} ...")
                lats.append(latency(sched, args.cpu, args.lat_secs))
            progress("(b) latency under credit2 without its ratelimit ...")
            lats.append(latency("credit2", args.cpu, args.lat_secs,
                                sched_params={"ratelimit_us": 0}))
            for sched in ("credit2", None):
                progress(f"(b) latency, the timer guest alone under "
                         f"{sched or 'the host kernel'} ...")
                lats.append(latency(sched, args.cpu, args.lat_secs, nr_hogs=0))
        if "c" in args.parts:
            progress("(c) decision cost ...")
            for name in ("credit2", "credit", "rtds", "null", "rr"):
                for n in OVERHEAD_PCPUS:
                    costs[(name, n)] = overhead(name, n, 5 * SECOND)
    except BenchError as e:
        print(f"benchmark failed:\n{e}", file=sys.stderr)
        return 1

    print()
    print("pyxen scheduler benchmark (one run; references: the ideal shares and the host "
          "kernel's scheduler, same run)")
    print(f"host: {os.cpu_count()} CPUs, load average "
          f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{time.monotonic() - t_start:.0f} s of measurements")
    if fair:
        print()
        report_fairness(fair, args.cpu, args.warm, args.secs)
    if lats:
        print()
        report_latency(lats, args.cpu, args.lat_secs)
    if costs:
        print()
        report_overhead(costs)
    figures: dict[str, float | None] = {}
    ratios: dict[str, float | None] = {}
    for f in fair:
        figures[f"fair {f.label} busy"] = f.busy
        for i, share in enumerate(f.cpu):
            figures[f"fair {f.label} cpu share {i}"] = share
    for lat in lats:
        figures[f"latency {lat.label} guest p99 ns"] = lat.guest_p99_ns
    host = next((lat for lat in lats if lat.label == "host kernel"), None)
    for lat in lats:
        if host is not None and host.guest_p99_ns > 0:
            ratios[f"latency {lat.label} p99/host"] = lat.guest_p99_ns / host.guest_p99_ns
    for (name, n), o in costs.items():
        ref = costs[("rr", n)]
        figures[f"pick_next {name} {n}p median ns"] = o.median_ns
        if o.decisions >= MIN_DECISIONS and ref.median_ns:
            ratios[f"pick_next {name} {n}p/rr"] = o.median_ns / ref.median_ns
    history.record("sched", figures, ratios, unit="mixed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
