#!/usr/bin/env python3
"""Start-up benchmark: from `pyxen create` to the guest's first console byte.

    python3 bench/startup.py [--rounds 5]

Each round runs, one after another, with guests/build/hello.elf:

    qemu          qemu-system-x86_64 -M microvm -accel kvm -kernel hello.elf
                  -debugcon stdio: spawn -> first byte on stdout (the guest's
                  first port-0xE9 line; with no Xen leaves it reports that at once)
    pyxen -F      `pyxen create -F hello.cfg` with no daemon: spawn ->
                  first byte of the guest's first console line on stdout
    pyxen create  a running `pyxen hypervisor` (started once): spawn of the
                  `pyxen create hello.cfg` client -> the guest's first
                  line on the daemon's stdout
    create op     the same daemon, the create operation sent from this process
                  (no client start-up) -> the guest's first line
    python        reference: `python -c "print(0)"` -> its byte, the interpreter's
                  own start-up (with this installation's site-packages), which
                  every pyxen command pays before any pyxen code runs
    python -S     the same without the site module: the difference is what this
                  installation's site-packages (.pth files) costs every Python
                  process, pyxen's commands included
    client floor  `python -S -c "import argparse, json, socket; print(0)"`: the
                  least a Python client of the control socket starts in (its
                  command line, the socket, the JSON messages), before any
                  pyxen module
    -F floor      `python -S` importing the standard-library modules that
                  `pyxen create -F` imports (found by importing its modules
                  once before the rounds), none of pyxen's own: the least a
                  standalone Python hypervisor built from them starts in
    pyxen -F -S,  the two pyxen commands again with `python -S` and
    pyxen create -S   site-packages on PYTHONPATH: what they take on an
                  installation whose .pth files do nothing at start-up (the
                  usual case; on the CI machines one imports certifi in every
                  Python process)

The guest does the same early work in every case (PVH entry, long mode,
CPUID); under pyxen it also installs the hypercall page and makes one
console_io call before its first line, a few dozen instructions more.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SRC = ROOT / "src"
HELLO = ROOT / "guests" / "build" / "hello.elf"
sys.path.insert(0, str(SRC))

import history  # noqa: E402
from reference import (  # noqa: E402
    compile_package,
    first_byte,
    qemu_binary,
    qemu_microvm,
    without_pth_env,
)

from pyxen.control.client import ControlClient  # noqa: E402
from pyxen.control.paths import InstancePaths  # noqa: E402


def _pyxen_command() -> list[str]:
    """How the commands are started: the installed `pyxen` script, which users run.

    Run by this interpreter (as its #! line would), so that flags such as
    -S can be given; the code it imports is this checkout's (src/ comes
    first on PYTHONPATH). Without an installed script, `-m pyxen`, which
    also imports runpy (a few ms more).
    """
    script = Path(sysconfig.get_path("scripts")) / "pyxen"
    return [str(script)] if script.is_file() else ["-m", "pyxen"]


PYXEN = _pyxen_command()
# What any Python client of the control socket imports before its own code:
# its command line, the socket and the JSON messages.
CLIENT_STDLIB = "argparse, json, socket"


# The modules `pyxen create -F` loads before the guest runs.
STANDALONE = ("pyxen.toolstack.cli", "pyxen.toolstack.create", "pyxen.toolstack.config_check",
              "pyxen.toolstack.standalone")


def _standalone_stdlib(env: dict[str, str]) -> list[str]:
    """The modules other than pyxen's that importing STANDALONE loads (under -S)."""
    probe = ("import sys\nbefore = set(sys.modules)\n"
             f"for m in {STANDALONE!r}: __import__(m)\n"
             "print(' '.join(sorted(m for m in set(sys.modules) - before\n"
             "                      if m.split('.')[0] != 'pyxen')))")
    out = subprocess.run([sys.executable, "-S", "-c", probe], env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout.split()


def _env(run_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                    else "")
    env["PYXEN_RUN_DIR"] = str(run_dir / "run")
    env["PYXEN_LOG_DIR"] = str(run_dir / "log")
    return env


class Daemon:
    """A foreground `pyxen hypervisor` whose stdout lines are timestamped."""

    def __init__(self, base: Path) -> None:
        self.env = _env(base)
        self.nopth_env = without_pth_env(self.env, SRC)
        self.paths = InstancePaths(base / "run", base / "log")
        self.proc = subprocess.Popen([sys.executable, "-m", "pyxen", "hypervisor"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=self.env, text=True)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 30
        while not self.paths.control_socket.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not start")
            time.sleep(0.01)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line))

    def guest_line_after(self, t0: float) -> float:
        while True:
            stamp, line = self.lines.get(timeout=60)
            if stamp >= t0 and line.startswith("(d"):
                return stamp - t0

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    qemu = qemu_binary()
    if qemu is None:
        print("qemu-system-x86_64 is needed (apt-get install qemu-system-x86)", file=sys.stderr)
        return 1
    subprocess.run(["make", "-C", str(ROOT / "guests")], check=True, capture_output=True)
    compile_package(SRC)
    base = Path(tempfile.mkdtemp(prefix="pyxen-startup-"))
    cfg = base / "hello.cfg"
    cfg.write_text(f'name = "hello"\ntype = "pvh"\nkernel = "{HELLO}"\nmemory = 32\n')
    samples: dict[str, list[float]] = {
        "qemu": [], "pyxen -F": [], "pyxen create": [], "create op": [], "python": [],
        "python -S": [], "client floor": [], "-F floor": [], "pyxen -F -S": [],
        "pyxen create -S": []}
    standalone_stdlib = _standalone_stdlib(without_pth_env(_env(base / "probe"), SRC))
    standalone_env = _env(base / "none")
    standalone_nopth = without_pth_env(standalone_env, SRC)
    daemon = Daemon(base / "daemon")
    try:
        with ControlClient(daemon.paths.control_socket) as client:
            for rnd in range(args.rounds):
                samples["qemu"].append(qemu_microvm(qemu, HELLO, 32))
                for key, flags, env in (("pyxen -F", [], standalone_env),
                                        ("pyxen -F -S", ["-S"], standalone_nopth)):
                    samples[key].append(first_byte(
                        [sys.executable, *flags, *PYXEN, "create", "-F", "-q", str(cfg)],
                        env))
                for key, flags, env in (("pyxen create", [], daemon.env),
                                        ("pyxen create -S", ["-S"], daemon.nopth_env)):
                    t0 = time.monotonic()
                    subprocess.run([sys.executable, *flags, *PYXEN, "create", "-q",
                                    str(cfg)], env=env, check=True, capture_output=True)
                    samples[key].append(daemon.guest_line_after(t0))
                    time.sleep(0.3)  # let it power off and be destroyed
                t0 = time.monotonic()
                client.call("create", config={"name": f"op{rnd}", "kernel": str(HELLO),
                                              "memory_mib": 32})
                samples["create op"].append(daemon.guest_line_after(t0))
                time.sleep(0.3)
                samples["python"].append(first_byte([sys.executable, "-c", "print(0)"]))
                samples["python -S"].append(first_byte([sys.executable, "-S", "-c",
                                                        "print(0)"]))
                samples["client floor"].append(first_byte(
                    [sys.executable, "-S", "-c", f"import {CLIENT_STDLIB}; print(0)"]))
                samples["-F floor"].append(first_byte(
                    [sys.executable, "-S", "-c", "import importlib\n"
                     f"for m in {standalone_stdlib!r}: importlib.import_module(m)\n"
                     "print(0)"]))
                print(f"round {rnd + 1}/{args.rounds}: " + ", ".join(
                    f"{k} {v[-1] * 1000:.0f} ms" for k, v in samples.items()), file=sys.stderr)
    finally:
        daemon.close()
        shutil.rmtree(base, ignore_errors=True)
    ref = statistics.median(samples["qemu"])
    print()
    print("time to the guest's first console byte (one run; compare ratios, not absolute "
          "times)")
    print(f"{'what':<16}{'median ms':>10}{'min ms':>9}{'/ qemu':>8}")
    for key, values in samples.items():
        med = statistics.median(values)
        print(f"{key:<16}{med * 1000:>10.1f}{min(values) * 1000:>9.1f}{med / ref:>8.2f}")
    meds = {key: statistics.median(values) for key, values in samples.items()}
    floor = meds["python"]
    print("pyxen's own part (minus the interpreter's start-up): "
          f"-F {(meds['pyxen -F'] - floor) * 1000:.0f} ms, "
          f"create {(meds['pyxen create'] - floor) * 1000:.0f} ms; site-packages: "
          f"{(floor - meds['python -S']) * 1000:.0f} ms of every Python process")
    print("-S rows: the same commands with no .pth file run at start-up (python -S, "
          "site-packages on PYTHONPATH)")
    ratios = {f"{k}/qemu": v / ref for k, v in meds.items() if k != "qemu"}
    # Per round (QEMU and pyxen started seconds apart): the median of the
    # rounds' ratios and a 95% bootstrap interval.
    print("per-round ratios to qemu (median [95% bootstrap interval]):")
    for key, values in samples.items():
        if key == "qemu":
            continue
        mid, low, high = history.median_interval(
            [v / q for v, q in zip(values, samples["qemu"], strict=True)])
        ratios[f"paired_{key}/qemu"] = mid
        print(f"  {key:<14}{mid:6.2f} [{low:.2f}, {high:.2f}]")
    history.record("startup", {k: v * 1000 for k, v in meds.items()}, ratios, unit="ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
