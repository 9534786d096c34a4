"""hv/altp2m.py: views, access rights and Xen 4.12's errors, over a GuestMemory whose
slots a model of KVM's slot table checks (no KVM, no guest)."""

from __future__ import annotations

import pytest

from pyxen.abi.errno import XenErrno
from pyxen.hv.altp2m import (
    EXEC,
    INVALID_GFN,
    MAX_ALTP2M,
    READ,
    WRITE,
    Access,
    Altp2m,
    permits,
    slot_mode,
)
from pyxen.hv.errors import HypercallError
from pyxen.memory.addr import PAGE_SIZE, Gfn
from pyxen.memory.p2m import PageKind
from pyxen.memory.physmap import GuestMemory, Override, SlotMode, SlotProgrammer

P = PAGE_SIZE


class Slots(SlotProgrammer):
    def __init__(self) -> None:
        self.active: dict[int, tuple[int, int, int, bool]] = {}

    def set_slot(self, slot: int, gpa: int, size: int, host_addr: int,
                 readonly: bool = False) -> None:
        if size == 0:
            del self.active[slot]
        else:
            assert slot not in self.active
            self.active[slot] = (gpa, size, host_addr, readonly)

    def at(self, gfn: int) -> tuple[int, bool] | None:
        """(host address, read-only) KVM maps at ``gfn``, or None."""
        for gpa, size, host, ro in self.active.values():
            if gpa <= gfn * P < gpa + size:
                return host + gfn * P - gpa, ro
        return None


def _views(pages: int = 32) -> tuple[Altp2m, GuestMemory, Slots]:
    slots = Slots()
    mem = GuestMemory(pages, 1, slots=slots)
    mem.map(Gfn(0), pages, mem.alloc_ram_pages(pages) or 0, PageKind.RAM)
    return Altp2m(mem), mem, slots


def _errno(fn: object, *args: object) -> int:
    with pytest.raises(HypercallError) as e:
        fn(*args)  # type: ignore[operator]
    return int(e.value.errno)


def test_permits_and_slot_modes() -> None:
    assert permits(Access.rwx, READ) and permits(Access.rwx, EXEC)
    assert not permits(Access.rx, WRITE) and permits(Access.rx, EXEC)
    assert permits(Access.x, EXEC) and not permits(Access.x, READ)
    assert permits(Access.rx2rw, READ) and not permits(Access.rx2rw, WRITE)
    assert not any(permits(Access.n2rwx, k) for k in (READ, WRITE, EXEC))
    assert slot_mode(Access.rwx) is SlotMode.NORMAL
    assert slot_mode(Access.rx) is slot_mode(Access.rx2rw) is SlotMode.READONLY
    for a in (Access.n, Access.r, Access.w, Access.rw, Access.x, Access.wx, Access.n2rwx):
        assert slot_mode(a) is SlotMode.ABSENT


def test_views_lifecycle_and_errors() -> None:
    views, _mem, _slots = _views()
    assert _errno(views.create_view) == XenErrno.EINVAL  # not active
    views.set_state(True)
    assert [views.create_view() for _ in range(MAX_ALTP2M - 1)] == list(range(1, MAX_ALTP2M))
    assert _errno(views.create_view) == XenErrno.EINVAL  # all 10 in use
    assert _errno(views.destroy_view, 0) == XenErrno.EBUSY
    assert _errno(views.destroy_view, MAX_ALTP2M) == XenErrno.EBUSY
    views.switch_view(3)
    assert _errno(views.destroy_view, 3) == XenErrno.EBUSY  # in use
    views.switch_view(0)
    views.destroy_view(3)
    assert _errno(views.destroy_view, 3) == XenErrno.EBUSY  # gone
    assert _errno(views.switch_view, 3) == XenErrno.EINVAL
    assert _errno(views.switch_view, MAX_ALTP2M) == XenErrno.EINVAL
    assert views.create_view() == 3  # the first free index again
    views.set_state(False)
    assert views.views == [None] * MAX_ALTP2M and views.current == 0


def test_change_gfn_maps_another_frame_in_its_view_only() -> None:
    views, mem, slots = _views()
    views.set_state(True)
    v = views.create_view()
    views.change_gfn(v, 5, 9)
    assert slots.at(5) == (mem.host_address(5 * P), False)  # view 0 is current
    views.switch_view(v)
    assert slots.at(5) == (mem.host_address(9 * P), False)
    assert views.frame_in(None, 5) == 9 and views.frame_in(0, 5) == 5
    views.switch_view(0)
    assert slots.at(5) == (mem.host_address(5 * P), False)
    views.switch_view(v)
    views.change_gfn(v, 5, INVALID_GFN)  # revert
    assert slots.at(5) == (mem.host_address(5 * P), False)
    assert _errno(views.change_gfn, v, 5, 100) == XenErrno.EINVAL  # not RAM
    assert _errno(views.change_gfn, v, 100, 5) == XenErrno.EINVAL
    assert _errno(views.change_gfn, 7, 5, 6) == XenErrno.EINVAL  # no such view
    assert mem.overrides() == {}


