#!/usr/bin/env python3
"""Event and timer benchmark: latencies and idle cost, beside a raw KVM exit.

    python3 bench/events.py [--n 3000] [--secs 2]

Runs, in this order, in one process (the hypervisor runs in-process through
pyxen's Python API, so its CPU time can be read with getrusage):

    C bare / C syncregs   kvm_exit_ref: the raw KVM exit round trip (reference)
    ipi                   guests/build/ipi.elf, 2 vCPUs: event send -> upcall
                          between vCPUs (one-way and round trip, from pvclock)
    interdomain           two pingpong.elf domains: round trip between domains
    fifo 2-level / FIFO   guests/build/fifo.elf mode=bench, 2 vCPUs: the same IPI
                          round trip code on the 2-level ABI, then on the FIFO ABI
    timer                 timer.elf: VIRQ_TIMER re-armed every 1 ms (guest-measured
                          lateness) plus the host-side part (deadline -> timer
                          callback, deadline -> KVM_INTERRUPT)
    idle                  idle.elf blocked for --secs with no timer, and with a
                          100 Hz periodic timer: host CPU used (% of one CPU)

Guest-measured figures include the guest's own instructions, which this
nested, emulating KVM runs at about 1 us each; the host-side timer figures
and the exit reference show what pyxen itself adds.  Only ratios within one
run are comparable (see bench/README.md).
"""

from __future__ import annotations

import argparse
import io
import re
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(BENCH))

import history  # noqa: E402
from hypercall import BenchError, build, run_c  # noqa: E402

from pyxen.hv import event_channel  # noqa: E402
from pyxen.hv.builder import BuildSpec, build_domain  # noqa: E402
from pyxen.hv.domain import Domain  # noqa: E402
from pyxen.hv.hypervisor import Hypervisor  # noqa: E402
from pyxen.hv.vcpu import install_kick_handler  # noqa: E402

GUEST_BUILD = ROOT / "guests" / "build"


def _kv(line: str) -> dict[str, str]:
    return dict(tok.split("=", 1) for tok in line.split() if "=" in tok)


class Run:
    """A hypervisor with captured output, for one measurement."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        self.log = io.StringIO()
        self.hv = Hypervisor(self.out, self.log, realtime_timers=True)  # as the daemon

    def domain(self, prog: str, cmdline: str, vcpus: int = 1, domid: int | None = None
               ) -> Domain:
        spec = BuildSpec(name=prog, kernel=GUEST_BUILD / f"{prog}.elf", cmdline=cmdline,
                         memory_mib=16, maxmem_mib=16, vcpus=vcpus, maxvcpus=vcpus,
                         domid=domid)
        return build_domain(self.hv, spec)

    def finish(self, domains: list[Domain], prog: str, timeout: float = 600) -> str:
        end = time.monotonic() + timeout
        for d in domains:
            d.wait(max(end - time.monotonic(), 0))
        out = self.out.getvalue()
        self.hv.close()
        if out.count(f"RESULT {prog}: PASS") != len(domains):
            raise BenchError(f"{prog} did not pass:\n{out}\n{self.log.getvalue()}")
        return out

    def info(self, out: str, pattern: str) -> dict[str, str]:
        m = re.search(pattern, out, re.M)
        if not m:
            raise BenchError(f"no line matching {pattern!r} in:\n{out}")
        return _kv(m.group(0))


class SendToInject:
    """Host-side latency: EVTCHNOP_send handled -> callback vector injected.

    Only one event is in flight in a ping-pong, so the last send pairs with
    the next injection.  Hooks the module function the hypercall calls and
    each vCPU's KVM_INTERRUPT wrapper.
    """

    def __init__(self, hv: Hypervisor) -> None:
        self.hv = hv
        self.samples: list[int] = []
        self._sent: int | None = None
        self._real_send = event_channel.send
        event_channel.send = self._send  # type: ignore[assignment]

    def _send(self, *args: Any) -> None:
        self._sent = self.hv.system_time_ns()
        self._real_send(*args)

    def watch(self, domain: Domain) -> None:
        for vcpu in domain.vcpus:
            real: Callable[[int], None] = vcpu.kvm.inject_interrupt

            def inject(vector: int, real: Callable[[int], None] = real) -> None:
                if self._sent is not None:
                    self.samples.append(self.hv.system_time_ns() - self._sent)
                    self._sent = None
                real(vector)

            vcpu.kvm.inject_interrupt = inject  # type: ignore[method-assign]

    def close(self) -> None:
        event_channel.send = self._real_send


def bench_ipi(n: int) -> tuple[dict[str, str], list[int]]:
    r = Run()
    d = r.domain("ipi", f"n={n}", vcpus=2)
    probe = SendToInject(r.hv)
    probe.watch(d)
    d.start()
    try:
        return r.info(r.finish([d], "ipi"), r"ipi: n=\d+ rtt_median_ns=.*$"), probe.samples
    finally:
        probe.close()


def bench_interdomain(n: int) -> tuple[dict[str, str], list[int]]:
    r = Run()
    ping_id, pong_id = r.hv.allocate_domid(), r.hv.allocate_domid()
    ping = r.domain("pingpong", f"role=ping peer={pong_id} n={n}", domid=ping_id)
    with r.hv.event_lock:
        port = event_channel.alloc_unbound(ping, pong_id)
    pong = r.domain("pingpong", f"role=pong peer={ping_id} port={port}", domid=pong_id)
    probe = SendToInject(r.hv)
    probe.watch(ping)
    probe.watch(pong)
    ping.start()
    pong.start()
    try:
        out = r.finish([ping, pong], "pingpong")
        return r.info(out, r"pingpong: n=\d+ rtt_median_ns=.*$"), probe.samples
    finally:
        probe.close()


def bench_fifo_abi(n: int, abi: str) -> tuple[dict[str, str], list[int]]:
    """fifo.elf's inter-vCPU IPI round trips on one event ABI ("2l" or "fifo")."""
    r = Run()
    d = r.domain("fifo", f"mode=bench abi={abi} n={n}", vcpus=2)
    probe = SendToInject(r.hv)
    probe.watch(d)
    d.start()
    try:
        return r.info(r.finish([d], "fifo"), rf"fifo: abi={abi} n=\d+ .*$"), probe.samples
    finally:
        probe.close()


