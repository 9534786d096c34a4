"""xl disk specifications (toolstack/disk_spec.py): xl-disk-configuration(5) and
xen-vbd-interface(7)."""

from __future__ import annotations

import pytest

from pyxen.toolstack.disk_spec import DiskSpec, DiskSpecError, parse_disk_spec, vdev_number

# --- the man page's equivalent spellings ------------------------------------

VOLUME = DiskSpec(vdev="hda", target="/dev/vg/guest-volume")
ISO = DiskSpec(vdev="hdc", target="/root/image.iso", access="ro", devtype="cdrom")


@pytest.mark.parametrize("text", [
    "/dev/vg/guest-volume,,hda",
    "/dev/vg/guest-volume,raw,hda,rw",
    "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
    "/dev/vg/guest-volume,raw,hda,w",
    "  /dev/vg/guest-volume , raw , hda , rw ",
    "/dev/vg/guest-volume,raw,hda,rw,",
    "vdev=hda,/dev/vg/guest-volume",
    "vdev=hda,target=/dev/vg/guest-volume",
    ",,hda,target=/dev/vg/guest-volume",
])
def test_equivalent_volume(text: str) -> None:
    assert parse_disk_spec(text) == VOLUME


def test_deprecated_volume() -> None:
    spec = parse_disk_spec("raw:/dev/vg/guest-volume,hda,w")
    assert spec == DiskSpec(vdev="hda", target="/dev/vg/guest-volume", prefixes=("raw",))


@pytest.mark.parametrize("text", [
    "/root/image.iso,,hdc,cdrom",
    "/root/image.iso,,hdc,,cdrom",
    "/root/image.iso,raw,hdc,devtype=cdrom",
    "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
    "cdrom,/root/image.iso,,hdc,r",
])
def test_equivalent_cdrom(text: str) -> None:
    assert parse_disk_spec(text) == ISO


def test_deprecated_cdrom() -> None:
    spec = parse_disk_spec("raw:/root/image.iso,hdc:cdrom,ro")
    assert spec == DiskSpec(vdev="hdc", target="/root/image.iso", access="ro",
                            devtype="cdrom", prefixes=("raw",))
    assert spec.is_cdrom and spec.readonly


def test_empty_cdrom_xend_syntax() -> None:
    spec = parse_disk_spec(",hdc:cdrom,r")
    assert spec == DiskSpec(vdev="hdc", target=None, access="ro", devtype="cdrom")


def test_empty_cdrom_new_syntax() -> None:
    assert parse_disk_spec("vdev=hdc, devtype=cdrom").target is None
    assert parse_disk_spec(",,hdc,cdrom").target is None


def test_issue_example() -> None:
    spec = parse_disk_spec("format=raw, vdev=xvda, access=rw, target=disk.img")
    assert spec == DiskSpec(vdev="xvda", target="disk.img")
    assert spec.devid == 51712 and not spec.readonly and spec.discard


def test_positional_full() -> None:
    spec = parse_disk_spec("/dev/vg/guest,qcow2,xvdb,ro")
    assert (spec.target, spec.format, spec.vdev, spec.access) == (
        "/dev/vg/guest", "qcow2", "xvdb", "ro")


def test_positionals_fill_what_keywords_left() -> None:
    spec = parse_disk_spec("vdev=xvda, /img.qcow2, qcow2, r")
    assert (spec.target, spec.format, spec.vdev, spec.access) == (
        "/img.qcow2", "qcow2", "xvda", "ro")
    spec = parse_disk_spec("format=vhd,access=ro,/img.vhd,xvdc")
    assert (spec.target, spec.format, spec.vdev, spec.access) == (
        "/img.vhd", "vhd", "xvdc", "ro")


def test_target_takes_the_rest() -> None:
    spec = parse_disk_spec("vdev=xvda, format=raw, target=/srv/a,b=c, d ")
    assert spec.target == "/srv/a,b=c, d "
    # target= may follow an empty positional target
    assert parse_disk_spec(",raw,xvda,target=/x,y").target == "/x,y"


