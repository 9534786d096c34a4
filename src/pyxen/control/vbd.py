"""The toolstack's side of a virtual block device: what libxl writes to xenstore.

A :class:`Disk` is one entry of xl.cfg's ``disk=`` (or of ``block-attach``)
as it travels over the control socket (``disk_from_dict`` checks it there:
the socket is a trust boundary).  ``add`` writes the device's two
directories as libxl does for its qdisk backend (xen-x86-guest-abi.md
12.4), the backend's ``state`` last, so that blkback, which acts on
``state``, always finds the rest written:

- backend ``/local/domain/0/backend/vbd/FE/DEVID`` (owned by domain 0,
  readable by the frontend): frontend, frontend-id, online, params
  (``FORMAT:PATH``), type, mode (``w``/``r``), dev, device-type, removable,
  bootable, discard-enable, state = 1;
- frontend ``/local/domain/FE/device/vbd/DEVID`` (owned by the frontend,
  readable by domain 0): backend, backend-id, virtual-device, device-type,
  state = 1.

``release_domain`` is what destroying a domain does to its disks (the
daemon's destroy returns once blkback has let go of the images).
``remove`` is libxl's device removal: ``online`` = 0 and backend state
Closing, then wait (at most ``REMOVE_TIMEOUT`` seconds) until blkback has
closed it -- the frontend must have closed too -- and delete both
directories.  Past the timeout the directories are deleted anyway, as
libxl forces a removal the guest does not complete; blkback then stops
serving the device when it sees the directory go.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pyxen.abi.xenbus import XenbusState
from pyxen.control.protocol import ControlError
from pyxen.control.xenstore import XenstoreClient

FORMATS = ("raw", "qcow2")
REMOVE_TIMEOUT = 10.0
ATTACH_TIMEOUT = 10.0
_POLL = 0.02


@dataclass(frozen=True)
class Disk:
    vdev: str  # the guest's name for it (xvda)
    devid: int  # its Xen virtual device number (51712)
    target: str  # the image (an absolute path)
    format: str = "raw"
    read_only: bool = False
    cdrom: bool = False
    discard: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"vdev": self.vdev, "devid": self.devid, "target": self.target,
                "format": self.format, "read_only": self.read_only, "cdrom": self.cdrom,
                "discard": self.discard}


def disk_from_dict(value: Any) -> Disk:
    """A disk from a control request (ControlError EINVAL if malformed)."""
    if not isinstance(value, dict):
        raise ControlError("EINVAL", "a disk must be an object")

    def text(key: str) -> str:
        item = value.get(key)
        if not isinstance(item, str) or not item or len(item) > 4096 or "\0" in item:
            raise ControlError("EINVAL", f"disk field '{key}' must be a non-empty string")
        return item

    def flag(key: str, default: bool) -> bool:
        item = value.get(key, default)
        if not isinstance(item, bool):
            raise ControlError("EINVAL", f"disk field '{key}' must be true or false")
        return item

    devid = value.get("devid")
    if not isinstance(devid, int) or isinstance(devid, bool) or not 0 < devid < 1 << 29:
        raise ControlError("EINVAL", "disk field 'devid' must be a virtual device number")
    target, fmt = text("target"), text("format")
    if not target.startswith("/"):
        raise ControlError("EINVAL", f"disk target '{target}' must be an absolute path")
    if fmt not in FORMATS:
        raise ControlError("EINVAL", f"disk format '{fmt}' is not served (formats: "
                                     f"{', '.join(FORMATS)})")
    return Disk(text("vdev"), devid, target, fmt, flag("read_only", False),
                flag("cdrom", False), flag("discard", True))


def backend_path(domid: int, devid: int) -> str:
    return f"/local/domain/0/backend/vbd/{domid}/{devid}"


def frontend_path(domid: int, devid: int) -> str:
    return f"/local/domain/{domid}/device/vbd/{devid}"


def add(xs: XenstoreClient, domid: int, disk: Disk) -> None:
    """Write the device's directories (EEXIST if the domain has one with this devid)."""
    be, fe = backend_path(domid, disk.devid), frontend_path(domid, disk.devid)
    if xs.read(f"{fe}/backend") is not None or xs.read(f"{be}/state") is not None:
        raise ControlError("EEXIST", f"domain {domid} already has a disk {disk.vdev} "
                                     f"(device {disk.devid})")
    devtype = "cdrom" if disk.cdrom else "disk"
    xs.rm(be)
    xs.mkdir(be)
    xs.set_perms(be, ["n0", f"r{domid}"])
    for key, value in {
        "frontend": fe, "frontend-id": str(domid), "online": "1",
        "params": f"{disk.format}:{disk.target}", "type": "qdisk",
        "mode": "r" if disk.read_only else "w", "dev": disk.vdev, "device-type": devtype,
        "removable": "1" if disk.cdrom else "0", "bootable": "1",
        "discard-enable": "1" if disk.discard else "0",
    }.items():
        xs.write(f"{be}/{key}", value)
    xs.rm(fe)
    xs.mkdir(fe)
    xs.set_perms(fe, [f"n{domid}", "r0"])
    for key, value in {"backend": be, "backend-id": "0",
                       "virtual-device": str(disk.devid), "device-type": devtype,
                       "state": str(int(XenbusState.Initialising))}.items():
        xs.write(f"{fe}/{key}", value)
    xs.write(f"{be}/state", str(int(XenbusState.Initialising)))


