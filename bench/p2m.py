#!/usr/bin/env python3
"""The p2m before and after issue 10 (snapshots, merged extents, slot budget).

    python3 bench/p2m.py [--before b08f657] [--holes 16000] [--n 20000] [--rounds 5]

Loads the p2m as it was at ``--before`` (``git show REV:src/pyxen/memory/
physmap.py``) beside the current one and measures, in this one process, for
each implementation, with the p2m in one piece and with ``--holes`` holes
(every other page ballooned out, one extent per hole):

    translate+read 8     GuestAccess.read of 8 bytes at a linear address: a
                         4-level page walk (four p2m lookups) and one read
    translate+read page  the same for a whole 4 KiB page
    decrease 1 page      what decrease_reservation does for one page in the
                         middle of an extent: lookup, unmap (a split: one KVM
                         slot deleted, two created), free the page
    populate 1 page      populate_physmap of that frame again with the same
                         pool page (before: a new extent; now: a merge)

The decrease/populate rows use real KVM slots (a VM of their own per
implementation, no vCPU) and, in brackets, a no-op slot programmer (the
p2m's own Python cost).  Medians over ``--rounds``; before and after rounds
alternate.  Only ratios within one run mean anything (bench/README.md).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pyxen.kvm import System, Vm  # noqa: E402
from pyxen.memory import PAGE_SIZE, Gfn, Gpa, GuestAccess, PagingState  # noqa: E402
from pyxen.memory import physmap as after  # noqa: E402

RAM_PAGES = 65536  # 256 MiB
PML4, PDPT, PD, PT = 1, 2, 3, 4  # frames of the page tables
VA = 0x4000_0000  # mapped by PT entry 0 to DATA_GFN
DATA_GFN = 0x801  # an odd frame above the holes' start: stays mapped
HOLES_FROM = 0x1000  # holes at odd frames from 16 MiB
PAGING = PagingState(cr0=(1 << 31) | (1 << 16) | 1, cr3=PML4 << 12, cr4=1 << 5,
                     efer=(1 << 8) | (1 << 10))


def load_before(rev: str) -> types.ModuleType:
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:src/pyxen/memory/physmap.py"],
                         check=True, capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("physmap_before", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    exec(compile(src, f"{rev}:physmap.py", "exec"), mod.__dict__)
    return mod


class VmSlots:
    def __init__(self, vm: Vm) -> None:
        self.vm = vm

    def set_slot(self, slot: int, gpa: int, size: int, host_addr: int,
                 readonly: bool = False) -> None:
        self.vm.set_memory_region(slot, gpa, size, host_addr, readonly)


def make(impl: types.ModuleType, slots: Any, holes: int) -> Any:
    """A 256 MiB p2m in one extent, page tables mapping VA, then ``holes`` holes."""
    mem = impl.GuestMemory(RAM_PAGES, 1, name="bench-p2m", slots=slots)
    mem.map(Gfn(0), RAM_PAGES, 0, impl.PageKind.RAM)
    for table, nxt in ((PML4, PDPT), (PDPT, PD), (PD, PT)):
        index = (VA >> (39 - 9 * (table - 1))) & 0x1FF
        mem.write(Gpa(table * PAGE_SIZE + index * 8), ((nxt << 12) | 3).to_bytes(8, "little"))
    mem.write(Gpa(PT * PAGE_SIZE), ((DATA_GFN << 12) | 3).to_bytes(8, "little"))
    for i in range(holes):
        gfn = HOLES_FROM + 1 + 2 * i
        pool, _kind = mem.lookup(Gfn(gfn))
        mem.unmap(Gfn(gfn))
        mem.free_ram_page(pool)
    return mem


def per_call_ns(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n


def translate_rows(mem: Any, n: int) -> tuple[float, float]:
    access = GuestAccess(mem, PAGING)
    assert access.read(VA, 8) == mem.read(Gpa(DATA_GFN * PAGE_SIZE), 8)
    small = per_call_ns(lambda: access.read(VA, 8), n)
    page = per_call_ns(lambda: access.read(VA, PAGE_SIZE), n)
    return small, page


_next_frame: dict[int, int] = {}


def balloon_rows(mem: Any, impl: types.ModuleType, n: int) -> tuple[float, float]:
    """Decrease then populate one frame in the middle of the upper extent, n times,
    a different frame each time (so that each decrease splits an extent)."""
    dec = pop = 0
    for _ in range(n):
        gfn = Gfn(_next_frame.get(id(mem), RAM_PAGES - 100))
        _next_frame[id(mem)] = gfn - 2
        t0 = time.perf_counter_ns()
        pool, _kind = mem.lookup(gfn)
        mem.unmap(gfn)
        mem.free_ram_page(pool)
        t1 = time.perf_counter_ns()
        page = mem.alloc_ram_pages(1)
        mem.map(gfn, 1, page, impl.PageKind.RAM)
        t2 = time.perf_counter_ns()
        dec += t1 - t0
        pop += t2 - t1
    return dec / n, pop / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="b08f657", help="git revision of the old p2m")
    ap.add_argument("--holes", type=int, default=16000)
    ap.add_argument("--n", type=int, default=20000, help="translations per round")
    ap.add_argument("--kvm-n", type=int, default=300, help="decrease/populate pairs per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    impls = {"before": load_before(args.before), "after": after}
    system = System()
    results: dict[tuple[str, str, int], list[float]] = {}

    def add(name: str, row: str, holes: int, value: float) -> None:
        results.setdefault((name, row, holes), []).append(value)

    for holes in (0, args.holes):
        print(f"building p2ms with {holes} holes...", file=sys.stderr)
        mems: dict[str, tuple[Any, Any, Vm]] = {}
        for name, impl in impls.items():
            vm = Vm(system)
            mems[name] = (make(impl, VmSlots(vm), holes), make(impl, None, holes), vm)
        for r in range(args.rounds):
            for name, impl in (impls.items() if r % 2 == 0 else reversed(impls.items())):
                kvm_mem, plain_mem, _vm = mems[name]
                small, page = translate_rows(plain_mem, args.n)
                add(name, "translate+read 8", holes, small)
                add(name, "translate+read page", holes, page)
                dec, pop = balloon_rows(kvm_mem, impl, args.kvm_n)
                add(name, "decrease 1 page", holes, dec)
                add(name, "populate 1 page", holes, pop)
                dec, pop = balloon_rows(plain_mem, impl, args.kvm_n)
                add(name, "decrease 1 page, no KVM", holes, dec)
                add(name, "populate 1 page, no KVM", holes, pop)
        for kvm_mem, plain_mem, vm in mems.values():
            kvm_mem.close()
            plain_mem.close()
            vm.close()

    rows = ["translate+read 8", "translate+read page", "decrease 1 page", "populate 1 page",
            "decrease 1 page, no KVM", "populate 1 page, no KVM"]
    print(f"{'ns per operation (median of ' + str(args.rounds) + ')':38} {'holes':>6} "
          f"{'before':>10} {'after':>10} {'after/before':>12}")
    for row in rows:
        for holes in (0, args.holes):
            b = statistics.median(results[("before", row, holes)])
            a = statistics.median(results[("after", row, holes)])
            print(f"{row:38} {holes:>6} {b:>10.0f} {a:>10.0f} {a / b:>12.2f}")
    return 0


if __name__ == "__main__":
    ctypes.set_errno(0)
    sys.exit(main())
