"""Lock-free readers of the p2m while a writer changes it (issue 10, item 3).

Readers (vCPU threads translating guest addresses, the grant code, services'
foreign maps) take no lock.  They must only ever see a p2m that existed --
before or after a change -- never a half-made one: a frame mapped both
before and after a change always reads its own contents.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator

import pytest

from pyxen.memory.addr import PAGE_SIZE, Gfn, Gpa
from pyxen.memory.errors import MemoryFault
from pyxen.memory.physmap import GuestMemory, PageKind, SlotProgrammer

RAM = PageKind.RAM
FRAMES = 64


def tag(gfn: int) -> bytes:
    return gfn.to_bytes(4, "little") * 2


def fill(mem: GuestMemory) -> None:
    """Frames [0, FRAMES) backed by pool pages [0, FRAMES), each starting with its tag."""
    mem.map(Gfn(0), FRAMES, 0, RAM)
    for gfn in range(FRAMES):
        mem.write(Gpa(gfn * PAGE_SIZE), tag(gfn))


class ReadingSlots(SlotProgrammer):
    """At every slot change -- the middle of a p2m update -- read the stable frames,
    as another thread may do at that moment, and record what came back."""

    def __init__(self, stable: list[int]) -> None:
        self.mem: GuestMemory | None = None
        self.stable = stable
        self.bad: list[str] = []

    def set_slot(self, slot: int, gpa: int, size: int, host_addr: int,
                 readonly: bool = False) -> None:
        if self.mem is None:
            return
        for gfn in self.stable:
            try:
                got = self.mem.read(Gpa(gfn * PAGE_SIZE), 8)
            except MemoryFault as e:
                self.bad.append(f"frame {gfn:#x}: {e}")
                continue
            if got != tag(gfn):
                self.bad.append(f"frame {gfn:#x} read {got.hex()}")


@pytest.fixture
def hooked() -> Iterator[tuple[GuestMemory, ReadingSlots]]:
    slots = ReadingSlots(stable=[2, 7, 9, 30])
    mem = GuestMemory(ram_capacity=FRAMES, heap_pages=1, slots=slots)
    fill(mem)
    slots.mem = mem
    yield mem, slots
    slots.mem = None
    mem.close()


def test_reader_inside_a_split_sees_every_mapped_frame(
        hooked: tuple[GuestMemory, ReadingSlots]) -> None:
    mem, slots = hooked
    assert mem.unmap(Gfn(8)) == (8, RAM)  # splits [0, 64) around frame 8
    assert mem.unmap(Gfn(20)) == (20, RAM)
    assert slots.bad == []


def test_reader_inside_a_merge_sees_every_mapped_frame(
        hooked: tuple[GuestMemory, ReadingSlots]) -> None:
    mem, slots = hooked
    mem.unmap(Gfn(8))
    mem.map(Gfn(8), 1, 8, RAM)  # the same pool page back: the extents merge again
    mem.unmap(Gfn(31))
    mem.map(Gfn(31), 1, 31, RAM)
    assert slots.bad == []
    assert mem.read(Gpa(8 * PAGE_SIZE), 8) == tag(8)


def test_concurrent_reader_and_writer_agree() -> None:
    """A writer splits and merges extents around frames that stay mapped while a
    reader thread reads those frames: every read must give that frame's tag."""
    mem = GuestMemory(ram_capacity=FRAMES, heap_pages=1)
    fill(mem)
    stable = list(range(0, FRAMES, 2))
    moving = list(range(1, FRAMES, 2))
    bad: list[str] = []
    done = threading.Event()

    def reader() -> None:
        rng = random.Random(2)
        while not done.is_set():
            gfn = rng.choice(stable)
            try:
                got = mem.read(Gpa(gfn * PAGE_SIZE), 8)
            except Exception as e:  # any exception is the failure
                bad.append(f"frame {gfn:#x}: {type(e).__name__}: {e}")
                return
            if got != tag(gfn):
                bad.append(f"frame {gfn:#x} read {got.hex()}")
                return

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        rng = random.Random(1)
        for _ in range(10000):
            if bad:
                break
            gfn = rng.choice(moving)
            if mem.lookup(Gfn(gfn)) is None:
                mem.map(Gfn(gfn), 1, gfn, RAM)
            else:
                mem.unmap(Gfn(gfn))
    finally:
        done.set()
        thread.join()
        sys.setswitchinterval(old_interval)
    mem.close()
    assert bad == []
