"""From xl disk and vif specifications to the devices pyxen serves (control requests).

disk_spec.py and vif_spec.py read the syntax; this module checks what
pyxen's backends can do with it, and says what to change when they cannot.

Disks (``served_disk``):
the format must be raw or qcow2, the backend domain 0, no hotplug script,
no empty cdrom drive.  A relative target is made absolute from the current
directory of the command (which the daemon is told when it checks a config
for ``pyxen create``), as xl takes it; whether it exists is checked by
``create`` (control/manager.py), where the image is needed.
"""

from __future__ import annotations

import os
from typing import Any

from pyxen.control.vbd import FORMATS
from pyxen.toolstack.disk_spec import DiskSpec, DiskSpecError
from pyxen.toolstack.vif_spec import VifSpec, VifSpecError, random_mac

DOM0_NAMES = ("0", "Domain-0")
VIF_SCRIPTS = (None, "vif-bridge")  # what netback does itself


def served_disk(spec: DiskSpec, cwd: str | None = None) -> dict[str, Any]:
    """The control request's disk object for ``spec`` (DiskSpecError says what to fix);
    a relative target is taken from ``cwd`` (default: this process's directory)."""
    if spec.target is None:
        raise DiskSpecError(f"{spec.vdev}: an empty cdrom drive is not supported yet; "
                            "give it a target")
    if spec.backend is not None and spec.backend not in DOM0_NAMES:
        raise DiskSpecError(f"{spec.vdev}: backend={spec.backend}: driver domains are not "
                            "supported; pyxen's blkback runs as domain 0 (drop backend=)")
    if spec.script is not None:
        raise DiskSpecError(f"{spec.vdev}: script={spec.script}: hotplug scripts are not "
                            "supported; name an image file or a block device")
    if spec.colo:
        raise DiskSpecError(f"{spec.vdev}: COLO disks are not supported")
    if spec.format not in FORMATS:
        raise DiskSpecError(f"{spec.vdev}: format {spec.format} is not served (formats: "
                            f"{', '.join(FORMATS)}); convert it with qemu-img convert")
    target = os.path.abspath(os.path.join(cwd or os.getcwd(), spec.target))
    return {"vdev": spec.vdev, "devid": spec.devid, "target": target, "format": spec.format,
            "read_only": spec.readonly, "cdrom": spec.is_cdrom, "discard": spec.discard}


def served_nic(spec: VifSpec, devid: int) -> dict[str, Any]:
    """The control request's network interface object for ``spec`` as device ``devid``
    (VifSpecError says what to fix).  Network interfaces: a TAP device on a Linux
    bridge, as xl's default vif-bridge script makes them; no MAC gives a random
    one (Xen's OUI, as xl does)."""
    if spec.backend is not None and spec.backend not in DOM0_NAMES:
        raise VifSpecError(f"backend={spec.backend}: driver domains are not supported; "
                           "pyxen's netback runs as domain 0 (drop backend=)")
    if spec.script is not None and spec.script.rsplit("/", 1)[-1] not in VIF_SCRIPTS:
        raise VifSpecError(f"script={spec.script}: hotplug scripts are not supported; "
                           "netback attaches the interface to bridge= itself")
    if spec.type == "ioemu":
        raise VifSpecError("type=ioemu needs an HVM device model, which pyxen does not "
                           "have yet; use type=vif")
    rate = None if spec.rate is None else [spec.rate.bytes_per_interval,
                                           spec.rate.interval_us]
    return {"devid": devid, "mac": spec.mac or random_mac(), "bridge": spec.bridge,
            "vifname": spec.vifname, "ip": spec.ip, "mtu": spec.mtu, "rate": rate}
