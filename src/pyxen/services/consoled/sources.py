"""Where a domain's console bytes come from: its PV console ring, or its emulated serial port.

``RingSource`` is the PV console (xenconsoled's job): the ring page mapped
through grant 0 and an event channel bound through the control socket.
``SerialSource`` is an HVM domain's COM1 (``serial = "pty"``): a stream
socket whose other end is the device model's UART, handed over by the
hypervisor (control operation ``serial_connect``).  xl console attaches
to the serial port of an HVM guest by default, and so does consoled.

Both never block: output is what is there now, input is taken as far as
the guest side has room.
"""

from __future__ import annotations

import contextlib
import os
import socket

from pyxen.control.client import ControlClient, MappedPage
from pyxen.control.protocol import ControlError
from pyxen.services.consoled.ring import ConsoleRing

SERIAL_READ = 65536


class RingSource:
    def __init__(self, client: ControlClient, mapping: MappedPage, local_port: int,
                 eventfd: int) -> None:
        self.client = client
        self.mapping = mapping
        self.ring = ConsoleRing(memoryview(mapping.page))
        self.local_port = local_port
        self.eventfd = eventfd
        self.eof = False  # a ring never ends

    def fileno(self) -> int:
        return self.eventfd

    def read_output(self) -> bytes:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.eventfd)
        return self.ring.read_output()

    def write_input(self, data: bytes) -> int:
        return self.ring.write_input(data)

    def notify(self) -> None:
        with contextlib.suppress(ControlError):
            self.client.call("evtchn_notify", local_port=self.local_port)

    def close(self) -> None:
        with contextlib.suppress(ControlError, OSError):
            self.client.call("evtchn_unbind", local_port=self.local_port)
        os.close(self.eventfd)
        self.ring.page.release()
        self.mapping.unmap()


class SerialSource:
    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.eof = False  # the device model's end closed: nothing more will come

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_output(self) -> bytes:
        chunks = []
        while True:
            try:
                data = self.sock.recv(SERIAL_READ)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self.eof = True
                break
            chunks.append(data)
        return b"".join(chunks)

    def write_input(self, data: bytes) -> int:
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return len(data)  # the device model is gone: nothing will take it

    def notify(self) -> None:
        pass

    def close(self) -> None:
        self.sock.close()
