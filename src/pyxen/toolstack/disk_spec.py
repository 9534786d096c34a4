"""xl disk specifications: one entry of xl.cfg's ``disk = [...]`` as a :class:`DiskSpec`.

This module reads the *syntax* of xl-disk-configuration(5) as of Xen 4.12 and
names the guest's virtual device as xen-vbd-interface(7) numbers it; it does
not look at the host (whether the target exists, which backend serves it).

Grammar (one DISKSPEC, a string)::

    diskspec   := field { ',' field } [ ',' ]  [ 'target=' REST ]
    field      := blanks ( keyword '=' value | flag | positional )
    keyword    := 'target' | 'format' | 'vdev' | 'access' | 'devtype'
                | 'backend' | 'backendtype' | 'script' | 'colo-host'
                | 'colo-port' | 'colo-export' | 'active-disk' | 'hidden-disk'
    flag       := 'cdrom' | 'direct-io-safe' | 'discard' | 'no-discard' | 'colo'
    positional := { prefix ':' } text-without-'='-or-','

``target=`` takes the whole rest of the string, commas and trailing blanks
included, so it must come last; it is the only way to write a target that
contains ``,`` or ``=`` (or a colon after a word that looks like a prefix).

Positional fields fill, in this order, the parameters not yet given (by name
or position): ``target``, ``format``, ``vdev``, ``access``; a fifth is an
error.  So ``/dev/vg/guest,raw,xvda,rw`` and
``format=raw, vdev=xvda, access=rw, target=/dev/vg/guest`` are the same disk.

Values:

* ``format``: raw (default), qcow, qcow2, vhd, qed.
* ``vdev`` (mandatory): a name :func:`vdev_number` accepts (``xvda``,
  ``xvdb3``, ``xvdaa``, ``hdc``, ``sda1``, ``d0p1``).
* ``access``: ``rw``/``w`` (default) or ``ro``/``r`` (the default for a cdrom).
* ``devtype``: ``disk`` (default) or ``cdrom``; the bare flag ``cdrom`` is
  the same as ``devtype=cdrom``.  Only a cdrom may have no target (an empty
  drive).
* ``backendtype``: ``phy``, ``tap`` or ``qdisk``; unset means "choose".
* ``backend`` (domain name), ``script`` and the COLO keys are free text;
  ``colo`` needs all of ``colo-host``, ``colo-port`` (a port number),
  ``colo-export``, ``active-disk`` and ``hidden-disk``.
* ``discard`` (the default) / ``no-discard``, ``direct-io-safe``: flags.

An empty value (``/img,,xvda`` or ``format=``) means the default, and counts
as not given: a parameter may be given once with a value.  Blanks before a
field are ignored, and so are blanks after a value other than ``target=``'s
(a superset of what xl accepts).

Deprecated forms, kept for configurations written for xend and xl 4.1:

* Prefixes on a positional target: ``raw:``, ``qcow:``, ``qcow2:``, ``vhd:``
  set the format; ``iscsi:``, ``nbd:``, ``enbd:``, ``drbd:`` set
  ``script=block-NAME``; ``phy:``, ``file:``, ``tap:``, ``tap2:``,
  ``tapdisk:``, ``aio:``, ``ioemu:`` are ignored as xl ignores them (they are
  kept in :attr:`DiskSpec.prefixes` for callers that want xend's meaning).
  Several may be stacked (``tap:aio:``, ``tap:qcow2:``); any other
  ``word:`` before a target not starting with ``/`` is an error.
* After such a prefix the format position is skipped (xend's
  ``[format:]target,vdev[:devtype],access``): ``phy:/dev/sdb,xvda,w``.
  A known format name there is still read as the format.
* ``vdev:devtype`` (``hdc:cdrom``, ``xvda:disk``) in the vdev position, and
  in the format position after an empty target (xend's empty cdrom
  ``,hdc:cdrom,r``).

Every problem is a :class:`DiskSpecError` whose message is one line naming
what to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ACCESS_VALUES",
    "BACKENDTYPES",
    "DEVTYPES",
    "FORMATS",
    "DiskSpec",
    "DiskSpecError",
    "parse_disk_spec",
    "vdev_number",
]


class DiskSpecError(ValueError):
    """A disk specification (or vdev name) is malformed; the message is one line."""


FORMATS: Final = ("raw", "qcow", "qcow2", "vhd", "qed")
BACKENDTYPES: Final = ("phy", "tap", "qdisk")
DEVTYPES: Final = ("disk", "cdrom")
ACCESS_VALUES: Final = {"rw": "rw", "w": "rw", "ro": "ro", "r": "ro"}

_POSITIONAL: Final = ("target", "format", "vdev", "access")
_KEYWORDS: Final = (
    *_POSITIONAL, "devtype", "backend", "backendtype", "script",
    "colo-host", "colo-port", "colo-export", "active-disk", "hidden-disk",
)
_FLAGS: Final = ("cdrom", "direct-io-safe", "discard", "no-discard", "colo")
_COLO_KEYS: Final = ("colo-host", "colo-port", "colo-export", "active-disk", "hidden-disk")

_FORMAT_PREFIXES: Final = ("raw", "qcow", "qcow2", "vhd")
_SCRIPT_PREFIXES: Final = ("iscsi", "nbd", "enbd", "drbd")
_IGNORED_PREFIXES: Final = ("phy", "file", "tap", "tap2", "tapdisk", "aio", "ioemu")
_PREFIX_RE: Final = re.compile(r"([a-z][a-z0-9]*):")


@dataclass(frozen=True)
class DiskSpec:
    """One parsed DISKSPEC; every field holds its default when it was not given."""

    vdev: str
    target: str | None = None  # None: an empty cdrom drive
    format: str = "raw"
    access: str = "rw"  # "rw" or "ro"
    devtype: str = "disk"  # "disk" or "cdrom"
    backend: str | None = None  # backend domain name; None: domain 0
    backendtype: str | None = None  # "phy", "tap", "qdisk"; None: toolstack's choice
    script: str | None = None
    direct_io_safe: bool = False
    discard: bool = True
    colo: bool = False
    colo_host: str | None = None
    colo_port: int | None = None
    colo_export: str | None = None
    active_disk: str | None = None
    hidden_disk: str | None = None
    prefixes: tuple[str, ...] = ()  # deprecated target prefixes, in order, without ':'

    @property
    def readonly(self) -> bool:
        return self.access == "ro"

    @property
    def is_cdrom(self) -> bool:
        return self.devtype == "cdrom"

    @property
    def devid(self) -> int:
        """The Xen virtual device number of :attr:`vdev` (xen-vbd-interface(7))."""
        return vdev_number(self.vdev)


# --- vdev names (xen-vbd-interface(7)) -------------------------------------

_XEN_MAJOR: Final = 202
_SCSI_MAJOR: Final = 8
_IDE_MAJORS: Final = (3, 22)  # hda/hdb, hdc/hdd
_EXTENDED: Final = 1 << 28
_EXTENDED_DISKS: Final = 1 << 20
_EXTENDED_PARTITIONS: Final = 1 << 8

_LETTERS_RE: Final = re.compile(r"(xvd|hd|sd)([a-z]+)(0|[1-9][0-9]*)?")
_DP_RE: Final = re.compile(r"d(0|[1-9][0-9]*)(?:p(0|[1-9][0-9]*))?")
_VDEV_FORMS: Final = "xvdX[N], hdX[N], sdX[N] or dNpN, e.g. xvda, xvdb1, hdc, sda2, d0p1"


def _letters_to_disk(letters: str) -> int:
    """a=0 ... z=25, aa=26 ... zz=701, aaa=702 ... (bijective base 26, minus one)."""
    disk = 0
    for ch in letters:
        disk = disk * 26 + (ord(ch) - ord("a") + 1)
        if disk > _EXTENDED_DISKS:  # already too big; stop before it grows without bound
            break
    return disk - 1


def vdev_number(name: str) -> int:
    """The virtual device number xen-vbd-interface(7) gives the device ``name``.

    ``xvdX[N]`` and ``dD[pN]``: ``202<<8 | disk<<4 | part`` for disks and
    partitions up to 15, else ``1<<28 | disk<<8 | part`` (disks below 2**20,
    partitions below 256).  ``sdX[N]``: ``8<<8 | disk<<4 | part``, disks and
    partitions up to 15.  ``hdX[N]``: disks a-d, partitions up to 63, major 3
    (hda, hdb) or 22 (hdc, hdd), ``disk%2 << 6 | part``.  Disk letters count
    a=0 ... z=25, aa=26 ...; partition 0 (or none) is the whole disk.
    """
    if (m := _DP_RE.fullmatch(name)) is not None:
        kind, disk, part_text = "xvd", int(m.group(1)), m.group(2)
    elif (m := _LETTERS_RE.fullmatch(name)) is not None:
        kind, disk, part_text = m.group(1), _letters_to_disk(m.group(2)), m.group(3)
    else:
        raise DiskSpecError(f"vdev {name!r} is not a virtual device name: use {_VDEV_FORMS}")
    part = int(part_text) if part_text is not None else 0
    if kind == "xvd":
        if disk < 16 and part < 16:
            return _XEN_MAJOR << 8 | disk << 4 | part
        if disk >= _EXTENDED_DISKS:
            raise DiskSpecError(f"vdev {name!r}: Xen virtual disks go up to number "
                                f"{_EXTENDED_DISKS - 1}; choose a lower disk")
        if part >= _EXTENDED_PARTITIONS:
            raise DiskSpecError(f"vdev {name!r}: Xen virtual disk partitions go up to "
                                f"{_EXTENDED_PARTITIONS - 1}; choose a lower partition")
        return _EXTENDED | disk << 8 | part
    if kind == "sd":
        if disk >= 16 or part >= 16:
            raise DiskSpecError(f"vdev {name!r}: sd names go up to sdp15 (16 disks, 15 "
                                "partitions); use an xvd name")
        return _SCSI_MAJOR << 8 | disk << 4 | part
    if disk >= 4 or part >= 64:
        raise DiskSpecError(f"vdev {name!r}: hd names go up to hdd63 (4 disks, 63 "
                            "partitions); use an xvd name")
    return _IDE_MAJORS[disk >> 1] << 8 | (disk & 1) << 6 | part


# --- the disk specification -------------------------------------------------


class _Parse:
    """The state of one parse: what has been given so far."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}  # keyword -> non-empty value
        self.filled: set[str] = set()  # positional parameters given (maybe empty)
        self.flags: set[str] = set()
        self.prefixes: list[str] = []
        self.target_given = False  # a target was given, maybe empty

    def set(self, key: str, value: str, how: str) -> None:
        if key in _POSITIONAL:
            self.filled.add(key)
        if key == "target":
            self.target_given = True
        if value == "":
            return
        if key in self.values:
            raise DiskSpecError(
                f"{key} is given twice ({self.values[key]!r} and {value!r}, the second "
                f"{how}): give it once")
        self.values[key] = value

    def flag(self, name: str) -> None:
        opposite = {"discard": "no-discard", "no-discard": "discard"}.get(name)
        if opposite in self.flags:
            raise DiskSpecError("both discard and no-discard are given: keep one")
        self.flags.add(name)

    def vdev_devtype(self, text: str, how: str) -> None:
        """``vdev`` or deprecated ``vdev:devtype``."""
        vdev, colon, devtype = text.partition(":")
        if colon:
            if devtype not in DEVTYPES:
                raise DiskSpecError(f"{text!r}: the device type after ':' must be disk or "
                                    "cdrom (or write devtype=... separately)")
            self.set("devtype", devtype, how)
        self.set("vdev", vdev, how)

    def target(self, text: str) -> None:
        """A positional target, with any deprecated prefixes."""
        rest = text
        while (m := _PREFIX_RE.match(rest)) is not None:
            word = m.group(1)
            if word in _FORMAT_PREFIXES:
                self.set("format", word, f"as the prefix {word}:")
            elif word in _SCRIPT_PREFIXES:
                self.set("script", f"block-{word}", f"as the prefix {word}:")
            elif word in _IGNORED_PREFIXES:
                pass
            elif self.prefixes and self.prefixes[-1] in _SCRIPT_PREFIXES:
                break  # what a block script reads is its own business (nbd:host:port)
            elif rest[m.end():].startswith("/"):
                break  # a URL-like target (http://...)
            else:
                raise DiskSpecError(
                    f"unknown prefix {word + ':'!r} in target {text!r}: drop it, or write the "
                    "target last as target=...")
            self.prefixes.append(word)
            rest = rest[m.end():]
        self.set("target", rest, "by position")

    def positional(self, text: str) -> None:
        free = [key for key in _POSITIONAL if key not in self.filled]
        if not free:
            raise DiskSpecError(
                f"{text!r} is a fifth positional parameter (after target, format, vdev, "
                "access): remove it, or write it as key=value")
        slot = free[0]
        if slot == "target":
            self.target(text)
        elif slot == "format" and text not in FORMATS and text != "" and (
                self.prefixes or (":" in text and not self.values.get("target"))):
            self.filled.add("format")  # xend's order: [format:]target,vdev[:devtype],access
            self.vdev_devtype(text, "by position")
        elif slot == "format" and text not in FORMATS and _is_vdev(text):
            raise DiskSpecError(
                f"{text!r} is in the format position (target,format,vdev,access): write "
                f"target,,{text} or vdev={text}")
        elif slot == "vdev":
            if text in FORMATS:
                raise DiskSpecError(
                    f"{text!r} falls in the vdev position because format is already given: "
                    "drop one of the two formats")
            self.vdev_devtype(text, "by position")
        else:
            self.set(slot, text, "by position")