@pytest.mark.parametrize("fmt", ["raw", "qcow", "qcow2", "vhd", "qed"])
def test_formats(fmt: str) -> None:
    assert parse_disk_spec(f"format={fmt},vdev=xvda,target=/i").format == fmt
    assert parse_disk_spec(f"/i,{fmt},xvda").format == fmt


def test_empty_values_mean_default() -> None:
    spec = parse_disk_spec("format=, access=, backendtype=, vdev=xvda, target=/i")
    assert spec == DiskSpec(vdev="xvda", target="/i")
    # an empty value does not count as given
    assert parse_disk_spec("/i,,xvda,,format=qcow2").format == "qcow2"


def test_other_parameters() -> None:
    spec = parse_disk_spec("backend=driverdom, backendtype=qdisk, script=block-iscsi, "
                           "direct-io-safe, no-discard, vdev=xvdz, target=iqn.x:y")
    assert spec.backend == "driverdom"
    assert spec.backendtype == "qdisk"
    assert spec.script == "block-iscsi"
    assert spec.direct_io_safe
    assert not spec.discard
    assert spec.target == "iqn.x:y"
    plain = parse_disk_spec("/i,,xvda")
    assert (plain.backend, plain.backendtype, plain.script, plain.direct_io_safe,
            plain.discard, plain.colo) == (None, None, None, False, True, False)
    assert parse_disk_spec("discard,/i,,xvda").discard


@pytest.mark.parametrize("btype", ["phy", "tap", "qdisk"])
def test_backendtypes(btype: str) -> None:
    assert parse_disk_spec(f"backendtype={btype},/i,,xvda").backendtype == btype


def test_colo() -> None:
    spec = parse_disk_spec("colo, colo-host=10.0.0.2, colo-port=9000, colo-export=e1, "
                           "active-disk=/a.qcow2, hidden-disk=/h.qcow2, /i,qcow2,xvda")
    assert spec.colo and spec.colo_host == "10.0.0.2" and spec.colo_port == 9000
    assert (spec.colo_export, spec.active_disk, spec.hidden_disk) == (
        "e1", "/a.qcow2", "/h.qcow2")


@pytest.mark.parametrize(("text", "target", "fmt", "script", "prefixes"), [
    ("phy:/dev/vg/guest,xvda,w", "/dev/vg/guest", "raw", None, ("phy",)),
    ("file:/srv/guest.img,xvda,w", "/srv/guest.img", "raw", None, ("file",)),
    ("tap:aio:/srv/guest.img,xvda,w", "/srv/guest.img", "raw", None, ("tap", "aio")),
    ("tap:qcow2:/srv/g.qcow2,xvda,w", "/srv/g.qcow2", "qcow2", None, ("tap", "qcow2")),
    ("tap2:tapdisk:vhd:/g.vhd,xvda,w", "/g.vhd", "vhd", None, ("tap2", "tapdisk", "vhd")),
    ("ioemu:/g.img,xvda,w", "/g.img", "raw", None, ("ioemu",)),
    ("qcow:/g.qcow,xvda,w", "/g.qcow", "qcow", None, ("qcow",)),
    ("iscsi:iqn.2001-05.com.example:disk0,xvda,w", "iqn.2001-05.com.example:disk0", "raw",
     "block-iscsi", ("iscsi",)),
    ("nbd:host:10809,xvda,w", "host:10809", "raw", "block-nbd", ("nbd",)),
    ("drbd:res0,xvda,w", "res0", "raw", "block-drbd", ("drbd",)),
    ("phy:/dev/sdb,raw,xvda,w", "/dev/sdb", "raw", None, ("phy",)),
    ("phy:sdb,xvda,w", "sdb", "raw", None, ("phy",)),
])
def test_deprecated_prefixes(text: str, target: str, fmt: str, script: str | None,
                             prefixes: tuple[str, ...]) -> None:
    spec = parse_disk_spec(text)
    assert (spec.target, spec.format, spec.script, spec.prefixes) == (
        target, fmt, script, prefixes)
    assert (spec.vdev, spec.access, spec.backendtype) == ("xvda", "rw", None)


