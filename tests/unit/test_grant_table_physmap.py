"""Foreign frames in the p2m (grant mappings): memory.physmap's third PageKind."""

from __future__ import annotations

import pytest

from pyxen.memory.addr import PAGE_SIZE, Gfn, Gpa
from pyxen.memory.errors import MemoryFault
from pyxen.memory.physmap import GuestMemory, PageKind, SlotProgrammer


class Slots(SlotProgrammer):
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int, int, bool]] = []

    def set_slot(self, slot: int, gpa: int, size: int, host_addr: int,
                 readonly: bool = False) -> None:
        self.calls.append((slot, gpa, size, host_addr, readonly))


def test_foreign_frame_is_its_own_slot_and_invisible_to_hypervisor_copies() -> None:
    granter = GuestMemory(8, 1)
    slots = Slots()
    mapper = GuestMemory(8, 1, slots=slots)
    try:
        mapper.map(Gfn(0), 4, 0, PageKind.RAM)
        host = granter.host_base + 3 * PAGE_SIZE
        mapper.map_foreign(Gfn(0x10), host, 3, readonly=True)
        assert slots.calls[-1] == (1, 0x10 * PAGE_SIZE, PAGE_SIZE, host, True)
        mapper.map_foreign(Gfn(0x11), host, 3, readonly=False)
        assert slots.calls[-1] == (2, 0x11 * PAGE_SIZE, PAGE_SIZE, host, False)
        assert mapper.lookup(Gfn(0x10)) == (3, PageKind.FOREIGN)
        ext = mapper.extent_at(Gfn(0x10))
        assert ext is not None and ext.foreign_host == host and ext.readonly
        assert mapper.extent_at(Gfn(0x12)) is None
        for access in (lambda: mapper.read(Gpa(0x10 * PAGE_SIZE), 4),
                       lambda: mapper.write(Gpa(0x11 * PAGE_SIZE), b"x"),
                       lambda: mapper.page(Gfn(0x10)),
                       lambda: mapper.read_u64(0x10 * PAGE_SIZE)):
            with pytest.raises(MemoryFault):
                access()
        with pytest.raises(ValueError):
            mapper.map_foreign(Gfn(0x10), host, 3, readonly=False)  # not a hole
        with pytest.raises(ValueError):
            mapper.map_foreign(Gfn(2), host, 3, readonly=False)  # inside RAM
        with pytest.raises(ValueError):
            mapper.map(Gfn(0x20), 1, 3, PageKind.FOREIGN)
        assert mapper.unmap(Gfn(0x10)) == (3, PageKind.FOREIGN)
        assert slots.calls[-1][2] == 0  # slot deleted
        assert mapper.lookup(Gfn(0x10)) is None
        assert mapper.free_ram_available() == 8  # the other pool's page is not ours
    finally:
        mapper.close()
        granter.close()
