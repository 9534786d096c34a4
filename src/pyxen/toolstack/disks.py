"""From an xl disk specification to a disk pyxen serves (``Disk`` on the control socket).

disk_spec.py reads the syntax; this module checks what the host and
pyxen's blkback can do with it, and says what to change when they cannot:
the format must be raw or qcow2, the backend domain 0, no hotplug script,
no empty cdrom drive.  A relative target is made absolute from the current
directory, as xl takes it; whether it exists is checked by ``create``
(control/manager.py), where the image is needed.
"""

from __future__ import annotations

import os
from typing import Any

from pyxen.control.vbd import FORMATS
from pyxen.toolstack.disk_spec import DiskSpec, DiskSpecError

DOM0_NAMES = ("0", "Domain-0")


def served_disk(spec: DiskSpec) -> dict[str, Any]:
    """The control request's disk object for ``spec`` (DiskSpecError says what to fix)."""
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
    target = os.path.abspath(spec.target)
    return {"vdev": spec.vdev, "devid": spec.devid, "target": target, "format": spec.format,
            "read_only": spec.readonly, "cdrom": spec.is_cdrom, "discard": spec.discard}