def test_access_rights_shape_slots_only_with_a_listener() -> None:
    views, mem, slots = _views()
    views.set_state(True)
    v = views.create_view()
    views.set_mem_access(v, 4, Access.r)
    views.set_mem_access(0, 6, Access.rx)
    views.switch_view(v)
    assert slots.at(4) == (mem.host_address(4 * P), False)  # nobody listens: mapped
    views.listener = object()
    views.relayout()
    assert slots.at(4) is None  # r only: no slot, every access exits
    assert slots.at(6) == (mem.host_address(6 * P), True)  # host access seen through the view
    assert views.get_mem_access(v, 4) is Access.r
    assert views.get_mem_access(v, 6) is Access.rx  # no entry of its own: the host's
    assert views.get_mem_access(0, 7) is Access.rwx
    assert _errno(views.set_mem_access, v, 4, 11) == XenErrno.EINVAL
    views.set_mem_access(v, 100, 1)  # no RAM: skipped in a view
    assert _errno(views.set_mem_access, 0, 100, 1) == XenErrno.ESRCH  # refused in the host's
    assert _errno(views.get_mem_access, v, 100) == XenErrno.ESRCH
    views.set_mem_access(v, INVALID_GFN, Access.rx)  # gfn ~0: the default access
    assert views.get_mem_access(v, INVALID_GFN) is Access.rx
    views.set_mem_access(v, INVALID_GFN, Access.rwx)
    assert _errno(views.set_mem_access, 8, 4, 1) == XenErrno.EINVAL  # no view 8
    views.set_mem_access(v, 4, Access.default)
    assert slots.at(4) == (mem.host_address(4 * P), False)


def test_set_mem_access_multi_stops_at_a_bad_entry_keeping_the_earlier_ones() -> None:
    views, _mem, _slots = _views()
    views.set_state(True)
    v = views.create_view()
    assert _errno(views.set_mem_access_multi, v, [(1, 1), (200, 1), (2, 11), (3, 1)]) \
        == XenErrno.EINVAL
    assert [views.get_mem_access(v, g) for g in (1, 2, 3)] == [Access.r, Access.rwx, Access.rwx]
    views.set_mem_access_multi(v, [(1, 7), (2, 5)])
    assert (views.get_mem_access(v, 1), views.get_mem_access(v, 2)) == (Access.rwx, Access.rx)


def test_pins_and_frames_that_go_away() -> None:
    views, mem, slots = _views()
    views.set_state(True)
    v = views.create_view()
    views.change_gfn(v, 3, 8)
    views.set_mem_access(v, 3, Access.x)
    views.listener = object()
    views.switch_view(v)
    assert slots.at(3) is None
    views.pin(3, 8)
    assert slots.at(3) == (mem.host_address(8 * P), False)
    views.unpin(3)
    assert slots.at(3) is None
    # The frame behind the remap is ballooned out: the view falls back to gfn 3's own.
    mem.unmap(Gfn(8))
    assert views.frame_in(None, 3) == 3
    views.pin(3, views.frame_in(None, 3))
    assert mem.override_of(3) == Override(None, SlotMode.NORMAL)


def test_suppress_ve_is_recorded() -> None:
    views, _mem, _slots = _views()
    views.set_state(True)
    v = views.create_view()
    assert views.get_suppress_ve(v, 2) is True
    views.set_suppress_ve(v, 2, False)
    assert views.get_suppress_ve(v, 2) is False
    assert _errno(views.set_suppress_ve, v, 500, True) == XenErrno.ESRCH
    assert _errno(views.get_suppress_ve, 9, 2) == XenErrno.EINVAL


def test_xl_cfg_altp2m(tmp_path: object) -> None:
    from pathlib import Path

    from pyxen.toolstack.domain_config import DomainConfig
    from pyxen.toolstack.xlcfg import XlCfgError, parse_xl_cfg

    assert isinstance(tmp_path, Path)
    kernel = tmp_path / "k.elf"
    kernel.write_bytes(b"")
    cfg = tmp_path / "d.cfg"

    def mode(extra: str) -> int:
        text = f'name = "d"\nkernel = "{kernel}"\n{extra}'
        return DomainConfig.from_xl(parse_xl_cfg(text, str(cfg)), cfg).altp2m

    assert mode("") == 0
    assert mode('altp2m = "external"\n') == 2
    assert mode('altp2m = "mixed"\n') == 1
    assert mode("altp2m = 3\n") == 3
    assert mode("altp2mhvm = 1\n") == 1
    assert mode('altp2m = "disabled"\naltp2mhvm = 1\n') == 0  # altp2m wins, as in xl
    with pytest.raises(XlCfgError, match=r"altp2m must be between 0 and 3"):
        mode("altp2m = 4\n")
    with pytest.raises(XlCfgError, match=r"altp2m must be an altp2m mode"):
        mode('altp2m = "sometimes"\n')
