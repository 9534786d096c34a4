"""The ioreq channel between a vCPU and a device model, both ends, in one process.

The hypervisor's end (hv/ioreq.py) and the device model's loop
(dm/server.py) run as in production, over the same memfd and eventfds;
only the device model runs in a thread here and its Machine is a recorder.
Also the hypervisor's side of device-model operations (hv/device_model.py
``DeviceModel.dm_op``): own-domain only, Xen's errors for bad values.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pyxen.abi.errno import XenErrno
from pyxen.abi.ioreq import (
    DM_OP_HEAD,
    FLAG_STATE_MASK,
    IOREQ_FLAGS,
    IOREQ_SIZE,
    DmOp,
    IoreqState,
    IoreqType,
)
from pyxen.dm.server import DeviceModelServer, DmOps
from pyxen.hv.device_model import DeviceModel
from pyxen.hv.ioreq import DeviceModelGone, IoreqChannel


class Recorder:
    """A Machine that records accesses and answers from a table."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, int, int, int]] = []
        self.strings: list[tuple[int, int, bytes]] = []
        self.ports = {0x3FF: 0x5A}

    def pio_read(self, port: int, size: int) -> int:
        if port == 0xBAD:
            raise RuntimeError("a device bug")
        return self.ports.get(port, (1 << (8 * size)) - 1)

    def pio_write(self, port: int, size: int, value: int) -> None:
        self.writes.append(("pio", port, size, value))

    def pio_read_string(self, port: int, size: int, count: int) -> bytes:
        return bytes(i & 0xFF for i in range(size * count))

    def pio_write_string(self, port: int, size: int, data: bytes) -> None:
        self.strings.append((port, size, data))

    def mmio_read(self, addr: int, size: int) -> int:
        return 0x1122334455667788 & ((1 << (8 * size)) - 1)

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        self.writes.append(("mmio", addr, size, value))

    def serial_input(self, data: bytes) -> None:
        pass


class Pair:
    def __init__(self, vcpus: int = 2) -> None:
        self.channel = IoreqChannel(7, vcpus)
        self.serial_hv, serial_dm = socket.socketpair()
        self.ops_hv, ops_dm = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config: dict[str, Any] = {
            "max_vcpus": vcpus, "ioreq_fd": self.channel.memfd,
            "request_fd": self.channel.request_fd, "answer_fds": self.channel.answer_fds,
            "serial_fd": serial_dm.detach(),
        }
        self.machine = Recorder()
        self.server = DeviceModelServer(config, self.machine, DmOps(ops_dm, 7))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.server.run()

    def close(self) -> None:
        # The server goes first: its loop ends when the operations socket hangs
        # up.  Closing the channel under a running server would leave it polling
        # fd numbers the next test's channel reuses, where it would eat that
        # test's request notification.
        self.ops_hv.close()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the device model loop did not end"
        self.server.ops.sock.close()
        self.server.serial.close()
        self.server.mem.close()
        self.channel.close()
        self.serial_hv.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


def test_a_port_read_and_write_round_trip(pair: Pair) -> None:
    assert pair.channel.request(0, IoreqType.PIO, 0x3FF, 1, 1, True, 0) == 0x5A
    assert pair.channel.request(1, IoreqType.PIO, 0x3FF, 1, 1, True, 0) == 0x5A
    pair.channel.request(0, IoreqType.PIO, 0x3F8, 1, 1, False, 0x41)
    assert pair.machine.writes == [("pio", 0x3F8, 1, 0x41)]
    # The slot is free again afterwards.
    assert pair.channel.mem[IOREQ_FLAGS] & FLAG_STATE_MASK == IoreqState.IOREQ_NONE


def test_reads_are_masked_to_the_access_size(pair: Pair) -> None:
    assert pair.channel.request(0, IoreqType.PIO, 0x1234, 2, 1, True, 0) == 0xFFFF
    assert pair.channel.request(0, IoreqType.COPY, 0xF000_0000, 4, 1, True, 0) == 0x55667788


def test_an_mmio_write_reaches_the_device(pair: Pair) -> None:
    pair.channel.request(0, IoreqType.COPY, 0xF000_0010, 4, 1, False, 0xDEADBEEF)
    assert pair.machine.writes == [("mmio", 0xF000_0010, 4, 0xDEADBEEF)]


def test_string_io_is_staged_in_the_vcpus_data_area(pair: Pair) -> None:
    area = pair.channel.data_area(1)
    pair.channel.request(1, IoreqType.PIO, 0x1F0, 2, 256, True, 0, data_is_ptr=True)
    assert bytes(area[:512]) == bytes(range(256)) * 2
    area[:6] = b"abcdef"
    pair.channel.request(1, IoreqType.PIO, 0x1F0, 2, 3, False, 0, data_is_ptr=True)
    assert pair.machine.strings == [(0x1F0, 2, b"abcdef")]