def test_url_like_target_is_no_prefix() -> None:
    assert parse_disk_spec("http://host/x.img,,xvda").target == "http://host/x.img"


def test_vdev_devtype_keyword() -> None:
    spec = parse_disk_spec("vdev=xvdb:disk, target=/i")
    assert (spec.vdev, spec.devtype) == ("xvdb", "disk")


def test_cdrom_may_be_read_write_when_asked() -> None:
    assert parse_disk_spec("/i.iso,,hdc,rw,cdrom").access == "rw"


def test_spec_is_frozen() -> None:
    spec = parse_disk_spec("/i,,xvda")
    with pytest.raises(AttributeError):
        spec.vdev = "xvdb"  # type: ignore[misc]


# --- vdev numbers -----------------------------------------------------------

@pytest.mark.parametrize(("name", "number"), [
    ("xvda", 51712),
    ("xvda0", 51712),
    ("d0", 51712),
    ("d0p0", 51712),
    ("xvda1", 51713),
    ("xvdb", 51728),
    ("d1p2", 51730),
    ("xvdb2", 51730),
    ("xvda15", 202 << 8 | 15),
    ("xvdp", 202 << 8 | 15 << 4),
    ("xvdp15", 202 << 8 | 15 << 4 | 15),
    ("xvda16", 1 << 28 | 16),
    ("xvda255", 1 << 28 | 255),
    ("xvdq", 1 << 28 | 16 << 8),
    ("xvdz", 1 << 28 | 25 << 8),
    ("xvdaa", 1 << 28 | 26 << 8),
    ("xvdaz", 1 << 28 | 51 << 8),
    ("xvdba", 1 << 28 | 52 << 8),
    ("xvdzz", 1 << 28 | 701 << 8),
    ("xvdaaa", 1 << 28 | 702 << 8),
    ("xvdtq37", 1 << 28 | 536 << 8 | 37),
    ("d536p37", 1 << 28 | 536 << 8 | 37),
    ("d16", 1 << 28 | 16 << 8),
    ("d1048575p255", 1 << 28 | 1048575 << 8 | 255),
    ("hda", 3 << 8),
    ("hda1", 3 << 8 | 1),
    ("hdb", 3 << 8 | 64),
    ("hdb63", 3 << 8 | 64 | 63),
    ("hdc", 22 << 8),
    ("hdc2", 22 << 8 | 2),
    ("hdd", 22 << 8 | 64),
    ("sda", 8 << 8),
    ("sdb3", 8 << 8 | 16 | 3),
    ("sdp15", 8 << 8 | 15 << 4 | 15),
])
def test_vdev_number(name: str, number: int) -> None:
    assert vdev_number(name) == number


@pytest.mark.parametrize(("name", "problem"), [
    ("", "is not a virtual device name"),
    ("xvd", "is not a virtual device name"),
    ("xvdA", "is not a virtual device name"),
    ("xvda01", "is not a virtual device name"),
    ("xvda-1", "is not a virtual device name"),
    ("vda", "is not a virtual device name"),
    ("d01", "is not a virtual device name"),
    ("dp1", "is not a virtual device name"),
    ("51712", "is not a virtual device name"),
    ("xvda256", "partitions go up to 255"),
    ("d1048576", "go up to number 1048575"),
    ("xvd" + "z" * 10, "go up to number 1048575"),
    ("hde", "hd names go up to hdd63"),
    ("hda64", "hd names go up to hdd63"),
    ("sdq", "sd names go up to sdp15"),
    ("sda16", "sd names go up to sdp15"),
])
def test_bad_vdev(name: str, problem: str) -> None:
    with pytest.raises(DiskSpecError, match=problem):
        vdev_number(name)


