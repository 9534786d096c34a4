#!/usr/bin/env python3
"""Dom0less start-up: from `pyxen boot` to the first console byte of every domain.

    python3 bench/dom0less.py [--rounds 3] [--counts 1,4,16]

For each domain count N, each round runs one after the other, with N
copies of guests/build/hello.elf (32 MiB, 1 vCPU, no PV interfaces):

    dom0less   spawn `python -m pyxen boot tree.dts` (N xen,domain nodes) ->
               the first byte of each domain's first `(dN)` line on its stdout
    toolstack  spawn `python -m pyxen hypervisor` (the daemon, in the
               foreground so that its stdout is ours; it starts xenstored and
               consoled as it always does), wait until its control socket
               answers, then `python -m pyxen create hello-I.cfg` for I = 1..N,
               one after the other as a boot script would -> the first byte
               of each domain's first line on the daemon's stdout

Both clocks start at the spawn of the first process: each path is the
whole way from "start the hypervisor" to "every domain is running its
code".  Reported per N: the median over rounds of the time until the last
domain's first line ("all"), and of the first domain's ("first"), and the
ratio dom0less / toolstack of the "all" medians (the issue's goal: at most
0.1 for N = 4).  Rows with the toolstack path split out its own parts
(daemon ready, creates) so the ratio can be read.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import history

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SRC = ROOT / "src"
HELLO = ROOT / "guests" / "build" / "hello.elf"
LINE = re.compile(rb"^\(d(\d+)\) ")
TIMEOUT = 120.0


PYCACHE = BENCH / "build" / "pycache"


def _env(work: Path) -> dict[str, str]:
    """pyxen from this tree, an instance in ``work``, and bytecode cached (in
    bench/build/pycache, whatever PYTHONDONTWRITEBYTECODE says) as an installed
    pyxen has it: start-up is otherwise mostly compiling pyxen's modules."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                    else "")
    env["PYXEN_RUN_DIR"] = str(work / "run")
    env["PYXEN_LOG_DIR"] = str(work / "log")
    return env


class FirstLines:
    """Reads a process's stdout; records when each domain's first line arrived,
    and (stderr) when the hypervisor said it serves its control socket."""

    def __init__(self, proc: subprocess.Popen[bytes], t0: float) -> None:
        self.proc = proc
        self.t0 = t0
        self.first: dict[int, float] = {}
        self.serving: float | None = None
        self.lines: list[bytes] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if self.serving is None and b"(XEN) pyxen hypervisor" in line and b"serving" in line:
                self.serving = time.monotonic() - self.t0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic() - self.t0
            self.lines.append(line)
            m = LINE.match(line)
            with self._cond:
                if m and int(m.group(1)) not in self.first:
                    self.first[int(m.group(1))] = now
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = TIMEOUT) -> list[float]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.first) < n:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._thread.is_alive()):
                    raise RuntimeError(f"only {len(self.first)} of {n} domains printed: "
                                       + b"".join(self.lines[-10:]).decode(errors="replace"))
                self._cond.wait(min(left, 0.5))
            return sorted(self.first.values())


def write_tree(work: Path, n: int) -> Path:
    nodes = "".join(f"""
        hello{i} {{
            compatible = "xen,domain";
            memory = <0x0 0x8000>;
            cpus = <1>;
            module@0 {{
                compatible = "multiboot,kernel", "multiboot,module";
                xen,uefi-binary = "{HELLO}";
            }};
        }};""" for i in range(1, n + 1))
    path = work / f"tree{n}.dts"
    path.write_text(f"/dts-v1/;\n/ {{\n    chosen {{{nodes}\n    }};\n}};\n")
    return path


def write_configs(work: Path, n: int) -> list[Path]:
    out = []
    for i in range(1, n + 1):
        path = work / f"hello{i}.cfg"
        path.write_text(f'name = "hello{i}"\ntype = "pvh"\nkernel = "{HELLO}"\nmemory = 32\n'
                        'vcpus = 1\n')
        out.append(path)
    return out


def run_dom0less(work: Path, n: int) -> tuple[float, float, float]:
    tree = write_tree(work, n)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pyxen", "boot", str(tree)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(work))
    lines = FirstLines(proc, t0)
    try:
        times = lines.wait(n)
        if proc.wait(TIMEOUT) != 0:
            raise RuntimeError(f"pyxen boot exited with status {proc.returncode}")
    finally:
        _end(proc)
    assert lines.serving is not None
    return times[0], times[-1], lines.serving


