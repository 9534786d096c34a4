"""consoled towards slow viewers: a viewer that never reads is disconnected
once its backlog is full, and meanwhile holds up neither the other viewer,
the console log nor the guest's ring.

consoled runs for real here (its selector loop, its viewer socket, a ring
page and an eventfd); only its control connection to the hypervisor is a
stand-in that answers the one call this test makes it send
(``evtchn_notify``, and ``evtchn_unbind`` when it closes).
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyxen.control.client import MappedPage
from pyxen.control.paths import InstancePaths
from pyxen.services.consoled.ring import OUT_CONS, OUT_OFFSET, OUT_PROD, OUT_SIZE
from pyxen.services.consoled.service import Consoled, GuestConsole
from pyxen.services.consoled.sources import RingSource
from pyxen.services.consoled.viewers import VIEWER_BACKLOG_MAX


class Hypervisor:
    """Stand-in for the control connection: records the notifications."""

    def __init__(self) -> None:
        self.notified = 0

    def call(self, op: str, **args: Any) -> Any:
        assert op in ("evtchn_notify", "evtchn_unbind", "foreign_unmap"), op
        self.notified += op == "evtchn_notify"
        return {}

    def close(self) -> None:
        pass


@pytest.fixture
def consoled(tmp_path: Path) -> Iterator[tuple[Consoled, GuestConsole]]:
    paths = InstancePaths(tmp_path / "run", tmp_path / "log")
    paths.run_dir.mkdir()
    hypervisor = Hypervisor()
    service = Consoled(paths, client=hypervisor)  # type: ignore[arg-type]
    page = mmap.mmap(-1, mmap.PAGESIZE)
    mapping = MappedPage(hypervisor, "foreign", 1, 0, page)  # type: ignore[arg-type]
    source = RingSource(hypervisor, mapping, 5,  # type: ignore[arg-type]
                        os.eventfd(0, os.EFD_NONBLOCK))
    console = GuestConsole(domid=1, name="g", source=source,
                           log=open(paths.console_log("g"), "ab", buffering=0))  # noqa: SIM115
    service.consoles[1] = console
    service.sel.register(source.fileno(), 1, console)  # EVENT_READ
    yield service, console
    service.close()


def attach(service: Consoled) -> socket.socket:
    viewers = len(service.consoles[1].viewers)
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(service.socket_path))
    s.sendall(b"1\n")
    while len(service.consoles[1].viewers) == viewers:
        service.serve_once(1)
    assert s.recv(3) == b"OK\n"
    s.setblocking(False)
    return s


def guest_writes(console: GuestConsole, data: bytes) -> None:
    """The guest's side: produce ``data`` into the out ring, then kick."""
    page = console.source.ring.page
    prod = struct.unpack_from("<I", page, OUT_PROD)[0]
    assert struct.unpack_from("<I", page, OUT_CONS)[0] == prod  # consoled kept up
    for i, b in enumerate(data):
        page[OUT_OFFSET + (prod + i) % OUT_SIZE] = b
    struct.pack_into("<I", page, OUT_PROD, (prod + len(data)) & 0xFFFF_FFFF)
    os.eventfd_write(console.source.fileno(), 1)


def drain(s: socket.socket) -> bytes:
    got = b""
    while True:
        try:
            chunk = s.recv(1 << 16)
        except BlockingIOError:
            return got
        if not chunk:
            return got
        got += chunk


def test_a_viewer_that_never_reads_stalls_nothing_and_is_dropped(
        consoled: tuple[Consoled, GuestConsole]) -> None:
    service, console = consoled
    stuck, healthy = attach(service), attach(service)
    chunk = bytes(range(256)) * (OUT_SIZE // 256)
    received = b""
    sent = 0
    saw_backlog = False
    while sent < 3 * VIEWER_BACKLOG_MAX:
        guest_writes(console, chunk)
        sent += len(chunk)
        service.serve_once(0)  # never blocks: the stuck viewer's socket is full
        received += drain(healthy)
        backlogs = [v.backlog for v in console.viewers if v.backlog]
        saw_backlog = saw_backlog or bool(backlogs)
        assert all(len(b) <= VIEWER_BACKLOG_MAX for b in backlogs)
    while service.sel.get_map() and len(received) < sent:
        service.serve_once(0)
        received += drain(healthy)
    assert received == chunk * (sent // len(chunk))  # the healthy viewer got all of it
    assert saw_backlog  # the stuck viewer was kept (with a backlog) for a while ...
    assert len(console.viewers) == 1  # ... and then disconnected
    assert service.paths.console_log("g").stat().st_size == sent  # the log has all of it
    got = drain(stuck)
    assert got.endswith(b"output is in the log]\r\n") or len(got) < sent
    assert stuck.recv(1) == b""  # closed
    assert service.client.notified > 0  # type: ignore[attr-defined]
    stuck.close()
    healthy.close()
