"""The ioreq channel between a vCPU thread and its domain's device-model process.

Shape (Xen's, fact sheet §4.4): one shared page of 32-byte ``struct
ioreq`` slots, one per vCPU, and a handshake on each slot's state: the
hypervisor writes a request and sets READY, the device model may set
INPROCESS, writes ``data`` for a read and sets IORESP_READY, and the
hypervisor takes the answer and sets NONE.  What pyxen does differently,
and why:

* Notifications are eventfds instead of event channels: one the
  hypervisor signals for every request (the device model then looks at
  each slot), and one per vCPU the device model signals for that vCPU's
  answer.  The device model is pyxen's own process, not a guest of the
  hypervisor, so it needs no event-channel ports.
* String I/O (``rep ins``/``rep outs``, count > 1) is staged: the channel
  memory has a 4 KiB data area per vCPU after the slot page, and a request
  with ``data_is_ptr`` carries the data area's offset in the channel, not a
  guest physical address.  So the device model maps no guest memory at all
  (KVM already hands pyxen the string's bytes, at most a page).

Memory layout of the channel (a memfd the device model maps too):
page 0 = slots (vCPU id * 32), page 1 + vCPU id = that vCPU's data area.

Trust: the device model is not trusted.  Whatever it leaves in a slot is
read as numbers and masked to the access size; an answer on a slot that
is not READY/INPROCESS is ignored; a device model that never answers
keeps that vCPU waiting (as on Xen) until the domain is destroyed or the
device model dies, which ``shut`` reports to every waiting vCPU.
"""

from __future__ import annotations

import mmap
import os
import select
import threading

from pyxen.abi.ioreq import (
    FLAG_DATA_IS_PTR,
    FLAG_DF,
    FLAG_DIR_READ,
    FLAG_STATE_MASK,
    IOREQ_DATA,
    IOREQ_FLAGS,
    IOREQ_SIZE,
    IOREQ_STRUCT,
    IoreqState,
)
from pyxen.memory.addr import PAGE_SIZE

MAX_VCPUS = PAGE_SIZE // IOREQ_SIZE  # 128: the slots fill page 0
DATA_AREA = PAGE_SIZE
_U64 = (1 << 64) - 1


class DeviceModelGone(Exception):
    """The device model exited, or the channel was shut: the access cannot complete."""


class IoreqChannel:
    def __init__(self, domid: int, max_vcpus: int) -> None:
        if not 1 <= max_vcpus <= MAX_VCPUS:
            raise ValueError(f"an ioreq page serves 1 to {MAX_VCPUS} vCPUs, not {max_vcpus}")
        self.max_vcpus = max_vcpus
        self.size = PAGE_SIZE * (1 + max_vcpus)
        self.memfd = os.memfd_create(f"pyxen-ioreq-d{domid}", os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, self.size)
        self.mem = mmap.mmap(self.memfd, self.size)
        self.view = memoryview(self.mem)
        self.request_fd = os.eventfd(0, os.EFD_CLOEXEC)
        self.answer_fds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(max_vcpus)]
        self._shut_r, self._shut_w = os.pipe2(os.O_CLOEXEC)
        self.why_shut: str | None = None
        self._polls: list[select.poll] = []
        for fd in self.answer_fds:
            poll = select.poll()
            poll.register(fd, select.POLLIN)
            poll.register(self._shut_r, select.POLLIN)
            self._polls.append(poll)
        self._lock = threading.Lock()
        self.closed = False

    def device_fds(self) -> list[int]:
        """What the device-model process inherits: memfd, request eventfd, answer eventfds."""
        return [self.memfd, self.request_fd, *self.answer_fds]

    def data_area(self, vcpu_id: int) -> memoryview:
        start = DATA_AREA * (1 + vcpu_id)
        return self.view[start:start + DATA_AREA]

    def request(self, vcpu_id: int, kind: int, addr: int, size: int, count: int,
                is_read: bool, data: int, data_is_ptr: bool = False) -> int:
        """Send one access and wait for the answer; returns ``data`` (reads: masked to
        ``size`` bytes unless ``data_is_ptr``).  Raises DeviceModelGone."""
        if self.why_shut is not None:
            raise DeviceModelGone(self.why_shut)
        slot = vcpu_id * IOREQ_SIZE
        flags = int(IoreqState.IOREQ_READY)
        if is_read:
            flags |= FLAG_DIR_READ
        if data_is_ptr:
            flags |= FLAG_DATA_IS_PTR
            data = DATA_AREA * (1 + vcpu_id)
        IOREQ_STRUCT.pack_into(self.mem, slot, addr, data, count, size, vcpu_id, 0, 0, kind)
        self.mem[slot + IOREQ_FLAGS] = flags  # the state last: one byte store
        os.eventfd_write(self.request_fd, 1)
        answer = self.answer_fds[vcpu_id]
        poll = self._polls[vcpu_id]
        while True:
            state = self.mem[slot + IOREQ_FLAGS] & FLAG_STATE_MASK
            if state == IoreqState.IORESP_READY:
                break
            if self.why_shut is not None:
                raise DeviceModelGone(self.why_shut)
            # Any other state (nonsense the device model wrote included): wait for its
            # next notification and look again; only this domain's vCPU waits.
            poll.poll()
            if self.why_shut is None:
                os.eventfd_read(answer)
        value = int.from_bytes(self.mem[slot + IOREQ_DATA:slot + IOREQ_DATA + 8], "little")
        self.mem[slot + IOREQ_FLAGS] = IoreqState.IOREQ_NONE
        if is_read and not data_is_ptr and size < 8:
            value &= (1 << (8 * size)) - 1
        return value & _U64

    def shut(self, why: str) -> None:
        """Wake every vCPU waiting on an answer with DeviceModelGone(why)."""
        with self._lock:
            if self.why_shut is None:
                self.why_shut = why
                os.write(self._shut_w, b"x")

    def close(self) -> None:
        self.shut("the domain is being destroyed")
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self.view.release()
        self.mem.close()
        for fd in (self.memfd, self.request_fd, *self.answer_fds, self._shut_r, self._shut_w):
            os.close(fd)


__all__ = ["DATA_AREA", "FLAG_DF", "MAX_VCPUS", "DeviceModelGone", "IoreqChannel"]
