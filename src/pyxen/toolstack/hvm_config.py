"""xl.cfg keys of an HVM guest (``type = "hvm"``), checked into the create request's ``hvm`` object.

Answered (xl.cfg(5) meaning, Xen 4.12):

``firmware``
    ``"bios"`` / ``"seabios"`` (the default: hvmloader + SeaBIOS) or the path
    of an hvmloader image to use instead of the installed one.
    ``"uefi"``/``"ovmf"``/``"rombios"`` are refused (not installed with
    pyxen).
``bios``
    ``"seabios"``; ``bios_path_override`` names another SeaBIOS image.
``boot``
    ``"c"`` (the first hard disk), the default.  CD-ROM (``d``) and network
    (``n``) boot are refused: there is no emulated CD-ROM or NIC yet.
``serial``
    ``"pty"`` (the default): COM1 is the domain's console
    (``pyxen console``).  ``"none"`` removes it from the console; other
    values are refused.
``acpi``, ``apic``
    0 or 1 (default 1): hvm_info's acpi_enabled and apic_mode.
``viridian``, ``cpuid``, ``xen_platform_pci=0``
    Refused when they ask for something: Hyper-V enlightenments and CPUID
    policies are not emulated, the Xen platform device is always present.
``dm_restrict``, ``device_model_user``
    Run the device model deprivileged (docs/features/dm-restrict.md).
``disk``
    Each disk is an IDE disk of the device model: ``hda``..``hdd`` (and
    ``xvda``..``xvdd``/``sda``..``sdd``, which libxl maps to the same
    positions), raw images only.  As libxl does, each is also offered as a
    PV disk (blkback), which a guest with PV drivers uses after unplugging
    the emulated one through the Xen platform device.
``kernel``, ``ramdisk``, ``cmdline`` (or ``root``/``extra``)
    Direct kernel boot: the bzImage (Linux boot protocol 2.06 or later) is
    loaded at 1 MiB and entered through its 32-bit entry, with the initrd
    and command line in its zero page (boot/bzimage.py); hvmloader and
    SeaBIOS do not run, the emulated platform and device model are the same.
    ``firmware``/``bios``/``bios_path_override`` are refused with a kernel
    (there is no firmware to choose), ``ramdisk`` without one; ``boot`` is
    ignored.
"""

from __future__ import annotations

import re
from typing import Any

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_IDE_VDEV = re.compile(r"(?:hd|xvd|sd)([a-d])$")
HVM_KEYS = frozenset({
    "firmware", "bios", "bios_path_override", "boot", "serial", "acpi", "apic", "viridian",
    "cpuid", "xen_platform_pci", "dm_restrict", "device_model_user",
})


class HvmConfigError(Exception):
    """(key, problem): the caller names the file and line."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


def _flag(key: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise HvmConfigError(key, f"{key} must be 0 or 1, got \"{value}\"")


def ide_position(vdev: str) -> int:
    """hda/xvda/sda -> 0 ... hdd/xvdd/sdd -> 3 (HvmConfigError otherwise)."""
    match = _IDE_VDEV.match(vdev)
    if match is None:
        raise HvmConfigError("disk", f"vdev {vdev}: an HVM guest's disks are IDE disks "
                                     "hda to hdd (or xvda to xvdd)")
    return ord(match.group(1)) - ord("a")


def hvm_request(values: dict[str, str | None], disks: tuple[dict[str, Any], ...],
                has_kernel: bool) -> dict[str, Any]:
    """The create request's ``hvm`` object from the HVM keys' string values."""
    firmware = values.get("firmware")
    if has_kernel:
        for key in ("firmware", "bios", "bios_path_override"):
            if values.get(key) is not None:
                raise HvmConfigError(key, f"{key} does not apply with kernel=: an HVM guest "
                                          "with a kernel boots it directly, without "
                                          "firmware; remove one of them")
    firmware_path: str | None = None
    if firmware not in (None, "bios", "seabios"):
        assert firmware is not None
        if firmware in ("uefi", "ovmf", "rombios"):
            raise HvmConfigError("firmware", f"firmware \"{firmware}\" is not available: "
                                             "pyxen boots HVM guests with SeaBIOS "
                                             "(firmware = \"bios\")")
        firmware_path = firmware
    bios = values.get("bios")
    if bios not in (None, "seabios"):
        raise HvmConfigError("bios", f"bios \"{bios}\" is not available: use bios = \"seabios\"")
    boot = values.get("boot") or "c"
    if not re.fullmatch(r"[acdn]{1,4}", boot):
        raise HvmConfigError("boot", f"boot must be letters from a, c, d and n, got \"{boot}\"")
    if boot[0] != "c":
        raise HvmConfigError("boot", f"boot \"{boot}\": only booting from the first hard disk "
                                     "(\"c\") is supported; there is no emulated CD-ROM, "
                                     "floppy or network card yet")
    serial = values.get("serial") or "pty"
    if serial not in ("pty", "none"):
        raise HvmConfigError("serial", f"serial \"{serial}\": only \"pty\" (COM1 as the "
                                       "domain's console) or \"none\" are supported")
    if _flag("viridian", values.get("viridian"), False):
        raise HvmConfigError("viridian", "viridian (Hyper-V enlightenments) is not emulated: "
                                         "remove it or set viridian = 0")
    if values.get("cpuid"):
        raise HvmConfigError("cpuid", "cpuid= policies are not supported yet: remove it")
    if not _flag("xen_platform_pci", values.get("xen_platform_pci"), True):
        raise HvmConfigError("xen_platform_pci", "the Xen platform PCI device cannot be "
                                                 "removed yet: remove xen_platform_pci = 0")
    ide: list[dict[str, Any]] = []
    for disk in disks:
        position = ide_position(str(disk["vdev"]))
        if disk.get("format") != "raw":
            raise HvmConfigError("disk", f"vdev {disk['vdev']}: the emulated IDE disk needs "
                                         "a raw image (convert it with qemu-img convert)")
        if disk.get("cdrom"):
            raise HvmConfigError("disk", f"vdev {disk['vdev']}: emulated CD-ROM drives are "
                                         "not supported yet")
        if any(d["position"] == position for d in ide):
            raise HvmConfigError("disk", f"vdev {disk['vdev']}: IDE position {position} is "
                                         "used twice")
        ide.append({"position": position, "target": disk["target"],
                    "readonly": bool(disk.get("read_only"))})
    user = values.get("device_model_user")
    return {
        "firmware": firmware_path, "bios": values.get("bios_path_override"),
        "acpi": _flag("acpi", values.get("acpi"), True),
        "apic": _flag("apic", values.get("apic"), True),
        "serial": serial == "pty", "disks": ide,
        "dm_restrict": _flag("dm_restrict", values.get("dm_restrict"), False),
        "device_model_user": user or None,
    }
