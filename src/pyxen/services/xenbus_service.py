"""A backend service process (blkback, netback): one for every domain's devices of a kind.

Design: the main thread owns one xenstore connection (xenstored's Unix
socket) with a watch on ``/local/domain/0/backend/KIND`` and one on each
device's frontend ``state`` node.  Every watch event leads to ``scan``:
list the backend directories, make a device (a ``XenbusDevice`` subclass:
services/xenbus_device.py) for each new one,
let each take its handshake steps (``Vbd.update``), and forget those whose
directory is gone (the toolstack removed the device or the domain).  State
is therefore re-read from xenstore each time rather than trusted from
memory, which is also what lets a restarted blkback pick up devices where
the last one left them.  Each connected device has its own serving thread
threads (xenbus_device.py); they share the control connection (thread-safe).

The hypervisor is reached only through the control socket this process
inherited from the daemon (role *service*): ``grant_map`` for ring pages,
``evtchn_bind``/``evtchn_notify`` for event channels, ``grant_copy`` for
data.  If xenstored goes away the connection is made again (every
``RECONNECT`` seconds) and the watches set again; devices keep serving
meanwhile.  SIGTERM stops the threads and leaves xenstore as it is, so the
next blkback resumes every connected device.
"""

from __future__ import annotations

import sys
import time
import traceback

from pyxen.control.client import ControlClient
from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import ControlError
from pyxen.control.xenstore import XenstoreClient, XenstoreError
from pyxen.readiness import readable
from pyxen.services.xenbus_device import XenbusDevice

RECONNECT = 0.5  # seconds between attempts to reach xenstored
POLL = 0.5  # the main loop looks at ``stopping`` at least this often


class XenbusBackend:
    def __init__(self, name: str, device: type[XenbusDevice], paths: InstancePaths,
                 client: ControlClient | None = None) -> None:
        self.service = name
        self.device = device
        self.root = f"/local/domain/0/backend/{device.KIND}"
        self.paths = paths
        self.client = client or ControlClient.connect(paths)
        self.xs: XenstoreClient | None = None
        self.devices: dict[tuple[int, int], XenbusDevice] = {}
        self.stopping = False

    def _connect_xenstore(self) -> XenstoreClient | None:
        try:
            xs = XenstoreClient(self.paths.xenstored_socket, timeout=10.0)
        except OSError:
            return None
        try:
            xs.watch(self.root, "backend")
        except (OSError, XenstoreError):
            xs.close()
            return None
        for dev in self.devices.values():
            dev.xs = xs
            dev.watched = None  # watches die with the old connection
        return xs

    def run(self) -> None:
        while not self.stopping:
            if self.xs is None:
                self.xs = self._connect_xenstore()
                if self.xs is None:
                    time.sleep(RECONNECT)
                    continue
            try:
                self._serve_once(self.xs)
            except (OSError, ConnectionError, XenstoreError) as e:
                self.log(f"lost xenstored ({e}); reconnecting")
                self.xs.close()
                self.xs = None

    def _serve_once(self, xs: XenstoreClient) -> None:
        if not xs.events:
            ready = readable([xs.sock.fileno()], POLL)
            if not ready:
                return
        xs.next_event()
        while xs.events:  # one scan answers every event queued so far
            xs.events.popleft()
        self.scan(xs)

    def scan(self, xs: XenstoreClient) -> None:
        present = set()
        for fe in xs.directory(self.root):
            for devid in xs.directory(f"{self.root}/{fe}"):
                if fe.isdigit() and devid.isdigit():
                    present.add((int(fe), int(devid)))
        for key in sorted(present - set(self.devices)):
            self.devices[key] = self.device(xs, self.client, key[0], key[1], self.log)
        for key, dev in sorted(self.devices.items()):
            try:
                alive = dev.update()
            except (ControlError, XenstoreError) as e:  # e.g. the domain went away
                self.log(f"{dev.name}: {e}")
                alive = key in present
            except (OSError, ConnectionError):
                raise  # xenstored is gone: run() connects again
            except Exception:  # a pyxen bug: this device waits for its next change
                self.log(f"{dev.name}: pyxen bug:\n{traceback.format_exc()}")
                alive = key in present
            if not alive or key not in present:
                dev.close()
                del self.devices[key]
                if dev.watched is not None:
                    xs.unwatch(f"{dev.watched}/state", "frontend")
                continue
            frontend = xs.read_text(f"{dev.path}/frontend")
            if frontend and dev.watched != frontend:
                xs.watch(f"{frontend}/state", "frontend")
                dev.watched = frontend

    def log(self, message: str) -> None:
        print(f"{self.service}: {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        for dev in self.devices.values():
            dev.close()
        self.devices.clear()
        if self.xs is not None:
            self.xs.close()
        self.client.close()
