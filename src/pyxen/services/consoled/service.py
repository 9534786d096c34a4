"""consoled: console ring backend, console logs and live viewers for every domain.

Design: one process, one thread, one selectors loop.  It talks to the
hypervisor only through the control socket: ``generation`` every half second
and, when it moved (a domain came or went), ``list`` (brief) to find domains,
``param`` for CONSOLE_PFN/CONSOLE_EVTCHN, ``grant_map`` of grant 0 (as
xenconsoled; ``foreign_map`` of the frame if that fails) for the
ring page (a file holding that page alone, mmapped here) and ``evtchn_bind`` for the
console port (an eventfd the hypervisor signals when the guest sends).

Output read from a ring goes to ``<log-dir>/console/guest-NAME.log`` (xl's
name) and to every viewer attached to that domain.  Viewers connect to
``<run-dir>/console.sock``, send the domain id as one text line, get
``OK\\n`` (or ``ERR reason\\n``) and then a raw byte stream both ways; their
bytes become the guest's keyboard input.  Viewer sockets are non-blocking
with a bounded backlog each (:mod:`.viewers`): a viewer that stops reading
is disconnected, and never holds up the other viewers, the log or the guest.

Restarts: if consoled dies, the hypervisor releases its event-channel ends
with its control connection, so a new consoled binds the same ports again
and goes on from the ring indices where the old one stopped.
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pyxen.abi.grant_table import GNTTAB_RESERVED_CONSOLE
from pyxen.abi.hvm import HvmParam
from pyxen.control.client import ControlClient, MappedPage
from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import ControlError
from pyxen.services.consoled.sources import RingSource, SerialSource
from pyxen.services.consoled.viewers import Viewer
from pyxen.services.runner import run_service

REFRESH_SECONDS = 0.5
RETRY_SECONDS = 10.0  # a console that could not be attached is tried again this often
MAX_PENDING_INPUT = 64 * 1024
VIEWER_HELLO_MAX = 64


class AttachError(Exception):
    """A console that could not be attached this time (the message says why)."""


@dataclass(eq=False)
class GuestConsole:
    domid: int
    name: str
    source: RingSource | SerialSource
    log: BinaryIO
    viewers: set[Viewer] = field(default_factory=set)
    pending_input: bytearray = field(default_factory=bytearray)


class Consoled:
    def __init__(self, paths: InstancePaths, client: ControlClient | None = None) -> None:
        self.paths = paths
        self.client = client or ControlClient.connect(paths)
        self.sel = selectors.DefaultSelector()
        self.consoles: dict[int, GuestConsole] = {}
        # Domains whose console could not be attached, and when to try again
        # (math.inf: never, the domain has no PV console).
        self.failed: dict[int, float] = {}
        self.generation: int | None = None  # the domain list's, as of the last refresh
        self.socket_path = paths.run_dir / "console.sock"
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.listener.bind(str(self.socket_path))
        finally:
            os.umask(old)
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "listener")
        (paths.log_dir / "console").mkdir(parents=True, exist_ok=True)
        self.stopping = False

    # -- domains --------------------------------------------------------------------

    def refresh(self) -> None:
        now = time.monotonic()
        generation = self.client.call("generation")
        retry_due = any(when <= now for when in self.failed.values())
        if generation == self.generation and not retry_due:
            return  # no domain came or went
        live = {i["domid"]: i for i in self.client.call("list", brief=True) if i["domid"] != 0}
        self.generation = generation
        for domid in list(self.consoles):
            if domid not in live or live[domid]["dying"]:
                self.detach(domid)
        for domid in self.failed.keys() - live.keys():
            del self.failed[domid]
        for domid, info in live.items():
            if (domid not in self.consoles and not info["dying"]
                    and self.failed.get(domid, now) <= now):
                self.attach(domid, str(info["name"]), serial=bool(info.get("serial")))

    def attach(self, domid: int, name: str, serial: bool = False) -> None:
        """Serve ``domid``'s console.  One that fails (the hypervisor refused a mapping,
        no descriptor was left ...) is tried again every RETRY_SECONDS, said once."""
        try:
            source = self._serial(domid) if serial else self._ring(domid)
            if source is None:
                self.failed[domid] = math.inf
                return
            try:
                log = open(self.paths.console_log(name), "ab", buffering=0)  # noqa: SIM115
            except OSError as e:
                source.close()
                raise AttachError(f"its log: {e}") from None
        except AttachError as e:
            if domid not in self.failed:
                print(f"consoled: cannot attach d{domid}'s {'serial ' if serial else ''}"
                      f"console: {e} (trying again every {RETRY_SECONDS:.0f} s)",
                      file=sys.stderr)
            self.failed[domid] = time.monotonic() + RETRY_SECONDS
            return
        self.failed.pop(domid, None)
        console = GuestConsole(domid, name, source, log)
        self.consoles[domid] = console
        self.sel.register(source.fileno(), selectors.EVENT_READ, console)
        self.pump(console)

    def _serial(self, domid: int) -> SerialSource | None:
        """An HVM domain's COM1, from its device model through the hypervisor."""
        try:
            _result, fds = self.client.call_fds("serial_connect", domid=domid)
        except (ControlError, OSError) as e:
            raise AttachError(str(e)) from None
        return SerialSource(fds[0])

    def _ring(self, domid: int) -> RingSource | None:
        """The domain's PV console ring; None if it has none."""
        try:
            pfn = self.client.call("param", domid=domid, index=HvmParam.CONSOLE_PFN)["value"]
            port = self.client.call("param", domid=domid, index=HvmParam.CONSOLE_EVTCHN)["value"]
            if not port:  # no PV console (a dom0less domain without xen,enhanced)
                return None
            mapping = self._map_ring(domid, pfn)
        except (ControlError, OSError, KeyError) as e:
            raise AttachError(str(e)) from None
        try:
            bound, efds = self.client.call_fds("evtchn_bind", domid=domid, port=port)
        except (ControlError, OSError, KeyError) as e:
            mapping.unmap()
            raise AttachError(str(e)) from None
        return RingSource(self.client, mapping, bound["local_port"], efds[0])

    def _map_ring(self, domid: int, pfn: int) -> MappedPage:
        """The ring page through grant 0 (as xenconsoled), else a foreign map of the frame."""
        try:
            return self.client.map_grant(domid, GNTTAB_RESERVED_CONSOLE)
        except ControlError:
            return self.client.map_foreign(domid, pfn)

    def detach(self, domid: int) -> None:
        console = self.consoles.pop(domid)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(console.source.fileno())
        console.source.close()
        console.log.close()
        for viewer in list(console.viewers):
            self.drop_viewer(viewer)

    def pump(self, console: GuestConsole) -> None:
        """Move output to the log and viewers, and queued input to the guest."""
        source = console.source
        data = source.read_output()
        if source.eof:  # stop selecting a closed serial port; refresh detaches it
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(source.fileno())
        notify = bool(data)
        if data:
            console.log.write(data)
            for viewer in list(console.viewers):
                self.send(viewer, data)
        if console.pending_input:
            done = source.write_input(bytes(console.pending_input))
            del console.pending_input[:done]
            notify = notify or done > 0
        if notify:
            source.notify()

    # -- viewers ----------------------------------------------------------------------

    def accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            sock, _ = self.listener.accept()
            sock.setblocking(False)
            self.sel.register(sock, selectors.EVENT_READ, Viewer(sock))

    def send(self, viewer: Viewer, data: bytes) -> None:
        """Send to a viewer without blocking; drop it if it cannot keep up."""
        if not viewer.send(data):
            print(f"consoled: dropped a viewer of d{viewer.domid}: it stopped reading",
                  file=sys.stderr)
            self.drop_viewer(viewer)
            return
        self._watch(viewer)

    def viewer_writable(self, viewer: Viewer) -> None:
        if viewer.flush():
            self._watch(viewer)
        else:
            self.drop_viewer(viewer)

    def _watch(self, viewer: Viewer) -> None:
        """Watch a viewer for writability exactly while it has a backlog."""
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if viewer.wants_write() else 0)
        if self.sel.get_key(viewer.sock).events != events:
            self.sel.modify(viewer.sock, events, viewer)

    def viewer_readable(self, viewer: Viewer) -> None:
        try:
            data = viewer.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop_viewer(viewer)
            return
        if viewer.domid is None:
            viewer.hello += data
            if b"\n" not in viewer.hello:
                if len(viewer.hello) > VIEWER_HELLO_MAX:
                    self.drop_viewer(viewer)
                return
            line, _, rest = bytes(viewer.hello).partition(b"\n")
            text = line.decode(errors="replace").strip()
            console = self.consoles.get(int(text)) if text.isdigit() else None
            if console is None:
                with contextlib.suppress(OSError):
                    viewer.sock.send(f"ERR no console for domain {text}\n".encode())
                self.drop_viewer(viewer)
                return
            viewer.domid = console.domid
            console.viewers.add(viewer)
            self.send(viewer, b"OK\n")
            if viewer.sock.fileno() < 0:
                return
            data = rest
        console = self.consoles.get(viewer.domid)
        if console is None:
            self.drop_viewer(viewer)
            return
        if data and len(console.pending_input) + len(data) <= MAX_PENDING_INPUT:
            console.pending_input += data
            self.pump(console)

    def drop_viewer(self, viewer: Viewer) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(viewer.sock)
        if viewer.domid is not None and viewer.domid in self.consoles:
            self.consoles[viewer.domid].viewers.discard(viewer)
        viewer.sock.close()

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        next_refresh = 0.0
        while not self.stopping:
            now = time.monotonic()
            if now >= next_refresh:
                self.refresh()
                next_refresh = now + REFRESH_SECONDS
            self.serve_once(max(next_refresh - time.monotonic(), 0))

    def serve_once(self, timeout: float) -> None:
        """Handle what is ready within ``timeout`` seconds (one select round)."""
        for key, mask in self.sel.select(timeout):
            data: Any = key.data
            if data == "listener":
                self.accept()
            elif isinstance(data, GuestConsole):
                if data.domid in self.consoles:
                    self.pump(data)
            elif isinstance(data, Viewer):
                if mask & selectors.EVENT_WRITE and data.sock.fileno() >= 0:
                    self.viewer_writable(data)
                if mask & selectors.EVENT_READ and data.sock.fileno() >= 0:
                    self.viewer_readable(data)

    def close(self) -> None:
        for domid in list(self.consoles):
            self.detach(domid)
        self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.client.close()


def main(argv: list[str] | None = None) -> int:
    return run_service("consoled", __doc__.splitlines()[0], Consoled, argv)
