#!/usr/bin/env python3
"""PV disk throughput and IOPS through blkback, beside direct file I/O in the same run.

    python3 bench/blkback.py [--quick]

Starts a hypervisor daemon in a temporary directory, makes a raw image and
runs guests/tests/blkbench against it through blkback (``disk=``): sequential
write and read in 44 KiB requests (11 segments, the most a direct request
carries) and 4 KiB random writes and reads, 8 requests in flight.  The
references, measured in this run on the same image with the same sizes and
counts:

    file        os.pwrite/os.pread on the image from this process (what the
                backend's own image I/O costs, no guest and no ring)
    backend     blkback's request path alone, in this process: slots
                decoded and executed by ``requests.Backend`` with the data
                copied to and from memory (no ring, no control socket)

Each ratio is blkback's rate over the reference's.  On this nested KVM
every guest instruction is emulated (bench/README.md), so the guest rows
include the emulated frontend; only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "src"))

import history  # noqa: E402
from private_daemon import private_daemon  # noqa: E402

from pyxen.abi.blkif import BlkifOp  # noqa: E402
from pyxen.services.blkback.requests import Abi, Backend, DiskImage  # noqa: E402

GUEST = ROOT / "guests" / "build" / "blkbench.elf"
REQ = 44 << 10
BLOCK = 4 << 10
DEPTH = 8


class MemoryPages:
    """A PageAccess over pages held in this process (the backend reference)."""

    def __init__(self, count: int) -> None:
        self.pages = [bytearray(4096) for _ in range(count)]

    def copy_from_guest(self, chunks: Sequence[tuple[int, int, int]]) -> list[bytes]:
        return [bytes(self.pages[ref][off : off + n]) for ref, off, n in chunks]

    def copy_to_guest(self, chunks: Sequence[tuple[int, int, bytes]]) -> None:
        for ref, off, data in chunks:
            self.pages[ref][off : off + len(data)] = data


def _slot(op: int, sector: int, pages: int) -> bytes:
    """An x86_64 request of ``pages`` whole-page segments (refs 0..pages-1)."""
    head = struct.pack("<BBHIQQ", op, pages, 0, 0, 7, sector)
    segs = b"".join(struct.pack("<IBBH", i, 0, 7, 0) for i in range(pages))
    return (head + segs).ljust(112, b"\0")


def _rates(elapsed: float, nbytes: int, ops: int) -> dict[str, float]:
    return {"kib_per_s": nbytes / 1024 / elapsed, "iops": ops / elapsed}


def reference_file(img: Path, seq_bytes: int, rand_ops: int, region: int) -> dict[str, dict]:
    fd = os.open(img, os.O_RDWR)
    out: dict[str, dict] = {}
    try:
        data = os.urandom(REQ)
        t = time.perf_counter()
        for off in range(0, seq_bytes, REQ):
            os.pwrite(fd, data, off)
        out["seq_write"] = _rates(time.perf_counter() - t, seq_bytes, seq_bytes // REQ)
        t = time.perf_counter()
        for off in range(0, seq_bytes, REQ):
            os.pread(fd, REQ, off)
        out["seq_read"] = _rates(time.perf_counter() - t, seq_bytes, seq_bytes // REQ)
        rng = random.Random(1)
        offsets = [rng.randrange(region // BLOCK) * BLOCK for _ in range(rand_ops)]
        block = data[:BLOCK]
        t = time.perf_counter()
        for off in offsets:
            os.pwrite(fd, block, off)
        out["rand_write"] = _rates(time.perf_counter() - t, rand_ops * BLOCK, rand_ops)
        t = time.perf_counter()
        for off in offsets:
            os.pread(fd, BLOCK, off)
        out["rand_read"] = _rates(time.perf_counter() - t, rand_ops * BLOCK, rand_ops)
    finally:
        os.close(fd)
    return out


def reference_backend(img: Path, seq_bytes: int, rand_ops: int, region: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    pages = MemoryPages(11)
    with DiskImage(img) as disk:
        backend = Backend(disk, pages, Abi.X86_64)
        for name, op, size in (("seq_write", BlkifOp.WRITE, REQ), ("seq_read", BlkifOp.READ, REQ)):
            slots = [_slot(op, off // 512, size // 4096) for off in range(0, seq_bytes, size)]
            t = time.perf_counter()
            for s in slots:
                backend.handle(s)
            out[name] = _rates(time.perf_counter() - t, seq_bytes, len(slots))
        rng = random.Random(1)
        sectors = [rng.randrange(region // BLOCK) * 8 for _ in range(rand_ops)]
        for name, op in (("rand_write", BlkifOp.WRITE), ("rand_read", BlkifOp.READ)):
            slots = [_slot(op, s, 1) for s in sectors]
            t = time.perf_counter()
            for s in slots:
                backend.handle(s)
            out[name] = _rates(time.perf_counter() - t, rand_ops * BLOCK, rand_ops)
    return out


def guest_run(base: Path, img: Path, seq_kib: int, rand_ops: int, region_kib: int
              ) -> dict[str, dict]:
    with private_daemon(base) as pyxen:
        cfg = base / "blkbench.cfg"
        cfg.write_text(
            f'name = "blkbench"\ntype = "pvh"\nkernel = "{GUEST}"\nmemory = 32\n'
            f'extra = "depth={DEPTH} req_kib={REQ >> 10} seq_kib={seq_kib} block_kib=4 '
            f'rand_ops={rand_ops} region_kib={region_kib}"\n'
            f"disk = ['format=raw, vdev=xvda, target={img}']\n")
        r = pyxen("create", "-F", str(cfg), timeout=1800)
        log = (base / "log" / "hypervisor.log").read_text()
        if r.returncode:
            raise SystemExit(f"blkbench failed:\n{r.stdout}{r.stderr}{log}")
    out: dict[str, dict] = {}
    for m in re.finditer(r"BENCH (\w+) (.*)", log):
        fields = dict(kv.split("=", 1) for kv in m.group(2).split())
        if m.group(1) == "info":
            continue
        ns = int(fields["ns"])
        nbytes = int(fields["bytes"])
        ops = int(fields.get("reqs", fields.get("ops", "0")))
        out[m.group(1)] = _rates(ns / 1e9, nbytes, ops)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    args = ap.parse_args()
    if not GUEST.exists():
        print("build the guests first: make -C guests", file=sys.stderr)
        return 1
    seq_kib, rand_ops, region_kib = (704, 128, 2048) if args.quick else (2816, 512, 8192)
    with tempfile.TemporaryDirectory(prefix="pyxen-bench-blk-") as tmp:
        base = Path(tmp)
        img = base / "disk.img"
        with img.open("wb") as f:
            f.truncate(max(seq_kib, region_kib) * 1024 + (1 << 20))
        guest = guest_run(base, img, seq_kib, rand_ops, region_kib)
        file_ref = reference_file(img, seq_kib * 1024, rand_ops, region_kib * 1024)
        backend_ref = reference_backend(img, seq_kib * 1024, rand_ops, region_kib * 1024)
    print(f"blkback: {REQ >> 10} KiB sequential requests ({seq_kib} KiB), {rand_ops} random "
          f"4 KiB operations over {region_kib} KiB, {DEPTH} in flight")
    print(f"{'test':<11}{'blkback':>12}{'backend':>12}{'file':>12}"
          f"{'/backend':>10}{'/file':>10}   unit")
    figures: dict[str, float | None] = {}
    ratios: dict[str, float | None] = {}
    for name in ("seq_write", "seq_read", "rand_write", "rand_read"):
        unit = "kib_per_s" if name.startswith("seq") else "iops"
        g = guest.get(name, {}).get(unit, float("nan"))
        b, f = backend_ref[name][unit], file_ref[name][unit]
        print(f"{name:<11}{g:>12.0f}{b:>12.0f}{f:>12.0f}{g / b:>10.4f}{g / f:>10.4f}   "
              f"{'KiB/s' if unit == 'kib_per_s' else 'IOPS'}")
        figures[name] = g
        ratios[f"{name}/backend"] = g / b if b else None
        ratios[f"{name}/file"] = g / f if f else None
    history.record("blkback", figures, ratios, unit="KiB/s (seq), IOPS (rand)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