def _ready(env: dict[str, str]) -> bool:
    result = subprocess.run([sys.executable, "-c",
                             "import sys; from pyxen.control.client import ControlClient;"
                             "from pyxen.control.paths import InstancePaths;"
                             "c = ControlClient.connect(InstancePaths.resolve(None, None));"
                             "c.call('hello')"], env=env, capture_output=True, check=False)
    return result.returncode == 0


def run_toolstack(work: Path, n: int) -> tuple[float, float, float]:
    configs = write_configs(work, n)
    env = _env(work)
    socket_path = work / "run" / "control.sock"
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pyxen", "hypervisor"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines = FirstLines(proc, t0)
    try:
        while not (socket_path.exists() and _connects(socket_path)):
            if proc.poll() is not None or time.monotonic() - t0 > TIMEOUT:
                raise RuntimeError("the daemon did not start")
            time.sleep(0.005)
        for cfg in configs:
            subprocess.run([sys.executable, "-m", "pyxen", "create", "-q", str(cfg)], env=env,
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times = lines.wait(n)
    finally:
        _end(proc)
    assert lines.serving is not None
    return times[0], times[-1], lines.serving


def _connects(path: Path) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--counts", default="1,4,16")
    args = parser.parse_args()
    subprocess.run(["make", "-s", "-C", str(ROOT / "guests")], check=True)
    counts = [int(c) for c in args.counts.split(",")]
    with tempfile.TemporaryDirectory(prefix="pyxen-bench-dom0less-") as tmp:
        run_dom0less(Path(tmp), 1)  # warm-up: fills the bytecode cache
        run_toolstack(Path(tmp), 1)
    rows = []
    med = statistics.median
    for n in counts:
        d: list[tuple[float, float, float]] = []
        t: list[tuple[float, float, float]] = []
        for r in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="pyxen-bench-dom0less-") as tmp:
                d.append(run_dom0less(Path(tmp), n))
            with tempfile.TemporaryDirectory(prefix="pyxen-bench-dom0less-") as tmp:
                t.append(run_toolstack(Path(tmp), n))
            print(f"N={n} round {r + 1}: dom0less all {d[-1][1] * 1000:.0f} ms, toolstack "
                  f"all {t[-1][1] * 1000:.0f} ms", file=sys.stderr, flush=True)
        rows.append((n, *(med(x[i] for x in d) for i in range(3)),
                     *(med(x[i] for x in t) for i in range(3)),
                     med(x[1] - x[2] for x in d), med(x[1] - x[2] for x in t)))
    print(f"\nms from spawning the hypervisor to the first console line of the first / of "
          f"every domain\n(median of {args.rounds} rounds; 'ready' = the hypervisor serves its "
          "control socket;\n'after' = all minus ready, the part that is not Python start-up)\n")
    print(f"{'N':>3} | {'dom0less':^26} | {'toolstack (daemon + create)':^27} | "
          f"{'dom0less / toolstack':^20}")
    print(f"{'':>3} | {'ready':>6} {'first':>6} {'all':>6} {'after':>5} | {'ready':>6} "
          f"{'first':>6} {'all':>6} {'after':>6} | {'all':>8} {'after':>10}")
    for n, df, da, dr, tf, ta, tr, dafter, tafter in rows:
        print(f"{n:>3} | {dr * 1000:>6.0f} {df * 1000:>6.0f} {da * 1000:>6.0f} "
              f"{dafter * 1000:>5.0f} | {tr * 1000:>6.0f} {tf * 1000:>6.0f} {ta * 1000:>6.0f} "
              f"{tafter * 1000:>6.0f} | {da / ta:>8.3f} {dafter / tafter:>10.3f}")
    print("\nThe issue's goal: dom0less 'all' at most 0.1 of the toolstack's for N = 4.")
    history.record(
        "dom0less",
        {f"N={n} {what} ms": v * 1000 for n, df, da, dr, tf, ta, tr, _d, _t in rows
         for what, v in (("dom0less all", da), ("toolstack all", ta))},
        {f"N={n} dom0less/toolstack all": da / ta for n, _df, da, _dr, _tf, ta, *_ in rows},
        unit="ms")
    return 0


if __name__ == "__main__":
    if shutil.which("dtc") is None:
        sys.exit("bench/dom0less.py needs dtc (apt-get install device-tree-compiler)")
    sys.exit(main())
