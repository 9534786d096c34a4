#!/usr/bin/env python3
"""Scale and footprint: many idle PVH domains in one hypervisor daemon.

    python3 bench/scale.py [--domains 200] [--memory 8] [--idle 10] [--big 16384]

Starts a `pyxen hypervisor` daemon (Credit2, as Xen's default) in a
scratch run directory and measures, from /proc/<pid>:

1. creation time against memory size: the create operation (control
   socket round trip, domain built and started) for a --memory MiB guest
   and for a --big MiB one, three of each, alternating; the ratio of the
   medians (goal: within 1.2x, i.e. creation does not touch guest memory);
   in the same alternation QEMU microvm boots guests/build/hello.elf with
   the two sizes (spawn -> first byte), so that the memory-dependent part
   of creation (big minus small) can be set against a C VMM's on this host
   (skipped without qemu-system-x86_64);
2. --domains idle domains (guests/build/idle.elf, which arms one timer an
   hour ahead and halts): the time to create them all, then, once every
   vCPU is blocked and after SETTLE_SECONDS more (xenstored finishing
   the introductions), the CPU use of the daemon and its service processes
   (xenstored, consoled) over --idle seconds as a share of one core
   (goal < 5%), and its memory, threads and fds per domain against
   the baseline before the first create: RSS split as /proc reports it --
   anonymous (the daemon's own Python objects and stacks: Firecracker's
   <= 5 MiB per VM bar applies to this), file (code) and shmem (guest RAM,
   a memfd per domain: only the pages the guests touched);
3. destroy of them all: fds, threads and anonymous RSS compared with the
   baseline (RSS may stay above it by what Python's allocator keeps: its
   arenas are released only when wholly empty);
4. a second round of as many creates and destroys: what it adds is what a
   leak would add (the first round's allocator high-water marks stay).

Only ratios and per-domain differences measured in this run mean much;
absolute times move from run to run on these shared machines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SRC = ROOT / "src"
IDLE = ROOT / "guests" / "build" / "idle.elf"
HELLO = ROOT / "guests" / "build" / "hello.elf"
sys.path.insert(0, str(SRC))

import history  # noqa: E402
from reference import qemu_binary, qemu_microvm  # noqa: E402

from pyxen.control.client import ControlClient  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
GOAL_DOMAINS = 200
GOAL_IDLE_CPU = 0.05
GOAL_ANON_PER_DOMAIN_MIB = 5.0
GOAL_MEMORY_FLAT = 1.2
SETTLE_SECONDS = 10.0
MEMORY_ROUNDS = 5


class Proc:
    """What /proc says about one process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def status(self) -> dict[str, int]:
        """VmRSS, RssAnon, RssFile, RssShmem (KiB) and Threads."""
        out: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
                out[key] = int(value.split()[0])
        return out

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def family(self) -> list[int]:
        """The process and its live descendants (xenstored, consoled and the
        backends are part of the hypervisor)."""
        stats = _all_stats()
        family = {self.pid}
        grew = True
        while grew:
            grew = False
            for pid, (ppid, _) in stats.items():
                if ppid in family and pid not in family:
                    family.add(pid)
                    grew = True
        return sorted(pid for pid in family if pid in stats)

    def cpu_seconds(self) -> float:
        """utime + stime of the whole family."""
        return sum(self.cpu_by_member().values())

    def cpu_by_member(self) -> dict[str, float]:
        """utime + stime of each member of the family, by its name (the daemon is
        "hypervisor", a service its module's last word, e.g. "xenstored")."""
        stats = _all_stats()
        out: dict[str, float] = {}
        for pid in self.family():
            if pid in stats:
                name = "hypervisor" if pid == self.pid else _service_name(pid)
                out[name] = out.get(name, 0.0) + stats[pid][1] / CLK_TCK
        return out


    def sample(self) -> dict[str, float]:
        """The daemon's figures, and ``family_*`` sums over it and its services."""
        st = self.status()
        out: dict[str, float] = {
            "rss_kib": st["VmRSS"], "anon_kib": st["RssAnon"], "file_kib": st["RssFile"],
            "shmem_kib": st["RssShmem"], "threads": st["Threads"], "fds": self.fds(),
            "family_anon_kib": 0, "family_threads": 0, "family_fds": 0}
        for pid in self.family():
            try:
                member = Proc(pid)
                mst = member.status()
                out["family_anon_kib"] += mst["RssAnon"]
                out["family_threads"] += mst["Threads"]
                out["family_fds"] += member.fds()
            except (OSError, KeyError):
                continue  # gone meanwhile
        return out