def bench_timer(secs: int) -> tuple[dict[str, str], list[int], list[int]]:
    """Guest-side lateness, and host-side: deadline -> callback, deadline -> injection."""
    r = Run()
    d = r.domain("timer", f"secs={secs}")
    hv = r.hv
    deadlines: dict[int, int] = {}
    fired: list[int] = []
    injected: list[int] = []
    pending: list[int] = []
    timer = d.vcpus[0].time.singleshot
    service = hv.timers
    real_arm = service._arm

    def arm(t: object, deadline: int) -> None:
        if t is timer:
            deadlines[0] = deadline
        real_arm(t, deadline)  # type: ignore[arg-type]

    real_callback = timer.callback

    def callback() -> None:
        now = hv.system_time_ns()
        fired.append(now - deadlines[0])
        pending.append(deadlines[0])
        real_callback()

    kvm = d.vcpus[0].kvm
    real_inject: Callable[[int], None] = kvm.inject_interrupt

    def inject(vector: int) -> None:
        if pending:
            injected.append(hv.system_time_ns() - pending.pop())
        real_inject(vector)

    service._arm = arm  # type: ignore[method-assign]
    timer.callback = callback
    kvm.inject_interrupt = inject  # type: ignore[method-assign]
    d.start()
    out = r.finish([d], "timer")
    return r.info(out, r"timer: count=.*$"), fired, injected


def bench_idle(secs: int, hz: int) -> dict[str, float]:
    r = Run()
    d = r.domain("idle", f"secs={secs} hz={hz}")
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    d.start()
    d.wait(secs + 60)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    out = r.finish([d], "idle")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ticks = int(r.info(out, r"idle: secs=.*$")["ticks"])
    running_ms = int(r.info(out, r"idle: elapsed_ms=.*$")["running_ms"])
    return {"cpu_pct": 100 * cpu / wall, "wall": wall, "ticks": ticks,
            "cpu_per_tick_us": (cpu / ticks * 1e6) if ticks else 0.0,
            "running_pct": 100 * running_ms / 1000 / wall}


def bench_thread_wakeup(samples: int = 300) -> list[int]:
    """Reference: how late a plain Python thread wakes from a 1 ms timed wait."""
    event = threading.Event()
    late = []
    for _ in range(samples):
        start = time.monotonic_ns()
        event.wait(0.001)
        late.append(time.monotonic_ns() - start - 1_000_000)
    return late


def pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="round trips per latency run")
    ap.add_argument("--secs", type=int, default=2, help="seconds of timer and idle runs")
    args = ap.parse_args()
    build()
    install_kick_handler()
    try:
        ref_bare = statistics.median(run_c("bare", 20000, 1000)["ns"] for _ in range(3))
        ref_sync = statistics.median(run_c("syncregs", 20000, 1000)["ns"] for _ in range(3))
        print("measuring ipi ...", file=sys.stderr, flush=True)
        ipi, ipi_host = bench_ipi(args.n)
        print("measuring interdomain ...", file=sys.stderr, flush=True)
        inter, inter_host = bench_interdomain(args.n)
        print("measuring fifo.elf on 2-level, then on FIFO ...", file=sys.stderr, flush=True)
        abi_2l, abi_2l_host = bench_fifo_abi(args.n, "2l")
        abi_fifo, abi_fifo_host = bench_fifo_abi(args.n, "fifo")
        print("measuring timer ...", file=sys.stderr, flush=True)
        timer, fired, injected = bench_timer(args.secs)
        wakeup = bench_thread_wakeup()
        print("measuring idle ...", file=sys.stderr, flush=True)
        idle0 = bench_idle(args.secs, 0)
        idle100 = bench_idle(args.secs, 100)
    except BenchError as e:
        print(f"benchmark failed:\n{e}", file=sys.stderr)
        return 1

    def us(ns: str | float) -> str:
        return f"{float(ns) / 1000:,.1f}"

    print()
    print("pyxen event and timer benchmark (one run; compare ratios, not absolute times)")
    print(f"reference 1: C program, one port-I/O exit round trip plus its 15-instruction "
          f"guest loop: bare {us(ref_bare)} us, with sync regs {us(ref_sync)} us "
          "(the '/ exit' column)")
    print(f"reference 2: a Python thread waking from a 1 ms timed wait is late by "
          f"{us(statistics.median(wakeup))} us median, {us(pct(wakeup, 0.99))} us p99")
    print()
    print(f"{'what':<44}{'median us':>12}{'p99 us':>10}{'/ exit':>9}")
    rows = [
        ("event send->upcall, between vCPUs (one-way)",
         ipi["oneway_median_ns"], ipi["oneway_p99_ns"]),
        ("  host: send handled -> vector injected",
         statistics.median(ipi_host), pct(ipi_host, 0.99)),
        ("event round trip, between vCPUs", ipi["rtt_median_ns"], ipi["rtt_p99_ns"]),
        ("event round trip, between domains", inter["rtt_median_ns"], inter["rtt_p99_ns"]),
        ("  host: send handled -> vector injected",
         statistics.median(inter_host), pct(inter_host, 0.99)),
        ("fifo.elf round trip, vCPUs, 2-level ABI", abi_2l["rtt_median_ns"],
         abi_2l["rtt_p99_ns"]),
        ("  host: send handled -> vector injected",
         statistics.median(abi_2l_host), pct(abi_2l_host, 0.99)),
        ("fifo.elf round trip, vCPUs, FIFO ABI", abi_fifo["rtt_median_ns"],
         abi_fifo["rtt_p99_ns"]),
        ("  host: send handled -> vector injected",
         statistics.median(abi_fifo_host), pct(abi_fifo_host, 0.99)),
        ("VIRQ_TIMER lateness at 1 kHz (guest-measured)",
         float(timer["late_median_us"]) * 1000, float(timer["late_p99_us"]) * 1000),
        ("  host: deadline -> timer callback",
         statistics.median(fired), pct(fired, 0.99)),
        ("  host: deadline -> callback vector injected",
         statistics.median(injected) if injected else float("nan"), pct(injected, 0.99)),
    ]
    for label, med, p99 in rows:
        print(f"{label:<44}{us(med):>12}{us(p99):>10}{float(med) / ref_sync:>9.1f}")
    print()
    print(f"FIFO / 2-level, same guest code: round trip median "
          f"{float(abi_fifo['rtt_median_ns']) / float(abi_2l['rtt_median_ns']):.2f}, mean "
          f"{float(abi_fifo['mean_rtt_us']) / float(abi_2l['mean_rtt_us']):.2f}, host send -> "
          f"inject median {statistics.median(abi_fifo_host) / statistics.median(abi_2l_host):.2f}")
    print(f"timer: {timer['count']} events in {args.secs} s, max lateness "
          f"{timer['late_max_us']} us (guest)")
    for label, res in (("idle guest, blocked, no timer", idle0),
                       ("idle guest, 100 Hz periodic timer", idle100)):
        print(f"{label:<44} host CPU {res['cpu_pct']:5.2f}% of one CPU over "
              f"{res['wall']:.1f} s, {res['ticks']} ticks, "
              f"{res['cpu_per_tick_us']:,.0f} us CPU per tick "
              f"({res['cpu_per_tick_us'] * 1000 / ref_sync:,.1f} exits); the guest's "
              f"runstate shows it running {res['running_pct']:.2f}% of the time")
    history.record(
        "events",
        {"exit_ref_sync_ns": float(ref_sync),
         **{label.strip(): float(med) for label, med, _p99 in rows},
         "idle_cpu_pct": float(idle0["cpu_pct"]), "idle_100hz_cpu_pct": float(idle100["cpu_pct"])},
        {f"{label.strip()}/exit": float(med) / ref_sync for label, med, _p99 in rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
