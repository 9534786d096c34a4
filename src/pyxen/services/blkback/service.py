"""blkback: the PV block backend, one service process for every domain's disks.

Design: the main thread owns one xenstore connection (xenstored's Unix
socket) with a watch on ``/local/domain/0/backend/vbd`` and one on each
device's frontend ``state`` node.  Every watch event leads to ``scan``:
list the backend directories, make a :class:`~.vbd.Vbd` for each new one,
let each take its handshake steps (``Vbd.update``), and forget those whose
directory is gone (the toolstack removed the device or the domain).  State
is therefore re-read from xenstore each time rather than trusted from
memory, which is also what lets a restarted blkback pick up devices where
the last one left them.  Each connected device has its own serving thread
(vbd.py); they share the control connection (thread-safe).

The hypervisor is reached only through the control socket this process
inherited from the daemon (role *service*): ``grant_map`` for ring pages,
``evtchn_bind``/``evtchn_notify`` for the event channel, ``grant_copy``
for data.  If xenstored goes away the connection is made again (every
``RECONNECT`` seconds) and the watches set again; devices keep serving
meanwhile.  SIGTERM stops the threads and leaves xenstore as it is, so the
next blkback resumes every connected device.
"""

from __future__ import annotations

import select
import sys
import time
import traceback

from pyxen.control.client import ControlClient
from pyxen.control.paths import InstancePaths
from pyxen.control.protocol import ControlError
from pyxen.control.xenstore import XenstoreClient, XenstoreError
from pyxen.services.blkback.vbd import Vbd
from pyxen.services.runner import run_service

BACKEND_ROOT = "/local/domain/0/backend/vbd"
RECONNECT = 0.5  # seconds between attempts to reach xenstored
POLL = 0.5  # the main loop looks at ``stopping`` at least this often


def log(message: str) -> None:
    print(f"blkback: {message}", file=sys.stderr, flush=True)


class Blkback:
    def __init__(self, paths: InstancePaths, client: ControlClient | None = None) -> None:
        self.paths = paths
        self.client = client or ControlClient.connect(paths)
        self.xs: XenstoreClient | None = None
        self.devices: dict[tuple[int, int], Vbd] = {}
        self.stopping = False

    def _connect_xenstore(self) -> XenstoreClient | None:
        try:
            xs = XenstoreClient(self.paths.xenstored_socket, timeout=10.0)
        except OSError:
            return None
        try:
            xs.watch(BACKEND_ROOT, "backend")
        except (OSError, XenstoreError):
            xs.close()
            return None
        for vbd in self.devices.values():
            vbd.xs = xs
            vbd.watched = None  # watches die with the old connection
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
                log(f"lost xenstored ({e}); reconnecting")
                self.xs.close()
                self.xs = None

    def _serve_once(self, xs: XenstoreClient) -> None:
        if not xs.events:
            ready, _, _ = select.select([xs.sock], [], [], POLL)
            if not ready:
                return
        xs.next_event()
        while xs.events:  # one scan answers every event queued so far
            xs.events.popleft()
        self.scan(xs)

    def scan(self, xs: XenstoreClient) -> None:
        present = set()
        for fe in xs.directory(BACKEND_ROOT):
            for dev in xs.directory(f"{BACKEND_ROOT}/{fe}"):
                if fe.isdigit() and dev.isdigit():
                    present.add((int(fe), int(dev)))
        for key in sorted(present - set(self.devices)):
            self.devices[key] = Vbd(xs, self.client, key[0], key[1], log)
        for key, vbd in sorted(self.devices.items()):
            try:
                alive = vbd.update()
            except (ControlError, XenstoreError) as e:  # e.g. the domain went away
                log(f"vbd {key[0]}/{key[1]}: {e}")
                alive = key in present
            except (OSError, ConnectionError):
                raise  # xenstored is gone: run() connects again
            except Exception:  # a pyxen bug: this device waits for its next change
                log(f"vbd {key[0]}/{key[1]}: pyxen bug:\n{traceback.format_exc()}")
                alive = key in present
            if not alive or key not in present:
                vbd.close()
                del self.devices[key]
                if vbd.watched is not None:
                    xs.unwatch(f"{vbd.watched}/state", "frontend")
                continue
            frontend = xs.read_text(f"{vbd.path}/frontend")
            if frontend and vbd.watched != frontend:
                xs.watch(f"{frontend}/state", "frontend")
                vbd.watched = frontend

    def close(self) -> None:
        for vbd in self.devices.values():
            vbd.close()
        self.devices.clear()
        if self.xs is not None:
            self.xs.close()
        self.client.close()


def main(argv: list[str] | None = None) -> int:
    # OSError is not "lost the hypervisor" here: run() reconnects to xenstored itself.
    return run_service("blkback", __doc__.splitlines()[0], Blkback, argv,
                       lost=(ControlError, EOFError))
