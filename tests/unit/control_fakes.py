"""A stand-in hypervisor for command-line tests that need no KVM.

``FakeDaemon(run_dir)`` serves ``control.sock`` with the real wire protocol
(control/protocol.py) and canned results per operation, and ``console.sock``
with consoled's viewer handshake: the first ``console_refusals`` viewers get
consoled's answer for a domain it has not attached yet, later ones ``OK`` and
then ``console_output``.  It runs on daemon threads until ``close()``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path
from typing import Any

from pyxen.control.protocol import PROTOCOL_VERSION, receive, send


def domain_info(domid: int, name: str) -> dict[str, Any]:
    return {"domid": domid, "name": name, "uuid": "00" * 16, "current_memkb": 16384,
            "max_memkb": 16384, "vcpus": 1, "vcpu_online": 1, "running": False,
            "blocked": True, "paused": False, "shutdown": False, "shutdown_reason": None,
            "dying": False, "cpu_time_ns": 1_000_000, "start_time": 0.0, "kernel": "/k",
            "emulated": {}}


class FakeDaemon:
    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = {}
        self.errors: dict[str, tuple[str, str]] = {}  # op -> (code, message)
        self.console_refusals = 0
        self.console_output = b""
        self.viewers = 0
        self._socks: list[socket.socket] = []
        for name, serve in (("control.sock", self._control), ("console.sock", self._console)):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(run_dir / name))
            listener.listen(8)
            self._socks.append(listener)
            threading.Thread(target=self._accept, args=(listener, serve), daemon=True).start()

    def _accept(self, listener: socket.socket, serve: Any) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    def _control(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, EOFError):
            while True:
                request, _ = receive(conn)
                op = request["op"]
                reply: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": request["id"]}
                if op in self.errors:
                    code, message = self.errors[op]
                    reply.update(ok=False, error={"code": code, "message": message})
                else:
                    reply.update(ok=True, result=self.results.get(op))
                send(conn, reply)

    def _console(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            domid = b""
            while not domid.endswith(b"\n"):
                chunk = conn.recv(1)
                if not chunk:
                    return
                domid += chunk
            self.viewers += 1
            if self.viewers <= self.console_refusals:
                conn.sendall(b"ERR no console for domain " + domid)
                return
            conn.sendall(b"OK\n" + self.console_output)

    def close(self) -> None:
        for listener in self._socks:
            listener.close()
