"""blkback's per-device state machine (services/blkback/vbd.py) against a xenstore
held in a dict and a control connection that hands out real pages and eventfds.

Each test plays the toolstack and the frontend by writing their keys, calls
``Vbd.update`` as blkback's main loop does on a watch event, and checks
what the backend published.  The serving thread runs for real on the
mapped ring page; requests themselves are covered by test_blkback_requests.
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pyxen.control.client import CopyBuffer
from pyxen.services.blkback.vbd import MAX_RING_PAGE_ORDER, Vbd

BE = "/local/domain/0/backend/vbd/3/51712"
FE = "/local/domain/3/device/vbd/51712"


class FakeXenstore:
    def __init__(self) -> None:
        self.nodes: dict[str, str] = {}

    def read_text(self, path: str) -> str | None:
        return self.nodes.get(path)

    def write(self, path: str, value: str) -> None:
        self.nodes[path] = value

    def rm(self, path: str) -> None:
        for key in [k for k in self.nodes if k == path or k.startswith(path + "/")]:
            del self.nodes[key]


class FakePage:
    def __init__(self) -> None:
        self.page = mmap.mmap(-1, mmap.PAGESIZE)
        self.unmapped = False

    def unmap(self) -> None:
        self.page.close()
        self.unmapped = True


class FakeClient:
    def __init__(self) -> None:
        self.pages: list[FakePage] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.bound: dict[int, int] = {}

    def map_grant(self, domid: int, ref: int, readonly: bool = False) -> FakePage:
        page = FakePage()
        self.pages.append(page)
        return page

    def call_fds(self, op: str, **args: Any) -> tuple[Any, list[int]]:
        assert op == "evtchn_bind"
        fd = os.eventfd(0, os.EFD_NONBLOCK)
        self.bound[args["port"]] = fd
        return {"local_port": 40 + len(self.bound)}, [fd]

    def call(self, op: str, **args: Any) -> Any:
        self.calls.append((op, args))
        return None

    def copy_buffer(self, size: int) -> CopyBuffer:
        return CopyBuffer(1, mmap.mmap(-1, size))


@pytest.fixture
def world(tmp_path: Path) -> tuple[FakeXenstore, FakeClient, Vbd, Path]:
    xs, client = FakeXenstore(), FakeClient()
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(1 << 20))
    xs.nodes.update({
        f"{BE}/frontend": FE, f"{BE}/frontend-id": "3", f"{BE}/online": "1",
        f"{BE}/params": f"raw:{img}", f"{BE}/mode": "w", f"{BE}/device-type": "disk",
        f"{BE}/discard-enable": "1", f"{BE}/state": "1",
        f"{FE}/backend": BE, f"{FE}/state": "1",
    })
    lines: list[str] = []
    vbd = Vbd(xs, client, 3, 51712, lines.append)  # type: ignore[arg-type]
    yield xs, client, vbd, img
    vbd.close()


def _frontend_ready(xs: FakeXenstore, **extra: str) -> None:
    xs.nodes.update({f"{FE}/ring-ref": "8", f"{FE}/event-channel": "5",
                     f"{FE}/protocol": "x86_32-abi", f"{FE}/state": "3"})
    xs.nodes.update({f"{FE}/{k.replace('_', '-')}": v for k, v in extra.items()})


def test_full_handshake_and_close(world: tuple[FakeXenstore, FakeClient, Vbd, Path]) -> None:
    xs, client, vbd, _ = world
    assert vbd.update()
    n = xs.nodes
    assert n[f"{BE}/state"] == "2"
    assert (n[f"{BE}/feature-flush-cache"], n[f"{BE}/feature-barrier"],
            n[f"{BE}/feature-discard"], n[f"{BE}/feature-max-indirect-segments"],
            n[f"{BE}/max-ring-page-order"]) == ("1", "1", "1", "256", str(MAX_RING_PAGE_ORDER))
    assert f"{BE}/sectors" not in n  # published on connect
    _frontend_ready(xs)
    vbd.update()
    assert n[f"{BE}/state"] == "4"
    assert (n[f"{BE}/sectors"], n[f"{BE}/sector-size"], n[f"{BE}/info"]) == ("2048", "512", "0")
    assert vbd.link is not None and vbd.link.backend.abi.value == "x86_32-abi"
    xs.write(f"{FE}/state", "5")
    vbd.update()
    assert n[f"{BE}/state"] == "5" and vbd.link is None
    assert client.pages[0].unmapped
    assert ("evtchn_unbind", {"local_port": 41}) in client.calls
    xs.write(f"{FE}/state", "6")
    vbd.update()
    assert n[f"{BE}/state"] == "6" and vbd.image is None  # the image file is let go
    xs.write(f"{FE}/state", "1")  # the frontend starts over (GRUB, then its OS)
    vbd.update()
    assert n[f"{BE}/state"] == "2"


def test_a_multi_page_ring(world: tuple[FakeXenstore, FakeClient, Vbd, Path]) -> None:
    xs, client, vbd, _ = world
    vbd.update()
    _frontend_ready(xs, ring_page_order="2")
    del xs.nodes[f"{FE}/ring-ref"]
    xs.nodes.update({f"{FE}/ring-ref{i}": str(10 + i) for i in range(4)})
    vbd.update()
    assert xs.nodes[f"{BE}/state"] == "4" and len(client.pages) == 4
    assert vbd.link is not None and vbd.link.ring.size == 128  # 4 pages of 108-byte slots


@pytest.mark.parametrize(("keys", "error"), [
    ({"protocol": "arm-abi"}, "protocol"),
    ({"ring_page_order": str(MAX_RING_PAGE_ORDER + 1)}, "max-ring-page-order"),
    ({"ring-ref": "x8"}, "not a number"),
    ({"multi_queue_num_queues": "4"}, "offers 1"),
])
def test_a_frontend_with_bad_keys_is_refused(
        world: tuple[FakeXenstore, FakeClient, Vbd, Path], keys: dict[str, str],
        error: str) -> None:
    xs, client, vbd, _ = world
    vbd.update()
    _frontend_ready(xs)
    xs.nodes.update({f"{FE}/{k.replace('_', '-')}": v for k, v in keys.items()})
    vbd.update()
    assert xs.nodes[f"{BE}/state"] == "5"
    assert error in xs.nodes[f"{BE}/error"]
    assert vbd.link is None and all(p.unmapped for p in client.pages)


def test_an_image_that_will_not_open(world: tuple[FakeXenstore, FakeClient, Vbd, Path]
                                     ) -> None:
    xs, _, vbd, img = world
    xs.write(f"{BE}/params", f"raw:{img}.missing")
    vbd.update()
    assert xs.nodes[f"{BE}/state"] == "6"
    assert "cannot open it read-write" in xs.nodes[f"{BE}/error"]
    vbd.update()
    assert xs.nodes[f"{BE}/state"] == "6"  # not retried while the frontend waits
    xs.write(f"{BE}/params", f"vhd:{img}")
    xs.write(f"{BE}/state", "1")  # the toolstack attaches it again
    vbd.update()
    assert xs.nodes[f"{BE}/state"] == "6"
    assert "not supported" in xs.nodes[f"{BE}/error"]


def test_read_only_disks(world: tuple[FakeXenstore, FakeClient, Vbd, Path]) -> None:
    xs, _, vbd, _ = world
    xs.write(f"{BE}/mode", "r")
    vbd.update()
    assert xs.nodes[f"{BE}/feature-discard"] == "0"
    _frontend_ready(xs)
    vbd.update()
    assert xs.nodes[f"{BE}/info"] == "4"  # VDISK_READONLY


def test_detach_and_removal(world: tuple[FakeXenstore, FakeClient, Vbd, Path]) -> None:
    xs, _, vbd, _ = world
    vbd.update()
    _frontend_ready(xs)
    vbd.update()
    xs.write(f"{BE}/online", "0")  # block-detach: the frontend is still connected
    xs.write(f"{BE}/state", "5")
    xs.write(f"{FE}/state", "4")
    vbd.update()
    assert vbd.link is not None  # still served until the frontend lets go
    xs.write(f"{FE}/state", "6")
    vbd.update()
    assert xs.nodes[f"{BE}/state"] == "6" and vbd.link is None
    xs.rm(BE)
    assert not vbd.update()  # the toolstack removed it


def test_a_restarted_backend_resumes_at_the_published_responses(
        world: tuple[FakeXenstore, FakeClient, Vbd, Path]) -> None:
    xs, client, vbd, _ = world
    _frontend_ready(xs)
    xs.write(f"{BE}/state", "4")  # as the previous blkback left it
    xs.write(f"{FE}/state", "4")
    real_map = client.map_grant

    def map_with_indices(domid: int, ref: int, readonly: bool = False) -> FakePage:
        page = real_map(domid, ref, readonly)
        page.page[0:16] = (7).to_bytes(4, "little") * 2 + (5).to_bytes(4, "little") * 2
        return page

    client.map_grant = map_with_indices  # type: ignore[method-assign]
    vbd.update()
    assert vbd.link is not None and "resumed" in vbd_log(vbd)
    # The two requests the old backend took but never answered are answered now.
    page = client.pages[0].page
    deadline = time.monotonic() + 30
    while int.from_bytes(page[8:12], "little") != 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert int.from_bytes(page[8:12], "little") == 7


def vbd_log(vbd: Vbd) -> str:
    return "\n".join(vbd.log.__self__)  # type: ignore[attr-defined]
