"""An HVM domain's device-model process, seen from the hypervisor.

One process per HVM domain (``python3 -m pyxen.dm``), started when the
domain is built and killed when it is destroyed.  It gets, as inherited
file descriptors and nothing else: the ioreq channel (hv/ioreq.py), a
SOCK_SEQPACKET socket for its device-model operations, a stream socket
for the serial port, and the disk images it emulates, already open.  It
never gets /dev/kvm, the VM, guest memory or pyxen's control socket.

Device-model operations: each message is ``domid u16, pad[6]`` followed
by a ``struct xen_dm_op`` (32 bytes); the answer is an ``int64`` (0 or
-errno).  As with Xen's restricted privcmd, only operations on the
device model's own domain are accepted (-EPERM otherwise); the ones an
emulator needs here are served (set_isa_irq_level, set_pci_intx_level,
set_pci_link_route, remote_shutdown), the rest answer -EOPNOTSUPP.  A
thread per device model serves them.

Lifetime: a supervisor thread waits for the process; if it exits while
the domain lives, the domain crashes with the exit status in the log
(vCPUs waiting on an answer are woken through ``IoreqChannel.shut``).
``close`` kills it (and, when it runs deprivileged, every process of its
uid, through the reaper), then reaps it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pyxen.abi.errno import XenErrno
from pyxen.abi.ioreq import (
    DM_OP_HEAD,
    REMOTE_SHUTDOWN,
    SET_ISA_IRQ_LEVEL,
    SET_PCI_INTX_LEVEL,
    SET_PCI_LINK_ROUTE,
    XEN_DM_OP_SIZE,
    DmOp,
)
from pyxen.hv.ioreq import IoreqChannel

DM_OP_MESSAGE = 8 + XEN_DM_OP_SIZE
_ANSWER = struct.Struct("<q")
_DOMID = struct.Struct("<H6x")
STOP_WAIT = 5.0  # seconds for the device model to go after SIGKILL


class DmTarget(Protocol):
    """What the device model's operations act on (the domain's platform)."""

    def set_isa_irq_level(self, isa_irq: int, level: int) -> None: ...
    def set_pci_intx_level(self, device: int, intx: int, level: int) -> None: ...
    def set_pci_link_route(self, link: int, isa_irq: int) -> None: ...


@dataclass(frozen=True)
class EmulatedDisk:
    """An IDE position (0 = hda ... 3 = hdd) and its image."""

    position: int
    path: str
    readonly: bool


@dataclass(frozen=True)
class DeviceModelSpec:
    disks: tuple[EmulatedDisk, ...] = ()
    restrict: bool = False
    device_model_user: str | None = None
    run_dir: str = "/run/pyxen"
    serial: bool = True  # COM1 is the console (serial = "pty"); False: "none"


class DeviceModel:
    def __init__(self, domid: int, max_vcpus: int, spec: DeviceModelSpec, target: DmTarget,
                 shutdown: Callable[[int], None], crash: Callable[[str], None],
                 log: Callable[[str], None]) -> None:
        self.domid = domid
        self.spec = spec
        self.target = target
        self._shutdown = shutdown
        self._crash = crash
        self._log = log
        self.channel = IoreqChannel(domid, max_vcpus)
        self.ops, ops_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.serial, serial_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.stopping = False
        self.uid: int | None = None
        disk_fds: list[int] = []
        try:
            for disk in spec.disks:
                flags = os.O_RDONLY if disk.readonly else os.O_RDWR
                disk_fds.append(os.open(disk.path, flags | os.O_CLOEXEC))
            config = self._config(max_vcpus, ops_theirs.fileno(), serial_theirs.fileno(),
                                  disk_fds)
            fds = [*self.channel.device_fds(), ops_theirs.fileno(), serial_theirs.fileno(),
                   *disk_fds]
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pyxen.dm", json.dumps(config)], pass_fds=fds,
                stdin=subprocess.DEVNULL, start_new_session=True)
        except BaseException:
            self.channel.close()
            self.ops.close()
            self.serial.close()
            raise
        finally:
            ops_theirs.close()
            serial_theirs.close()
            for fd in disk_fds:
                os.close(fd)
        self._threads = [
            threading.Thread(target=self._serve_ops, name=f"dm-ops-d{domid}", daemon=True),
            threading.Thread(target=self._supervise, name=f"dm-wait-d{domid}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _config(self, max_vcpus: int, ops_fd: int, serial_fd: int,
                disk_fds: list[int]) -> dict[str, Any]:
        disks = []
        for disk, fd in zip(self.spec.disks, disk_fds, strict=True):
            size = os.lseek(fd, 0, os.SEEK_END)  # st_size is 0 for a block device
            disks.append({"position": disk.position, "fd": fd, "readonly": disk.readonly,
                          "size": size})
        config: dict[str, Any] = {
            "domid": self.domid, "max_vcpus": max_vcpus,
            "ioreq_fd": self.channel.memfd, "request_fd": self.channel.request_fd,
            "answer_fds": self.channel.answer_fds, "ops_fd": ops_fd,
            "serial_fd": serial_fd, "disks": disks, "restrict": None,
        }
        if self.spec.restrict:
            from pyxen.dm.sandbox import prepare_chroot, uid_for_domain

            uid, gid = uid_for_domain(self.domid,
                                      device_model_user=self.spec.device_model_user)
            self.uid = uid
            chroot = prepare_chroot(self.spec.run_dir, self.domid)
            config["restrict"] = {"uid": uid, "gid": gid, "chroot": str(chroot)}
        return config

    # -- device-model operations ---------------------------------------------------------

    def _serve_ops(self) -> None:
        while True:
            try:
                message = self.ops.recv(DM_OP_MESSAGE + 1)
            except OSError:
                return
            if not message:
                return
            try:
                rc = self.dm_op(message)
            except Exception as e:  # a pyxen bug must not end the thread silently
                self._log(f"d{self.domid}: device-model operation failed: {e!r}")
                rc = -XenErrno.EINVAL
            try:
                self.ops.send(_ANSWER.pack(rc))
            except OSError:
                return

    def dm_op(self, message: bytes) -> int:
        """One operation from the device model: 0 or -errno (Xen's answers)."""
        if len(message) != DM_OP_MESSAGE:
            return -XenErrno.EINVAL
        (domid,) = _DOMID.unpack_from(message)
        if domid != self.domid:
            return -XenErrno.EPERM  # restricted to its own domain, as privcmd's restrict
        op, _pad = DM_OP_HEAD.unpack_from(message, 8)
        u = 16
        if op == DmOp.set_isa_irq_level:
            irq, level = SET_ISA_IRQ_LEVEL.unpack_from(message, u)
            if irq > 15 or level > 1:
                return -XenErrno.EINVAL
            self.target.set_isa_irq_level(irq, level)
        elif op == DmOp.set_pci_intx_level:
            seg, bus, device, intx, level = SET_PCI_INTX_LEVEL.unpack_from(message, u)
            if seg or bus or device > 31 or intx > 3 or level > 1:
                return -XenErrno.EINVAL
            self.target.set_pci_intx_level(device, intx, level)
        elif op == DmOp.set_pci_link_route:
            link, irq = SET_PCI_LINK_ROUTE.unpack_from(message, u)
            if link > 3 or irq > 15:
                return -XenErrno.EINVAL
            self.target.set_pci_link_route(link, irq)
        elif op == DmOp.remote_shutdown:
            (reason,) = REMOTE_SHUTDOWN.unpack_from(message, u)
            if reason > 5:
                return -XenErrno.EINVAL
            self._shutdown(reason)
        else:
            return -XenErrno.EOPNOTSUPP
        return 0

    # -- lifetime ---------------------------------------------------------------------

    def _supervise(self) -> None:
        status = self.process.wait()
        why = f"device model exited with status {status}"
        self.channel.shut(why)
        if not self.stopping:
            self._crash(why)

    def close(self) -> None:
        """Kill the device model (and its uid's processes), wait for it, free the channel."""
        self.stopping = True
        self.channel.shut("the domain is being destroyed")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.uid is not None:
            from pyxen.dm.reaper import reap_uid, reaper_uid_for

            try:
                reap_uid(self.uid, reaper_uid_for())
            except Exception as e:  # log it; the destroy goes on
                self._log(f"d{self.domid}: reaping the device model's uid {self.uid}: {e}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_WAIT)
        with contextlib.suppress(OSError):
            self.ops.shutdown(socket.SHUT_RDWR)  # wakes the operations thread
        for thread in self._threads:
            thread.join(STOP_WAIT)
        self.ops.close()
        self.serial.close()
        self.channel.close()
