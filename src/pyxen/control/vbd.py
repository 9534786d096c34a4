"""Disks as the toolstack writes them: libxl's keys for its qdisk backend.

A :class:`Disk` is one entry of xl.cfg's ``disk=`` (or of ``block-attach``)
as it travels over the control socket (``disk_from_dict`` checks it there:
the socket is a trust boundary).  ``add`` writes it with
control/pv_devices.py: backend keys params (``FORMAT:PATH``), type, mode
(``w``/``r``), dev (the vdev name: GRUB names the disk after it),
device-type, removable, bootable, discard-enable; frontend keys
virtual-device and device-type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyxen.control import pv_devices
from pyxen.control.protocol import ControlError
from pyxen.control.xenstore import XenstoreClient

FORMATS = ("raw", "qcow2")


@dataclass(frozen=True)
class Disk:
    vdev: str  # the guest's name for it (xvda)
    devid: int  # its Xen virtual device number (51712)
    target: str  # the image (an absolute path)
    format: str = "raw"
    read_only: bool = False
    cdrom: bool = False
    discard: bool = True


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


def add(xs: XenstoreClient, domid: int, disk: Disk) -> None:
    devtype = "cdrom" if disk.cdrom else "disk"
    pv_devices.add(xs, "vbd", domid, disk.devid, f"a disk {disk.vdev} (device {disk.devid})",
                   backend={
                       "params": f"{disk.format}:{disk.target}", "type": "qdisk",
                       "mode": "r" if disk.read_only else "w", "dev": disk.vdev,
                       "device-type": devtype, "removable": "1" if disk.cdrom else "0",
                       "bootable": "1", "discard-enable": "1" if disk.discard else "0",
                   },
                   frontend={"virtual-device": str(disk.devid), "device-type": devtype})