def test_a_device_bug_is_answered_with_all_ones_and_the_loop_goes_on(pair: Pair) -> None:
    assert pair.channel.request(0, IoreqType.PIO, 0xBAD, 1, 1, True, 0) == 0xFF
    assert pair.channel.request(0, IoreqType.PIO, 0x3FF, 1, 1, True, 0) == 0x5A


def test_the_device_model_refuses_requests_the_hypervisor_cannot_send(pair: Pair) -> None:
    server = pair.server
    flags = IoreqState.IOREQ_READY
    assert server.carry_out(IoreqType.PIO, 0x3FF, 0, 1, 3, flags) == (1 << 64) - 1  # size 3
    # A data area outside the channel, or one that is the slot page.
    ptr = flags | 1 << 4
    assert server.carry_out(IoreqType.PIO, 0x1F0, 0, 1, 2, ptr) == (1 << 64) - 1
    assert server.carry_out(IoreqType.PIO, 0x1F0, 1 << 40, 1, 2, ptr) == (1 << 64) - 1
    assert server.carry_out(IoreqType.PIO, 0x1F0, 4096, 4096, 2, ptr) == (1 << 64) - 1
    assert server.carry_out(IoreqType.TIMEOFFSET, 0, 0, 1, 8, flags) == (1 << 64) - 1


def test_nonsense_in_the_slot_state_does_not_complete_a_request() -> None:
    """A device model that writes a state other than IORESP_READY and notifies is
    waited for again; the answer only counts once it says IORESP_READY."""
    channel = IoreqChannel(3, 1)
    result: list[int] = []

    def vcpu() -> None:
        result.append(channel.request(0, IoreqType.PIO, 0x80, 1, 1, True, 0))

    thread = threading.Thread(target=vcpu)
    thread.start()
    os.eventfd_read(channel.request_fd)  # the request arrived
    channel.mem[IOREQ_FLAGS] = 0x0F  # nonsense state, then a notification
    os.eventfd_write(channel.answer_fds[0], 1)
    thread.join(0.2)
    assert thread.is_alive() and not result
    channel.mem[8:16] = (0x77).to_bytes(8, "little")
    channel.mem[IOREQ_FLAGS] = IoreqState.IORESP_READY
    os.eventfd_write(channel.answer_fds[0], 1)
    thread.join(5)
    assert result == [0x77]
    channel.close()


def test_a_vcpu_waiting_on_a_dead_device_model_is_woken() -> None:
    channel = IoreqChannel(3, 1)
    errors: list[str] = []

    def vcpu() -> None:
        try:
            channel.request(0, IoreqType.PIO, 0x80, 1, 1, True, 0)
        except DeviceModelGone as e:
            errors.append(str(e))

    thread = threading.Thread(target=vcpu)
    thread.start()
    thread.join(0.1)
    channel.shut("device model exited with status -9")
    thread.join(5)
    assert errors == ["device model exited with status -9"]
    with pytest.raises(DeviceModelGone):
        channel.request(0, IoreqType.PIO, 0x80, 1, 1, True, 0)
    channel.close()


def test_the_slots_follow_xens_layout() -> None:
    channel = IoreqChannel(3, 2)
    done = threading.Event()

    def vcpu() -> None:
        channel.request(1, IoreqType.PIO, 0x3F8, 1, 1, False, 0x41)
        done.set()

    threading.Thread(target=vcpu, daemon=True).start()
    os.eventfd_read(channel.request_fd)
    addr, data, count, size, port, _, flags, kind = struct.unpack_from(
        "<QQIIIHBB", channel.mem, IOREQ_SIZE)
    assert (addr, data, count, size, port, kind) == (0x3F8, 0x41, 1, 1, 1, IoreqType.PIO)
    assert flags == IoreqState.IOREQ_READY  # dir = write (0), no data_is_ptr
    channel.mem[IOREQ_SIZE + IOREQ_FLAGS] = IoreqState.IORESP_READY
    os.eventfd_write(channel.answer_fds[1], 1)
    assert done.wait(5)
    channel.close()


# -- device-model operations, the hypervisor's side ------------------------------------------


class Target:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def set_isa_irq_level(self, isa_irq: int, level: int) -> None:
        self.calls.append(("isa", isa_irq, level))

    def set_pci_intx_level(self, device: int, intx: int, level: int) -> None:
        self.calls.append(("intx", device, intx, level))

    def set_pci_link_route(self, link: int, isa_irq: int) -> None:
        self.calls.append(("link", link, isa_irq))


def _model(target: Target, shutdowns: list[int]) -> DeviceModel:
    """A DeviceModel without its process: only ``dm_op`` is exercised."""
    dm = DeviceModel.__new__(DeviceModel)
    dm.domid = 7
    dm.target = target
    dm._shutdown = shutdowns.append
    return dm


