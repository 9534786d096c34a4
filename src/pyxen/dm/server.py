"""The device-model process's loop: ioreq slots in, device answers out.

The process is single-threaded.  It waits (``poll``) on the request
eventfd and on the serial socket.  A request wake-up makes it look at
every vCPU's slot (hv/ioreq.py has the layout and the handshake): a READY
slot is carried out on the :class:`~pyxen.dm.bus.Machine` and answered
with IORESP_READY and that vCPU's answer eventfd.  Serial bytes from the
console become COM1's input.

Interrupt lines and shutdown requests go to the hypervisor as
``xen_dm_op`` messages on the operations socket (``DmOps``), always for
this process's own domain; a line's level is sent only when it changes.

Robustness: nothing a guest does can end the loop; it ends when the
hypervisor's end of the operations socket closes (the hypervisor died or
destroyed the domain), so no device model outlives its hypervisor.  A device that raises
(a pyxen bug) is logged once per kind and the access answered with all
ones; a request the hypervisor could not have sent (bad size, a data area
outside the channel) is answered the same way.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import socket
import struct
import sys
import traceback
from typing import Any

from pyxen.abi.ioreq import (
    DM_OP_HEAD,
    FLAG_DATA_IS_PTR,
    FLAG_DIR_READ,
    FLAG_STATE_MASK,
    IOREQ_DATA,
    IOREQ_FLAGS,
    IOREQ_SIZE,
    IOREQ_STRUCT,
    REMOTE_SHUTDOWN,
    SET_ISA_IRQ_LEVEL,
    SET_PCI_INTX_LEVEL,
    SET_PCI_LINK_ROUTE,
    XEN_DM_OP_SIZE,
    DmOp,
    IoreqState,
    IoreqType,
)
from pyxen.abi.xen import ShutdownReason
from pyxen.memory.addr import PAGE_SIZE

_DOMID = struct.Struct("<H6x")
_ANSWER = struct.Struct("<q")
SERIAL_READ = 4096
_SIZES = (1, 2, 4, 8)


class DmOps:
    """The device model's side of its operations socket (pyxen.dm.bus.IrqSink)."""

    def __init__(self, sock: socket.socket, domid: int) -> None:
        self.sock = sock
        self.domid = domid
        self._levels: dict[tuple[int, ...], int] = {}

    def call(self, op: int, payload: bytes) -> int:
        message = bytearray(8 + XEN_DM_OP_SIZE)
        _DOMID.pack_into(message, 0, self.domid)
        DM_OP_HEAD.pack_into(message, 8, op, 0)
        message[16:16 + len(payload)] = payload
        self.sock.send(message)
        (rc,) = _ANSWER.unpack(self.sock.recv(_ANSWER.size))
        return int(rc)

    def _level(self, key: tuple[int, ...], level: int) -> bool:
        """Record a line's level; True if it changed (only changes are sent)."""
        if self._levels.get(key) == level:
            return False
        self._levels[key] = level
        return True

    def set_isa_irq_level(self, isa_irq: int, level: int) -> None:
        if self._level((0, isa_irq), level):
            self.call(DmOp.set_isa_irq_level, SET_ISA_IRQ_LEVEL.pack(isa_irq, level))

    def set_pci_intx_level(self, device: int, intx: int, level: int) -> None:
        if self._level((1, device, intx), level):
            self.call(DmOp.set_pci_intx_level,
                      SET_PCI_INTX_LEVEL.pack(0, 0, device, intx, level))

    def set_pci_link_route(self, link: int, isa_irq: int) -> None:
        self.call(DmOp.set_pci_link_route, SET_PCI_LINK_ROUTE.pack(link, isa_irq))

    def shutdown(self, reason: str) -> None:
        code = ShutdownReason.reboot if reason == "reboot" else ShutdownReason.poweroff
        self.call(DmOp.remote_shutdown, REMOTE_SHUTDOWN.pack(code))