def wait_ready(xs: XenstoreClient, domid: int, devid: int,
               timeout: float = ATTACH_TIMEOUT) -> None:
    """Wait until blkback has opened the image (InitWait or later); ControlError with
    blkback's ``error`` message if it could not, or EAGAIN past ``timeout``."""
    be = backend_path(domid, devid)
    deadline = time.monotonic() + timeout
    while True:
        error = xs.read_text(f"{be}/error")
        if error:
            raise ControlError("EINVAL", error)
        state = XenbusState.parse(xs.read_text(f"{be}/state"))
        if XenbusState.InitWait <= state <= XenbusState.Connected:
            return
        if time.monotonic() >= deadline:
            raise ControlError("EAGAIN", f"blkback did not take device {devid} within "
                                         f"{timeout:.0f} s (is the daemon's blkback running?)")
        time.sleep(_POLL)


def _wait_closed(xs: XenstoreClient, backends: list[str], timeout: float) -> list[str]:
    """Wait until each backend directory's state is Closed (or gone); those still
    open after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pending = list(backends)
    while True:
        pending = [be for be in pending if XenbusState.parse(xs.read_text(f"{be}/state"))
                   not in (XenbusState.Closed, XenbusState.Unknown)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(_POLL)


def remove(xs: XenstoreClient, domid: int, devid: int,
           timeout: float = REMOVE_TIMEOUT) -> bool:
    """Close the device and delete it; False if the guest did not close it in time
    (it is deleted all the same)."""
    be = backend_path(domid, devid)
    if xs.read(f"{be}/state") is None and xs.read(f"{frontend_path(domid, devid)}/backend") \
            is None:
        raise ControlError("ENOENT", f"domain {domid} has no disk with device number {devid}")
    xs.write(f"{be}/online", "0")
    state = XenbusState.parse(xs.read_text(f"{be}/state"))
    if state not in (XenbusState.Closed, XenbusState.Unknown):
        xs.write(f"{be}/state", str(int(XenbusState.Closing)))
    closed = not _wait_closed(xs, [be], timeout)
    xs.rm(frontend_path(domid, devid))
    xs.rm(be)
    return closed


def release_domain(xs: XenstoreClient, domid: int, timeout: float = REMOVE_TIMEOUT
                   ) -> list[int]:
    """A destroyed domain's disks, as libxl's destroy removes them: the frontends
    go, the backends are told to go offline, and once blkback has closed them
    (released their images) the backend directories are deleted.  Returns the
    devices blkback did not close within ``timeout`` (deleted all the same)."""
    root = f"/local/domain/0/backend/vbd/{domid}"
    devids = [int(d) for d in xs.directory(root) if d.isdigit()]
    xs.rm(f"/local/domain/{domid}/device/vbd")
    backends = [f"{root}/{devid}" for devid in devids]
    for be in backends:
        if xs.read(f"{be}/state") is not None:
            xs.write(f"{be}/online", "0")
    stuck = _wait_closed(xs, backends, timeout)
    xs.rm(root)
    return sorted(int(be.rsplit("/", 1)[1]) for be in stuck)


def remove_all(xs: XenstoreClient, domid: int) -> None:
    """A domain's backend directories, at once (a domain id's earlier life, or a
    domain xenstored lost track of)."""
    xs.rm(f"/local/domain/0/backend/vbd/{domid}")


def listing(xs: XenstoreClient, domid: int) -> list[dict[str, Any]]:
    """xl block-list's rows: one per frontend directory of the domain."""
    rows = []
    base = f"/local/domain/{domid}/device/vbd"
    for name in xs.directory(base):
        if not name.isdigit():
            continue
        fe = f"{base}/{name}"
        be = xs.read_text(f"{fe}/backend") or ""

        def number(path: str) -> int:
            text = xs.read_text(path)
            return int(text) if text is not None and text.strip().isdigit() else -1

        rows.append({
            "vdev": int(name), "backend_id": number(f"{fe}/backend-id"),
            "state": number(f"{fe}/state"), "evtchn": number(f"{fe}/event-channel"),
            "ring_ref": number(f"{fe}/ring-ref"), "backend_path": be,
            "be_state": number(f"{be}/state") if be else -1,
            "dev": xs.read_text(f"{be}/dev") if be else None,
            "params": xs.read_text(f"{be}/params") if be else None,
        })
    return rows
