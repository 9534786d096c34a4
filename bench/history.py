#!/usr/bin/env python3
"""Benchmark history: one JSON record per `make bench` run, to compare ratios across commits.

    python3 bench/history.py start        create bench/history/<UTC>-<commit>.json, print its path
    python3 bench/history.py show [FILE]  one run's ratios (default: the newest record)
    python3 bench/history.py table        every record's ratios, one column per run

`make bench` runs ``start`` and exports the path as PYXEN_BENCH_RECORD; each
bench script then calls ``record(name, figures, ratios)`` once, which adds
its entry to that file (nothing happens when the variable is unset, so a
script run by hand writes no history).  A record holds the commit (with a
``+dirty`` mark when the work tree had changes), the time, the host's CPU
model and, per benchmark, its figures (absolute, in the unit given) and the
ratios against references measured in the same run.  Only the ratios are
comparable between records: these machines are shared and nested, and
absolute times move by tens of percent from run to run.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HISTORY = Path(__file__).resolve().parent / "history"
ROOT = HISTORY.parent.parent


def _git(*args: str) -> str:
    r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def start() -> Path:
    """A new, empty record for this run; returns its path."""
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    HISTORY.mkdir(exist_ok=True)
    path = HISTORY / f"{stamp}-{commit}.json"
    header = {"commit": commit, "time": stamp, "host": platform.node(), "cpu": _cpu_model(),
              "cores": os.cpu_count(), "python": platform.python_version(), "benches": {}}
    path.write_text(json.dumps(header, indent=1) + "\n")
    return path


def record(bench: str, figures: dict[str, float | None], ratios: dict[str, float | None],
           unit: str = "ns") -> None:
    """Add one benchmark's results to the run's record (PYXEN_BENCH_RECORD), if any."""
    target = os.environ.get("PYXEN_BENCH_RECORD")
    if not target:
        return
    path = Path(target)
    data = json.loads(path.read_text())
    data["benches"][bench] = {
        "unit": unit,
        "figures": {k: (None if v is None else round(v, 3)) for k, v in figures.items()},
        "ratios": {k: (None if v is None else round(v, 4)) for k, v in ratios.items()},
    }
    path.write_text(json.dumps(data, indent=1) + "\n")


def median_interval(values: list[float], resamples: int = 2000) -> tuple[float, float, float]:
    """The median of ``values`` and a 95% percentile-bootstrap interval for it
    (fixed seed: the same values give the same interval)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values)))
                     for _ in range(resamples))
    return (statistics.median(values), medians[int(0.025 * resamples)],
            medians[int(0.975 * resamples) - 1])


def _load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def records() -> list[Path]:
    return sorted(HISTORY.glob("*.json"))


def show(path: Path) -> None:
    data = _load(path)
    print(f"{path.name}: commit {data['commit']}, {data['cpu']}, {data['cores']} cores")
    for bench, entry in data["benches"].items():
        for name, value in entry["ratios"].items():
            print(f"  {bench:<14}{name:<44}{'n/a' if value is None else f'{value:.2f}':>8}")


def table() -> None:
    paths = records()
    if not paths:
        print(f"no records in {HISTORY}")
        return
    runs = [_load(p) for p in paths]
    keys: list[tuple[str, str]] = []
    for run in runs:
        for bench, entry in run["benches"].items():
            for name in entry["ratios"]:
                if (bench, name) not in keys:
                    keys.append((bench, name))
    print(f"{'ratio':<58}" + "".join(f"{r['commit'][:12]:>14}" for r in runs))
    for bench, name in keys:
        cells = []
        for run in runs:
            value = run["benches"].get(bench, {}).get("ratios", {}).get(name)
            cells.append(f"{'-' if value is None else f'{value:.2f}':>14}")
        print(f"{bench + ' ' + name:<58}" + "".join(cells))


def main(argv: list[str]) -> int:
    if argv[:1] == ["start"]:
        print(start())
        return 0
    if argv[:1] == ["show"]:
        paths = [Path(argv[1])] if len(argv) > 1 else records()[-1:]
        if not paths:
            print(f"no records in {HISTORY}", file=sys.stderr)
            return 1
        show(paths[0])
        return 0
    if argv[:1] == ["table"]:
        table()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:  # `history.py table | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
