"""The create request's ``hvm`` object (toolstack/hvm_config.py makes it) into an HvmSpec.

The daemon resolves the firmware here, where the files are: hvmloader
and SeaBIOS from the request if it names them, else from where Xen and
Debian install them (boot/hvm.py).  The xenstore keys are libxl's for an
HVM guest with a qemu-xen device model.

When the request has a ``kernel`` (direct boot of a bzImage, boot/bzimage.py)
no firmware is looked up or needed, and the ``hvmloader/...`` keys are left
out; the ``platform/...`` keys are written as for firmware boot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pyxen.boot.errors import BootError
from pyxen.boot.hvm import HVMLOADER_GLOBS, SEABIOS_PATHS, find_firmware
from pyxen.control.protocol import ControlError
from pyxen.hv.builder import HvmSpec
from pyxen.hv.device_model import DeviceModelSpec, EmulatedDisk

MAX_IDE_DISKS = 4


def _optional_text(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is not None and (not isinstance(value, str) or not value or len(value) > 4096):
        raise ControlError("EINVAL", f"hvm field '{key}' must be a non-empty string or null")
    return value


def _flag(args: dict[str, Any], key: str, default: bool) -> bool:
    value = args.get(key, default)
    if not isinstance(value, bool):
        raise ControlError("EINVAL", f"hvm field '{key}' must be true or false")
    return value


def _disks(args: dict[str, Any]) -> tuple[EmulatedDisk, ...]:
    disks = args.get("disks") or []
    if not isinstance(disks, list) or len(disks) > MAX_IDE_DISKS:
        raise ControlError("EINVAL", f"hvm field 'disks' must be a list of at most "
                                     f"{MAX_IDE_DISKS} IDE disks")
    out: list[EmulatedDisk] = []
    for disk in disks:
        if not isinstance(disk, dict):
            raise ControlError("EINVAL", "an hvm disk must be an object")
        position, target = disk.get("position"), disk.get("target")
        if (not isinstance(position, int) or isinstance(position, bool)
                or not 0 <= position < MAX_IDE_DISKS or not isinstance(target, str)):
            raise ControlError("EINVAL", "an hvm disk needs a position 0-3 and a target path")
        if any(d.position == position for d in out):
            raise ControlError("EINVAL", f"two hvm disks at IDE position {position}")
        if not os.path.exists(target):
            raise ControlError("ENOENT", f"disk hd{'abcd'[position]}: target {target} does "
                                         "not exist")
        out.append(EmulatedDisk(position, target, bool(disk.get("readonly"))))
    return tuple(out)


def hvm_spec_from_dict(args: Any, run_dir: Path, kernel: Path | None = None) -> HvmSpec:
    """The HvmSpec of the ``hvm`` object; ``kernel`` is the request's, if it has one."""
    if not isinstance(args, dict):
        raise ControlError("EINVAL", "config field 'hvm' must be an object or null")
    firmware = bios = None
    if kernel is None:
        try:
            firmware = find_firmware(_optional_text(args, "firmware"), HVMLOADER_GLOBS,
                                     "hvmloader")
            bios = find_firmware(_optional_text(args, "bios"), SEABIOS_PATHS,
                                 "SeaBIOS image")
        except BootError as e:
            raise ControlError("ENOENT", str(e)) from None
    elif _optional_text(args, "firmware") or _optional_text(args, "bios"):
        raise ControlError("EINVAL", "an HVM guest with a kernel boots it directly: "
                                     "hvm fields 'firmware' and 'bios' must be null")
    acpi = _flag(args, "acpi", True)
    dm = DeviceModelSpec(disks=_disks(args), restrict=_flag(args, "dm_restrict", False),
                         device_model_user=_optional_text(args, "device_model_user"),
                         run_dir=str(run_dir), serial=_flag(args, "serial", True))
    hvmloader = (
        ("hvmloader/bios", "seabios"),
        ("hvmloader/allow-memory-relocate", "0"),
    ) if kernel is None else ()
    xenstore = (
        *hvmloader,
        ("platform/acpi", "1" if acpi else "0"),
        ("platform/acpi_s3", "0"),
        ("platform/acpi_s4", "0"),
        ("platform/acpi_laptop_slate", "0"),
        ("platform/device-model", "qemu_xen"),
    )
    return HvmSpec(firmware=firmware, bios=bios, acpi=acpi, apic=_flag(args, "apic", True),
                   device_model=dm, xenstore=xenstore, kernel=kernel)
