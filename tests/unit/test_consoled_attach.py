"""consoled attaching consoles: one that fails is tried again, and said once.

Past 1024 domains the hypervisor refused consoled's ring mappings (ENOSPC),
and consoled never tried those domains again: their output was lost for
good.  The control connection here is a stand-in that refuses the mapping
until told otherwise; everything else is the real Consoled.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pyxen.services.consoled.service as svc
from pyxen.abi.hvm import HvmParam
from pyxen.control.client import MappedPage
from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import ControlError


class Hypervisor:
    """Domain 1 has a console; domain 2 has none (event channel 0)."""

    def __init__(self) -> None:
        self.generation = 1
        self.refuse = True
        self.maps = 0

    def call(self, op: str, **args: Any) -> Any:
        if op == "generation":
            return self.generation
        if op == "list":
            assert args == {"brief": True}  # not the full dominfo of every domain
            return [{"domid": d, "name": f"g{d}", "dying": False} for d in (1, 2)]
        if op == "param":
            port = {1: 3, 2: 0}[args["domid"]]
            return {"value": port if args["index"] == HvmParam.CONSOLE_EVTCHN else 0x10}
        return {}  # evtchn_notify, evtchn_unbind, foreign_unmap

    def call_fds(self, op: str, **args: Any) -> tuple[Any, list[int]]:
        assert op == "evtchn_bind", op
        return {"local_port": 7}, [os.eventfd(0, os.EFD_NONBLOCK)]

    def _map(self, domid: int) -> MappedPage:
        self.maps += 1
        if self.refuse:
            raise ControlError("ENOSPC", "this connection already has 1024 pages mapped")
        return MappedPage(self, "foreign", domid, 1, mmap.mmap(-1, mmap.PAGESIZE))  # type: ignore[arg-type]

    def map_grant(self, domid: int, ref: int) -> MappedPage:
        return self._map(domid)

    def map_foreign(self, domid: int, gfn: int) -> MappedPage:
        return self._map(domid)

    def close(self) -> None:
        pass


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[svc.Consoled, Hypervisor, list[float]]]:
    clock = [100.0]
    monkeypatch.setattr(svc.time, "monotonic", lambda: clock[0])
    paths = InstancePaths(tmp_path / "run", tmp_path / "log")
    paths.run_dir.mkdir()
    hv = Hypervisor()
    service = svc.Consoled(paths, client=hv)  # type: ignore[arg-type]
    yield service, hv, clock
    service.close()


def test_a_refused_console_is_tried_again_and_reported_once(
        world: tuple[svc.Consoled, Hypervisor, list[float]],
        capsys: pytest.CaptureFixture[str]) -> None:
    service, hv, clock = world
    service.refresh()
    assert service.consoles == {} and hv.maps == 2  # grant, then foreign: both refused
    clock[0] += 1
    hv.generation += 1  # another domain came or went: not yet time to try d1 again
    service.refresh()
    assert hv.maps == 2
    clock[0] += svc.RETRY_SECONDS
    service.refresh()  # due, though the domain list did not move
    assert hv.maps == 4 and service.consoles == {}
    hv.refuse = False
    clock[0] += svc.RETRY_SECONDS
    service.refresh()
    assert list(service.consoles) == [1] and 1 not in service.failed
    assert service.failed == {2: float("inf")}  # no PV console: never tried again
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["consoled: cannot attach d1's console: this connection already has "
                     "1024 pages mapped (trying again every 10 s)"]