def _is_vdev(text: str) -> bool:
    try:
        vdev_number(text)
    except DiskSpecError:
        return False
    return True


def _fields(text: str) -> list[tuple[str, bool]]:
    """Split ``text`` into (field, is_rest_target) pairs; blanks before fields dropped."""
    fields: list[tuple[str, bool]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if text.startswith("target=", pos):
            fields.append((text[pos + len("target="):], True))
            return fields
        comma = text.find(",", pos)
        if comma < 0:
            if pos < len(text) or not fields:
                fields.append((text[pos:].rstrip(" \t\r\n"), False))
            return fields
        fields.append((text[pos:comma].rstrip(" \t\r\n"), False))
        pos = comma + 1


def _choice(key: str, value: str | None, allowed: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if value not in allowed:
        raise DiskSpecError(f"{key} {value!r} is unknown: use one of {', '.join(allowed)}")
    return value


def parse_disk_spec(text: str) -> DiskSpec:
    """Parse one xl DISKSPEC (see the module docstring for the grammar)."""
    if not isinstance(text, str):
        raise DiskSpecError(f"a disk specification is a string, not {type(text).__name__}")
    if text.strip() == "":
        raise DiskSpecError("the disk specification is empty: give at least a target and "
                            "a vdev, e.g. 'format=raw, vdev=xvda, target=disk.img'")
    state = _Parse()
    for field, rest_target in _fields(text):
        if rest_target:
            state.set("target", field, "as target=")
            continue
        key, eq, value = field.partition("=")
        if eq:
            if key in _FLAGS:
                raise DiskSpecError(f"{key} is a flag and takes no value: write {key} alone")
            if key not in _KEYWORDS:
                raise DiskSpecError(
                    f"unknown parameter {key!r} in {field!r}: the parameters are "
                    f"{', '.join(_KEYWORDS)}; a target containing '=' or ',' must be "
                    "written last as target=...")
            value = value.lstrip(" \t")
            if key == "vdev":
                state.vdev_devtype(value, "as vdev=")
            else:
                state.set(key, value, f"as {key}=")
        elif field in _FLAGS:
            state.flag(field)
        else:
            state.positional(field)
    return _build(state)


def _build(state: _Parse) -> DiskSpec:
    values = state.values
    devtype = _choice("devtype", values.get("devtype"), DEVTYPES, "disk")
    if "cdrom" in state.flags:
        if devtype != "cdrom" and "devtype" in values:
            raise DiskSpecError("devtype=disk and the cdrom flag disagree: keep one")
        devtype = "cdrom"
    vdev = values.get("vdev")
    if vdev is None:
        raise DiskSpecError("no vdev: say how the guest sees the disk, e.g. vdev=xvda "
                            "(or target,format,vdev,access by position)")
    vdev_number(vdev)
    target = values.get("target")
    if target is None and devtype != "cdrom":
        raise DiskSpecError(f"disk {vdev} has no target: give the image or device "
                            "(only a cdrom may be empty)")
    access_text = values.get("access")
    if access_text is None:
        access = "ro" if devtype == "cdrom" else "rw"
    elif access_text in ACCESS_VALUES:
        access = ACCESS_VALUES[access_text]
    else:
        raise DiskSpecError(f"access {access_text!r} is unknown: use rw (or w) for "
                            "read-write, ro (or r) for read-only")
    colo = "colo" in state.flags
    colo_port: int | None = None
    if "colo-port" in values:
        port_text = values["colo-port"]
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise DiskSpecError(f"colo-port {port_text!r} is not a port number: use 1-65535")
        colo_port = int(port_text)
    if colo:
        missing = [key for key in _COLO_KEYS if key not in values]
        if missing:
            raise DiskSpecError(f"colo needs {', '.join(missing)}: give them or drop colo")
    return DiskSpec(
        vdev=vdev,
        target=target,
        format=_choice("format", values.get("format"), FORMATS, "raw"),
        access=access,
        devtype=devtype,
        backend=values.get("backend"),
        backendtype=_choice("backendtype", values.get("backendtype"), BACKENDTYPES, "")
        or None,
        script=values.get("script"),
        direct_io_safe="direct-io-safe" in state.flags,
        discard="no-discard" not in state.flags,
        colo=colo,
        colo_host=values.get("colo-host"),
        colo_port=colo_port,
        colo_export=values.get("colo-export"),
        active_disk=values.get("active-disk"),
        hidden_disk=values.get("hidden-disk"),
        prefixes=tuple(state.prefixes),
    )