def _service_name(pid: int) -> str:
    """The service a process runs (`python -m pyxen.services.xenstored` -> xenstored)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    for word in argv:
        if word.startswith(b"pyxen."):
            return word.decode(errors="replace").rsplit(".", 1)[-1]
    return str(pid)


def _all_stats() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime + stime in ticks) for every process."""
    out: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        out[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


class Daemon:
    def __init__(self, base: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"]
                                        if env.get("PYTHONPATH") else "")
        self.run_dir = base / "run"
        self.log = base / "hypervisor.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyxen", "--run-dir", str(self.run_dir), "--log-dir",
             str(base / "log"), "hypervisor"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("wb"), env=env)
        deadline = time.monotonic() + 60
        while not (self.run_dir / "control.sock").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not start:\n{self.log.read_text()}")
            time.sleep(0.02)
        self.client = ControlClient(self.run_dir / "control.sock")
        self.info = Proc(self.proc.pid)

    def create(self, name: str, memory_mib: int) -> tuple[int, float]:
        t0 = time.monotonic()
        result = self.client.call("create", config={
            "name": name, "kernel": str(IDLE), "cmdline": "secs=3600",
            "memory_mib": memory_mib})
        return int(result["domid"]), time.monotonic() - t0

    def destroy(self, domid: int) -> None:
        self.client.call("destroy", domid=domid)

    def domains(self) -> list[dict[str, object]]:
        return [d for d in self.client.call("list") if d["domid"] != 0]

    def wait_all_blocked(self, n: int, timeout: float) -> float:
        """Seconds until all ``n`` domains' vCPUs are blocked, asked with ``list``.

        A full list costs the daemon ~37 us a domain (37 ms at 1000), so it is
        asked at most every n ms (every 0.2 s below 200 domains): asking every
        0.2 s at 1000 domains took a fifth of a core from the boot it measures."""
        t0 = time.monotonic()
        while True:
            doms = self.domains()
            if len(doms) == n and all(d["blocked"] for d in doms):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                running = [d["domid"] for d in doms if not d["blocked"]]
                raise SystemExit(f"after {timeout:.0f} s {len(doms)} domains, not blocked: "
                                 f"{running[:10]}")
            time.sleep(max(0.2, n / 1000))

    def wait_gone(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.domains():
            if time.monotonic() > deadline:
                raise SystemExit("domains left after destroy")
            time.sleep(0.1)

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def settle(info: Proc, seconds: float = 1.0) -> dict[str, float]:
    time.sleep(seconds)
    return info.sample()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", type=int, default=GOAL_DOMAINS)
    ap.add_argument("--memory", type=int, default=8, help="MiB per idle domain (default 8)")
    ap.add_argument("--big", type=int, default=16384, help="MiB of the big domain (default 16 GiB)")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU sampling")
    args = ap.parse_args()
    subprocess.run(["make", "-C", str(ROOT / "guests")], check=True, capture_output=True)
    base = Path(tempfile.mkdtemp(prefix="pyxen-scale-"))
    daemon = Daemon(base)
    figures: dict[str, float | None] = {}
    ratios: dict[str, float | None] = {}
    try:
        info = daemon.info
        base_sample = settle(info)

        # 1. creation time against memory size
        qemu = qemu_binary()
        small: list[float] = []
        big: list[float] = []
        qemu_small: list[float] = []
        qemu_big: list[float] = []
        for i in range(MEMORY_ROUNDS):
            for size, samples, qemu_samples in ((args.memory, small, qemu_small),
                                                (args.big, big, qemu_big)):
                domid, took = daemon.create(f"size{size}-{i}", size)
                samples.append(took)
                daemon.destroy(domid)
                daemon.wait_gone()
                if qemu is not None:
                    qemu_samples.append(qemu_microvm(qemu, HELLO, size))
        figures["create_small_ms"] = statistics.median(small) * 1000
        figures["create_big_ms"] = statistics.median(big) * 1000
        ratios["create_big/create_small"] = statistics.median(big) / statistics.median(small)
        memory_part = f"pyxen {figures['create_big_ms'] - figures['create_small_ms']:+.1f} ms"
        if qemu is not None:
            figures["qemu_small_ms"] = statistics.median(qemu_small) * 1000
            figures["qemu_big_ms"] = statistics.median(qemu_big) * 1000
            ratios["qemu_big/qemu_small"] = (statistics.median(qemu_big)
                                             / statistics.median(qemu_small))
            q_small, q_big = figures["qemu_small_ms"], figures["qemu_big_ms"]
            memory_part += (f", QEMU microvm {q_big - q_small:+.1f} ms ({q_small:.1f} -> "
                            f"{q_big:.1f} ms, ratio {ratios['qemu_big/qemu_small']:.2f})")
        print(f"create, {args.memory} MiB: {figures['create_small_ms']:.1f} ms; {args.big} MiB: "
              f"{figures['create_big_ms']:.1f} ms (medians of {MEMORY_ROUNDS}): ratio "
              f"{ratios['create_big/create_small']:.2f} (goal <= {GOAL_MEMORY_FLAT}); "
              f"cost of the larger memory: {memory_part}", file=sys.stderr)
        base_sample = settle(info)

        # 2. many idle domains
        boot_cpu0 = info.cpu_by_member()
        t0 = time.monotonic()
        created: list[int] = []
        times: list[float] = []
        try:
            for i in range(args.domains):
                domid, took = daemon.create(f"idle{i}", args.memory)
                created.append(domid)
                times.append(took)
                if (i + 1) % 50 == 0:
                    print(f"  {i + 1} domains, last create {took * 1000:.0f} ms, "
                          f"threads {info.status()['Threads']}", file=sys.stderr)
        except Exception as e:  # the limit: say where it was hit
            print(f"create #{len(created) + 1} failed: {e}", file=sys.stderr)
        all_created = time.monotonic() - t0
        n = len(created)
        blocked_after = daemon.wait_all_blocked(n, timeout=max(120.0, n * 1.0))
        boot_cpu = {k: v - boot_cpu0.get(k, 0.0) for k, v in info.cpu_by_member().items()}
        for name, seconds in boot_cpu.items():
            figures[f"boot_cpu_s_{name}"] = seconds
        # xenstored and the daemon's reconcile finish introducing the domains
        # (a few dozen xenstore writes each) after their vCPUs went idle.
        loaded = settle(info, SETTLE_SECONDS)
        cpu0 = info.cpu_by_member()
        w0 = time.monotonic()
        time.sleep(args.idle)
        cpu1 = info.cpu_by_member()
        wall = time.monotonic() - w0
        idle_by = {k: (v - cpu0.get(k, 0.0)) / wall for k, v in cpu1.items()}
        idle_cpu = sum(idle_by.values())
        for name, share in idle_by.items():
            figures[f"idle_cpu_share_{name}"] = share
        figures.update(domains=n, create_all_s=all_created, create_first_ms=times[0] * 1000,
                       create_last_ms=times[-1] * 1000, blocked_after_s=blocked_after,
                       idle_cpu_share=idle_cpu)
        per = {k: (loaded[k] - base_sample[k]) / max(n, 1) for k in loaded}
        for k, v in per.items():
            figures[f"per_domain_{k}"] = v
        ratios["idle_cpu_share_of_one_core"] = idle_cpu
        ratios["anon_mib_per_domain"] = per["family_anon_kib"] / 1024
        ratios["domains/goal"] = n / GOAL_DOMAINS

        # 3. destroy all
        t0 = time.monotonic()
        for domid in created:
            daemon.destroy(domid)
        daemon.wait_gone()
        destroy_all = time.monotonic() - t0
        after = settle(info, 2.0)
        figures["destroy_all_s"] = destroy_all
        for k in ("threads", "fds", "anon_kib", "rss_kib", "family_anon_kib", "family_fds"):
            figures[f"after_destroy_{k}_delta"] = after[k] - base_sample[k]

        # 4. the same again: what the first round left behind and a leak look alike
        # once; a leak grows again, the allocators' high-water marks do not.
        again = [daemon.create(f"again{i}", args.memory)[0] for i in range(n)]
        daemon.wait_all_blocked(n, timeout=max(120.0, n * 1.0))
        for domid in again:
            daemon.destroy(domid)
        daemon.wait_gone()
        after2 = settle(info, 2.0)
        for k in ("threads", "fds", "anon_kib", "family_anon_kib", "family_fds"):
            figures[f"second_round_{k}_delta"] = after2[k] - after[k]
    finally:
        daemon.close()
        shutil.rmtree(base, ignore_errors=True)

    print()
    print(f"pyxen scale: {n} idle PVH domains of {args.memory} MiB (idle.elf) in one daemon, "
          f"Credit2; this run only")
    print(f"  created in {all_created:.1f} s (first {figures['create_first_ms']:.0f} ms, last "
          f"{figures['create_last_ms']:.0f} ms); all vCPUs blocked {blocked_after:.1f} s later")
    print("  CPU from the first create until all were blocked: " + ", ".join(
        f"{name} {seconds:.1f} s" for name, seconds in
        sorted(boot_cpu.items(), key=lambda kv: -kv[1]) if seconds >= 0.05)
        + " (the hypervisor's includes its vCPU threads, the guests' own boot)")
    print(f"  daemon CPU while all idle: {idle_cpu * 100:.2f}% of one core "
          f"(goal < {GOAL_IDLE_CPU * 100:.0f}%): " + ", ".join(
              f"{name} {share * 100:.2f}%" for name, share in
              sorted(idle_by.items(), key=lambda kv: -kv[1]) if share > 0))
    print("  per domain, daemon:  " + ", ".join([
        f"anon RSS {per['anon_kib'] / 1024:.2f} MiB",
        f"file RSS {per['file_kib'] / 1024:.2f} MiB",
        f"shmem (guest RAM touched) {per['shmem_kib'] / 1024:.2f} MiB",
        f"threads {per['threads']:.2f}", f"fds {per['fds']:.2f}"]))
    print("  per domain, daemon + services:  " + ", ".join([
        f"anon RSS {per['family_anon_kib'] / 1024:.2f} MiB "
        f"(goal <= {GOAL_ANON_PER_DOMAIN_MIB})",
        f"threads {per['family_threads']:.2f}", f"fds {per['family_fds']:.2f}"]))
    print(f"  destroy of all: {destroy_all:.1f} s; left over against the baseline: "
          f"threads {after['threads'] - base_sample['threads']:+.0f}, "
          f"fds {after['fds'] - base_sample['fds']:+.0f}, "
          f"anon RSS {(after['anon_kib'] - base_sample['anon_kib']) / 1024:+.1f} MiB "
          "(with services "
          f"{(after['family_anon_kib'] - base_sample['family_anon_kib']) / 1024:+.1f}"
          f" MiB), fds with services {after['family_fds'] - base_sample['family_fds']:+.0f}")
    print(f"  a second round of {n} creates and destroys added: "
          f"threads {after2['threads'] - after['threads']:+.0f}, "
          f"fds with services {after2['family_fds'] - after['family_fds']:+.0f}, "
          f"anon RSS {(after2['anon_kib'] - after['anon_kib']) / 1024:+.1f} MiB "
          f"(with services {(after2['family_anon_kib'] - after['family_anon_kib']) / 1024:+.1f}"
          " MiB)")
    print(f"  create time, {args.big} MiB / {args.memory} MiB: "
          f"{ratios['create_big/create_small']:.2f} (goal <= {GOAL_MEMORY_FLAT}); "
          f"cost of the larger memory: {memory_part}")
    history.record("scale", figures, ratios, unit="mixed")
    return 0 if n == args.domains else 1


if __name__ == "__main__":
    sys.exit(main())