def _message(domid: int, op: int, payload: bytes) -> bytes:
    message = bytearray(40)
    struct.pack_into("<H", message, 0, domid)
    DM_OP_HEAD.pack_into(message, 8, op, 0)
    message[16:16 + len(payload)] = payload
    return bytes(message)


def test_dm_ops_act_on_the_device_models_own_domain_only() -> None:
    target, shutdowns = Target(), []
    dm = _model(target, shutdowns)
    assert dm.dm_op(_message(7, DmOp.set_isa_irq_level, bytes([4, 1]))) == 0
    assert dm.dm_op(_message(7, DmOp.set_pci_intx_level, bytes([0, 0, 0, 2, 0, 1]))) == 0
    assert dm.dm_op(_message(7, DmOp.set_pci_link_route, bytes([1, 10]))) == 0
    assert dm.dm_op(_message(7, DmOp.remote_shutdown, struct.pack("<I", 1))) == 0
    assert target.calls == [("isa", 4, 1), ("intx", 2, 0, 1), ("link", 1, 10)]
    assert shutdowns == [1]
    assert dm.dm_op(_message(8, DmOp.set_isa_irq_level, bytes([4, 1]))) == -XenErrno.EPERM
    assert dm.dm_op(_message(0x7FF0, DmOp.remote_shutdown, bytes(4))) == -XenErrno.EPERM
    assert len(target.calls) == 3 and shutdowns == [1]


@pytest.mark.parametrize(("op", "payload"), [
    (DmOp.set_isa_irq_level, bytes([16, 1])),
    (DmOp.set_isa_irq_level, bytes([4, 2])),
    (DmOp.set_pci_intx_level, bytes([1, 0, 0, 2, 0, 1])),  # segment 1
    (DmOp.set_pci_intx_level, bytes([0, 0, 1, 2, 0, 1])),  # bus 1
    (DmOp.set_pci_intx_level, bytes([0, 0, 0, 32, 0, 1])),
    (DmOp.set_pci_intx_level, bytes([0, 0, 0, 2, 4, 1])),
    (DmOp.set_pci_link_route, bytes([4, 10])),
    (DmOp.set_pci_link_route, bytes([0, 16])),
    (DmOp.remote_shutdown, struct.pack("<I", 6)),
])
def test_bad_dm_op_values_get_einval(op: int, payload: bytes) -> None:
    target, shutdowns = Target(), []
    assert _model(target, shutdowns).dm_op(_message(7, op, payload)) == -XenErrno.EINVAL
    assert target.calls == [] and shutdowns == []


def test_unserved_and_malformed_dm_ops() -> None:
    dm = _model(Target(), [])
    assert dm.dm_op(_message(7, DmOp.create_ioreq_server, bytes(6))) == -XenErrno.EOPNOTSUPP
    assert dm.dm_op(_message(7, 0xFFFF_FFFF, b"")) == -XenErrno.EOPNOTSUPP
    assert dm.dm_op(b"short") == -XenErrno.EINVAL
    assert dm.dm_op(_message(7, DmOp.set_isa_irq_level, bytes([4, 1])) + b"x") == -XenErrno.EINVAL


def test_the_device_models_client_sends_a_level_only_when_it_changes() -> None:
    hv, dm_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ops = DmOps(dm_end, 7)
    sent: list[bytes] = []

    def answer() -> None:
        while True:
            message = hv.recv(64)
            if not message:
                return
            sent.append(message)
            hv.send(struct.pack("<q", 0))

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    ops.set_isa_irq_level(4, 1)
    ops.set_isa_irq_level(4, 1)
    ops.set_isa_irq_level(4, 0)
    ops.set_pci_intx_level(2, 0, 1)
    ops.set_pci_intx_level(2, 0, 1)
    dm_end.close()
    thread.join(5)
    hv.close()
    assert len(sent) == 3
    assert all(struct.unpack_from("<H", m)[0] == 7 for m in sent)
    assert [DM_OP_HEAD.unpack_from(m, 8)[0] for m in sent] == [
        DmOp.set_isa_irq_level, DmOp.set_isa_irq_level, DmOp.set_pci_intx_level]


def test_the_device_model_stops_when_the_hypervisor_goes() -> None:
    """Its end of the operations socket closing (the hypervisor died or destroyed the
    domain) ends the loop: no device model outlives its hypervisor."""
    p = Pair()
    assert p.channel.request(0, IoreqType.PIO, 0x3FF, 1, 1, True, 0) == 0x5A
    p.ops_hv.close()
    p.thread.join(5)
    assert not p.thread.is_alive()
    p.channel.close()
    p.serial_hv.close()
