#!/usr/bin/env python3
"""A longer fuzzing campaign: the tests/fuzz targets with many more examples and fresh seeds.

    python3 bench/fuzz.py [--examples 2000] [-k EXPR]

Runs ``pytest tests/fuzz`` with the ``campaign`` hypothesis profile
(``PYXEN_FUZZ_EXAMPLES`` examples per target, a new random seed each run;
the CI profile uses 100 and a fixed seed), then reports how many calls each
target made into pyxen (hypercalls, control requests, xenstored requests,
xl.cfg parses, ...) and every fault found: the failing target and the
example hypothesis shrank it to, ready to become a regression test in
tests/fuzz/test_regressions.py.  ``-k`` selects targets as pytest does
(``-k hypercalls``).  Exits 1 when a fault was found.

The KVM targets (hypercalls, control) need /dev/kvm and the test guests
(``make -C guests``); without them they are skipped and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000,
                        help="examples per target (default 2000)")
    parser.add_argument("-k", dest="select", default="",
                        help="pytest -k expression choosing targets")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        env = dict(os.environ, PYXEN_FUZZ_PROFILE="campaign",
                   PYXEN_FUZZ_EXAMPLES=str(args.examples), PYXEN_FUZZ_REPORT=str(report_path),
                   PYTHONPATH=os.pathsep.join(
                       filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
        cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "fuzz"), "-q", "-rs",
               "-p", "no:cacheprovider", "--hypothesis-show-statistics",
               "--deselect", "tests/fuzz/test_regressions.py"]
        if args.select:
            cmd += ["-k", args.select]
        start = time.monotonic()
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             check=False)
        elapsed = time.monotonic() - start
        if not report_path.exists():
            sys.stdout.write(run.stdout + run.stderr)
            print("fuzz: pytest did not run the suite", file=sys.stderr)
            return 2
        report = json.loads(report_path.read_text())
    skipped = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    examples = re.findall(r"^(tests/fuzz/\S+):\n.*?- (\d+) passing examples, (\d+) failing",
                          run.stdout, re.MULTILINE | re.DOTALL)
    print(f"fuzz campaign: {args.examples} examples per target, {elapsed:.0f} s")
    print("\ntargets (examples run):")
    for test, passing, failing in examples:
        print(f"  {test.removeprefix('tests/fuzz/'):62} {int(passing) + int(failing):7}")
    print("\ncalls made into pyxen:")
    for target, n in sorted(report["calls"].items()):
        print(f"  {target:24} {n:9}")
    print(f"  {'total':24} {sum(report['calls'].values()):9}")
    for line in skipped:
        print(line)
    failures = report["failures"]
    print(f"\nfaults found: {len(failures)}")
    for failure in failures:
        print(f"\n--- {failure['test']}")
        text = failure["report"]
        at = text.find("Falsifying")
        print(text[at:] if at >= 0 else text[-3000:])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