class DeviceModelServer:
    def __init__(self, config: dict[str, Any], machine: Any, ops: DmOps) -> None:
        self.max_vcpus = int(config["max_vcpus"])
        self.size = PAGE_SIZE * (1 + self.max_vcpus)
        self.mem = mmap.mmap(int(config["ioreq_fd"]), self.size)
        self.request_fd = int(config["request_fd"])
        self.answer_fds = [int(fd) for fd in config["answer_fds"]]
        self.serial = socket.socket(fileno=int(config["serial_fd"]))
        self.serial.setblocking(False)
        self.machine = machine
        self.ops = ops
        self.poll = select.poll()
        self.poll.register(self.request_fd, select.POLLIN)
        self.poll.register(self.serial.fileno(), select.POLLIN)
        self.serial_open = True
        self._reported: set[str] = set()

    def serial_out(self, data: bytes) -> None:
        """COM1's output: never blocks; what the console cannot take now is dropped."""
        with contextlib.suppress(OSError):
            self.serial.send(data)

    def run(self) -> None:
        """Serve until the hypervisor goes (its end of the operations socket closes)."""
        ops = self.ops.sock.fileno()
        self.poll.register(ops, select.POLLIN)
        while True:
            for fd, events in self.poll.poll():
                if fd == self.request_fd:
                    os.eventfd_read(self.request_fd)
                    self.serve_slots()
                elif fd == ops:
                    if events & (select.POLLHUP | select.POLLERR):
                        return  # the hypervisor is gone: nothing will ask again
                    self.ops.sock.recv(64)  # nothing is sent unasked: drop it
                elif events & (select.POLLIN | select.POLLHUP):
                    self._serial_in()

    def _serial_in(self) -> None:
        try:
            data = self.serial.recv(SERIAL_READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.poll.unregister(self.serial.fileno())  # the hypervisor's end is gone
            return
        self.machine.serial_input(data)

    def serve_slots(self) -> None:
        mem = self.mem
        for vcpu in range(self.max_vcpus):
            slot = vcpu * IOREQ_SIZE
            flags = mem[slot + IOREQ_FLAGS]
            if flags & FLAG_STATE_MASK != IoreqState.IOREQ_READY:
                continue
            addr, data, count, size, _port, _pad, _flags, kind = IOREQ_STRUCT.unpack_from(
                mem, slot)
            mem[slot + IOREQ_FLAGS] = (flags & ~FLAG_STATE_MASK) | IoreqState.IOREQ_INPROCESS
            try:
                value = self.carry_out(kind, addr, data, count, size, flags)
            except Exception:  # a device bug: answer ones, keep serving
                self._report(f"{kind}:{addr:#x}", traceback.format_exc())
                value = (1 << 64) - 1
            struct.pack_into("<Q", mem, slot + IOREQ_DATA, value & ((1 << 64) - 1))
            mem[slot + IOREQ_FLAGS] = (flags & ~FLAG_STATE_MASK) | IoreqState.IORESP_READY
            os.eventfd_write(self.answer_fds[vcpu], 1)

    def carry_out(self, kind: int, addr: int, data: int, count: int, size: int,
                  flags: int) -> int:
        """One access; returns the value for ``data`` (a read's result, else unchanged)."""
        if size not in _SIZES:
            return (1 << 64) - 1
        machine = self.machine
        is_read = bool(flags & FLAG_DIR_READ)
        if kind == IoreqType.PIO:
            if flags & FLAG_DATA_IS_PTR:
                length = size * count
                if data < PAGE_SIZE or length > PAGE_SIZE or data + length > self.size:
                    return (1 << 64) - 1  # not a data area of this channel
                if is_read:
                    got = machine.pio_read_string(addr & 0xFFFF, size, count)
                    self.mem[data:data + len(got)] = got
                else:
                    machine.pio_write_string(addr & 0xFFFF, size,
                                             bytes(self.mem[data:data + length]))
                return data
            if is_read:
                return int(machine.pio_read(addr & 0xFFFF, size))
            machine.pio_write(addr & 0xFFFF, size, data & ((1 << (8 * size)) - 1))
            return data
        if kind == IoreqType.COPY and not flags & FLAG_DATA_IS_PTR:
            if is_read:
                return int(machine.mmio_read(addr, size))
            machine.mmio_write(addr, size, data & ((1 << (8 * size)) - 1))
            return data
        return (1 << 64) - 1

    def _report(self, key: str, text: str) -> None:
        if key not in self._reported and len(self._reported) < 64:
            self._reported.add(key)
            print(f"pyxen-dm: device error on {key}:\n{text}", file=sys.stderr, flush=True)
