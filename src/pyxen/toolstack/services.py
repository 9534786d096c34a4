"""Starting and supervising the service processes (consoled, xenstored) of a daemon.

Each service is a child process of the hypervisor daemon running
``python -m <module> --run-dir D --log-dir D``.  Each start gets a fresh
*service* connection to the control server (``connect``, i.e.
``ControlServer.attach_service``): the child inherits its end and finds it
in ``PYXEN_CONTROL_FD`` (see control/server.py, "Peers and roles").  A service that exits (a
crash, a SIGKILL) is started again after ``RESTART_DELAY`` seconds; guests
keep running meanwhile, and the new instance reconnects to them through
the control socket.  Stopping terminates the children (SIGTERM, then
SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from pyxen.control.paths import InstancePaths

RESTART_DELAY = 1.0
STOP_GRACE = 5.0


class ServiceSupervisor:
    def __init__(self, name: str, module: str, paths: InstancePaths, output: TextIO,
                 log: Callable[[str], None],
                 connect: Callable[[str], socket.socket] | None = None) -> None:
        self.name = name
        self.connect = connect
        self.argv = [sys.executable, "-m", module, "--run-dir", str(paths.run_dir),
                     "--log-dir", str(paths.log_dir)]
        self.output = output  # the child's stdout and stderr
        self.log = log  # the hypervisor console (keeps lines whole)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name=f"supervise-{name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            conn = self.connect(self.name) if self.connect is not None else None
            env = dict(os.environ)
            if conn is not None:
                env["PYXEN_CONTROL_FD"] = str(conn.fileno())
            try:
                self.process = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=self.output,
                    stderr=self.output, env=env,
                    pass_fds=() if conn is None else (conn.fileno(),))
            except OSError as e:
                self.log(f"cannot start {self.name}: {e}")
                self._stop.wait(RESTART_DELAY)
                continue
            finally:
                if conn is not None:
                    conn.close()  # the child's copy is its connection now
            self.starts += 1
            status = self.process.wait()
            if self._stop.is_set():
                return
            self.log(f"{self.name} exited with status {status}: restarting it")
            self._stop.wait(RESTART_DELAY)

    def stop(self) -> None:
        self._stop.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(RuntimeError):
            self._thread.join(STOP_GRACE)
