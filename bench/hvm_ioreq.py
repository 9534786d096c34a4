#!/usr/bin/env python3
"""HVM I/O round trips through the device model, beside the same exits inside the hypervisor.

    python3 bench/hvm_ioreq.py

Starts a hypervisor daemon in a temporary directory and boots
guests/build/hvmbench.img as an HVM guest (hvmloader + SeaBIOS, IDE disk).
The guest times 2000 accesses of each kind with RDTSC, interrupts off, and
prints ``hvmbench: <phase> <n> <cycles>`` on COM1 (guests/hvm/README.md):

    loop      the timed loop alone (dec; jnz): subtracted from every other row
    pio-hv    inb 0x71, CMOS data: handled inside the hypervisor
    pio-dm    inb 0x3FF, COM1 scratch: guest -> ioreq -> device model -> guest
    mmio-hv   32-bit read of the IOAPIC's IOWIN: inside the hypervisor
    mmio-dm   32-bit read of the Xen platform device's BAR1: device model

Cycles become microseconds with the host TSC frequency measured as pyxen
measures it (``pvclock.TscClock``: host TSC against CLOCK_MONOTONIC, here
over the whole run; KVM runs the guest without TSC scaling, so its TSC
ticks at the host's rate).  The reference, measured in the same run and the
same guest, is the same exit handled inside the hypervisor: the ``/hv``
column is the device-model round trip over it (pio-dm / pio-hv, mmio-dm /
mmio-hv).  On this nested KVM every guest instruction is emulated
(bench/README.md), so only the ratios within one run mean much.

Skips (exit status 0, with a message) when the HVM firmware is missing.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "src"))

import history  # noqa: E402
from private_daemon import private_daemon  # noqa: E402

from pyxen.boot.errors import BootError  # noqa: E402
from pyxen.boot.hvm import HVMLOADER_GLOBS, SEABIOS_PATHS, find_firmware  # noqa: E402
from pyxen.hv.pvclock import TscClock  # noqa: E402

GUEST = ROOT / "guests" / "build" / "hvmbench.img"
PHASES = ("loop", "pio-hv", "pio-dm", "mmio-hv", "mmio-dm")
# Each device-model phase against the hypervisor phase of the same kind.
REFERENCE = {"pio-dm": "pio-hv", "mmio-dm": "mmio-hv"}
LINE = re.compile(r"^hvmbench: (\S+) (\d+) (\d+)\r?$", re.M)


def nominal_tsc_hz() -> int:
    """What KVM_GET_TSC_KHZ says for a fresh vCPU (0 if it cannot say), for the header."""
    from pyxen.hv.hypervisor import nominal_tsc_hz as kvm_tsc_hz
    from pyxen.kvm import KvmError, System
    try:
        return kvm_tsc_hz(System())
    except (KvmError, OSError):
        return 0


def guest_run(base: Path) -> str:
    """Boot hvmbench.img under a private daemon; its COM1 output."""
    with private_daemon(base) as pyxen:
        cfg = base / "hvmbench.cfg"
        cfg.write_text('name = "hvmbench"\ntype = "hvm"\nmemory = 32\n'
                       f"disk = ['format=raw, vdev=hda, access=rw, target={GUEST}']\n")
        r = pyxen("create", "-F", str(cfg))
        console = base / "log" / "console" / "guest-hvmbench.log"
        out = console.read_text(errors="replace") if console.exists() else ""
        if r.returncode or "hvmbench: done" not in out:
            log = (base / "log" / "hypervisor.log").read_text(errors="replace")
            raise SystemExit(f"hvmbench failed (create exit {r.returncode}):\n{r.stdout}"
                             f"{r.stderr}--- console\n{out}--- hypervisor.log\n{log}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args()
    if not GUEST.exists():
        print("build the guests first: make -C guests", file=sys.stderr)
        return 1
    try:
        find_firmware(None, HVMLOADER_GLOBS, "hvmloader")
        find_firmware(None, SEABIOS_PATHS, "SeaBIOS")
    except BootError as e:
        print(f"hvm_ioreq: skipped: {e}")
        return 0
    nominal = nominal_tsc_hz()
    clock = TscClock(time.monotonic_ns, 0)      # 0: measure, do not trust KVM's figure
    with tempfile.TemporaryDirectory(prefix="pyxen-bench-hvm-") as tmp:
        out = guest_run(Path(tmp))
    clock.calibrate()                           # the rate over the whole run
    hz = clock.hz

    runs = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in LINE.finditer(out)}
    if "loop" not in runs:
        raise SystemExit(f"hvmbench printed no loop phase:\n{out}")
    loop_n, loop_cyc = runs["loop"]
    loop = loop_cyc / loop_n
    per: dict[str, float] = {}                  # cycles per access, the loop taken off
    for name in PHASES[1:]:
        if name in runs:
            n, cyc = runs[name]
            per[name] = cyc / n - loop

    print(f"hvm_ioreq: {loop_n} accesses per phase; TSC {hz / 1e9:.4f} GHz (host TSC against "
          f"CLOCK_MONOTONIC over the run; KVM says {nominal / 1e9:.4f} GHz)")
    print(f"{'phase':<9}{'cycles':>12}{'us':>11}{'/hv':>9}   handled by")
    print(f"{'loop':<9}{loop:>12.1f}{loop * 1e6 / hz:>11.3f}{'':>9}   "
          "(the loop alone, per iteration: taken off the rows below)")
    for name in PHASES[1:]:
        where = "device model" if name.endswith("-dm") else "hypervisor"
        if name not in per:
            print(f"{name:<9}{'skipped':>12}{'':>11}{'':>9}   {where}")
            continue
        ref = REFERENCE.get(name)
        ratio = f"{per[name] / per[ref]:>9.2f}" if ref in per and per[ref] > 0 else f"{'':>9}"
        print(f"{name:<9}{per[name]:>12.1f}{per[name] * 1e6 / hz:>11.3f}{ratio}   {where}")
    print("cycles and us: per access, the loop's own cost taken off; "
          "/hv: over the hypervisor row of the same kind")
    history.record("hvm_ioreq", {f"{name} ns": c * 1e9 / hz for name, c in per.items()},
                   {f"{name}/{REFERENCE[name]}": per[name] / per[REFERENCE[name]]
                    for name in per if REFERENCE.get(name) in per
                    and per[REFERENCE[name]] > 0})
    return 0


if __name__ == "__main__":
    sys.exit(main())