def test_biggest_letters_disk() -> None:
    # 1048575 = the last extended disk; find its letters and back
    letters, n = "", 1048575 + 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("a") + r) + letters
    assert vdev_number("xvd" + letters) == 1 << 28 | 1048575 << 8


# --- errors -----------------------------------------------------------------

@pytest.mark.parametrize(("text", "problem"), [
    ("", "the disk specification is empty"),
    ("   ", "the disk specification is empty"),
    ("/i", "no vdev"),
    ("/i,raw", "no vdev"),
    ("vdev=xvda", "disk xvda has no target"),
    (",,xvda", "disk xvda has no target"),
    ("/i,xvda,w", "'xvda' is in the format position"),
    ("/i,vmdk,xvda", "format 'vmdk' is unknown: use one of raw, qcow, qcow2, vhd, qed"),
    ("format=RAW,vdev=xvda,target=/i", "format 'RAW' is unknown"),
    ("/i,,xvda,rwx", "access 'rwx' is unknown"),
    ("/i,,xvda,readonly", "access 'readonly' is unknown"),
    ("/i,,xvda,rw,extra", "'extra' is a fifth positional parameter"),
    ("/i,,xvda,rw,", None),
    ("/i,,nosuch", "vdev 'nosuch' is not a virtual device name"),
    ("/i,,xvda:floppy", "the device type after ':' must be disk or cdrom"),
    ("devtype=floppy,/i,,xvda", "devtype 'floppy' is unknown"),
    ("devtype=disk,cdrom,/i,,xvda", "devtype=disk and the cdrom flag disagree"),
    ("backendtype=blktap,/i,,xvda", "backendtype 'blktap' is unknown: use one of phy, tap"),
    ("/i,,xvda,vdev=xvdb", "vdev is given twice ('xvda' and 'xvdb', the second as vdev=)"),
    ("format=raw,/i,qcow2,xvda", "'qcow2' falls in the vdev position because format is"),
    ("/i,raw,xvda,format=qcow2", "format is given twice"),
    ("/i,,xvda,target=/j", "target is given twice"),
    ("raw:/i,,xvda,format=qcow2", "format is given twice"),
    ("iscsi:x,,xvda,script=block-foo", "script is given twice"),
    ("discard,no-discard,/i,,xvda", "both discard and no-discard"),
    ("cdrom=1,/i,,hdc", "cdrom is a flag and takes no value"),
    ("size=10G,/i,,xvda", "unknown parameter 'size'"),
    ("/srv/a=b.img,,xvda", "written last as target="),
    ("Vdev=xvda,target=/i", "unknown parameter 'Vdev'"),
    ("foo:/i,,xvda", None),
    ("foo:bar,,xvda", "unknown prefix 'foo:' in target 'foo:bar'"),
    ("colo,/i,,xvda", "colo needs colo-host, colo-port, colo-export, active-disk, hidden-disk"),
    ("colo,colo-host=h,colo-port=1,/i,,xvda", "colo needs colo-export, active-disk"),
    ("colo-port=http,/i,,xvda", "colo-port 'http' is not a port number"),
    ("colo-port=0,/i,,xvda", "not a port number"),
    ("colo-port=65536,/i,,xvda", "not a port number"),
])
def test_errors(text: str, problem: str | None) -> None:
    if problem is None:  # accepted: a control case beside its error neighbours
        parse_disk_spec(text)
        return
    with pytest.raises(DiskSpecError, match=problem.replace("(", r"\(").replace(")", r"\)")
                       ) as info:
        parse_disk_spec(text)
    message = str(info.value)
    assert "\n" not in message and ": " in message
    assert isinstance(info.value, ValueError)


def test_not_a_string() -> None:
    with pytest.raises(DiskSpecError, match="is a string, not list"):
        parse_disk_spec(["/i", "xvda"])  # type: ignore[arg-type]
