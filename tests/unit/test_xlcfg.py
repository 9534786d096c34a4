"""xl.cfg syntax (pyxen.toolstack.xlcfg) and meaning (pyxen.toolstack.domain_config)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pyxen.toolstack.domain_config import DomainConfig
from pyxen.toolstack.xlcfg import (
    XlCfgError,
    XlConfig,
    XlNumber,
    apply_overrides,
    c_long,
    parse_xl_cfg,
    read_xl_cfg,
)

# A configuration in the style of Xen's docs/misc and examples/xlexample.*.
SAMPLE = """\
# =====================================================================
# Example PVH guest configuration
# =====================================================================
#
# This is a fairly minimal example of what is required for a
# PVH guest. For a more complete guide see xl.cfg(5)

# This configures a PVH rather than PV guest
type = "pvh"

# Guest name
name = "example.pvh"

# 128-bit UUID for the domain as a hexadecimal number.
#uuid = "e5a9c0e8-a2a0-4f5e-8b3c-2f86e6b4a1a7"

# Kernel image to boot
kernel = "vmlinuz"
ramdisk = 'initrd.gz'

# Kernel command line options
extra = "console=hvc0 earlyprintk=xen"
root = "/dev/xvda1 ro"

# Initial memory allocation (MB)
memory = 128 ; maxmem = 256

# Number of VCPUS
vcpus = 2
maxvcpus = 4

on_crash = 'preserve'

# Network devices
# A list of 'vifspec' entries as described in
# docs/misc/xl-network-configuration.markdown
vif = [ 'mac=00:16:3e:00:00:01,bridge=xenbr0' ]

# Disk Devices
# A list of `diskspec' entries as described in
# docs/misc/xl-disk-configuration.txt
disk = [
    '/dev/vg/guest-volume,raw,xvda,rw',   # root
    'format=raw, vdev=xvdb, access=ro, target=/srv/data.img',
]
cpus = "0-3,^1"
"""


def parse(text: str) -> XlConfig:
    return parse_xl_cfg(text, "hello.cfg")


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def parse_error(text: str) -> str:
    with pytest.raises(XlCfgError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- syntax ----------------------------------------------------------------


def test_sample_parses() -> None:
    cfg = parse(SAMPLE)
    assert cfg["type"] == "pvh"
    assert cfg["name"] == "example.pvh"
    assert cfg["memory"] == 128 and cfg["maxmem"] == 256
    assert cfg["disk"] == [
        "/dev/vg/guest-volume,raw,xvda,rw",
        "format=raw, vdev=xvdb, access=ro, target=/srv/data.img",
    ]
    assert cfg["vif"] == ["mac=00:16:3e:00:00:01,bridge=xenbr0"]
    assert "uuid" not in cfg
    assert cfg.line("type") == line_of(SAMPLE, "type =")
    assert cfg.line("maxmem") == line_of(SAMPLE, "memory = 128 ; maxmem")
    assert cfg.where("disk") == f"hello.cfg:{line_of(SAMPLE, 'disk = [')}"
    assert list(cfg)[:3] == ["type", "name", "kernel"]


def test_empty_and_comment_only_files() -> None:
    assert len(parse("")) == 0
    assert len(parse("# nothing\n\n   \n;;\n# last line without newline")) == 0


def test_separators_and_last_line_without_newline() -> None:
    cfg = parse('name="h0"; type="hvm"\nmemory=1;vcpus=2')
    assert dict(cfg) == {"name": "h0", "type": "hvm", "memory": 1, "vcpus": 2}
    assert cfg.line("vcpus") == 2


def test_blanks_tabs_and_crlf() -> None:
    cfg = parse('\tname\t=\t"a"  \r\nmemory = 64\r\n')
    assert cfg["name"] == "a" and cfg["memory"] == 64
    assert cfg.line("memory") == 2


def test_comment_after_value() -> None:
    cfg = parse('name = "a#b" # the name\nmemory = 8# eight\n')
    assert cfg["name"] == "a#b" and cfg["memory"] == 8


def test_identifiers() -> None:
    cfg = parse("a=1\n_x=2\nB9_z=3\ndevice.model=4\n")
    assert list(cfg) == ["a", "_x", "B9_z", "device.model"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('"plain"', "plain"),
        ("'single'", "single"),
        ("'has \"double\" inside'", 'has "double" inside'),
        ("\"has 'single' inside\"", "has 'single' inside"),
        (r'"q\"q"', 'q"q'),
        (r"'q\'q'", "q'q"),
        (r'"back\\slash"', "back\\slash"),
        (r'"\a\b\f\n\r\t\v"', "\a\b\f\n\r\t\v"),
        (r'"\x41\x6a"', "Aj"),
        (r'"\101\12x\7"', "A\nx\x07"),
        (r'"\1012"', "A2"),  # at most three octal digits
        ('""', ""),
        ('"ünïcode"', "ünïcode"),
    ],
)
def test_strings_and_escapes(text: str, value: str) -> None:
    assert parse(f"s = {text}")["s"] == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("42", 42), ("0x1f", 31), ("0x40", 64), ("010", 8), ("00", 0)],
)
def test_numbers(text: str, value: int) -> None:
    got = parse(f"n = {text}")["n"]
    assert isinstance(got, XlNumber)
    assert got == value and got.text == text
    assert repr(got) == f"XlNumber({text!r})"


@pytest.mark.parametrize("text", ["08", "0x", "1e", "12ab", "0xx1"])
def test_number_like_tokens_stay_text(text: str) -> None:
    # libxlu lexes these as numbers but they only work where a string is wanted.
    assert parse(f"n = {text}")["n"] == text


def test_xlnumber_rejects_non_numbers() -> None:
    with pytest.raises(ValueError):
        XlNumber("08")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("64", 64),
        ("0x40", 64),
        ("0X40", 64),
        ("0100", 64),
        ("  +7", 7),
        ("-3", -3),
        ("0", 0),
        ("", None),
        ("08", None),
        ("0x", None),
        ("7 ", None),
        ("lots", None),
        ("1.5", None),
    ],
)
def test_c_long(text: str, value: int | None) -> None:
    assert c_long(text) == value


def test_lists() -> None:
    cfg = parse(
        "empty = []\n"
        "empty2 = [\n\n]\n"
        "one = [ 'a' ]\n"
        "trailing = [ 'a', 'b', ]\n"
        "mixed = [ 1, 'two', 0x3 ]\n"
        "nested = [ ['pnode=0', 'size=512'], [], [[1]] ]\n"
        "multi = [ # opening comment\n"
        "  'a',\n"
        "  # a comment line\n"
        "  'b'\n"
        "  ,\n"
        "  'c',\n"
        "]\n"
        "after = 1\n"
    )
    assert cfg["empty"] == [] and cfg["empty2"] == []
    assert cfg["one"] == ["a"]
    assert cfg["trailing"] == ["a", "b"]
    assert cfg["mixed"] == [1, "two", 3]
    assert cfg["nested"] == [["pnode=0", "size=512"], [], [[1]]]
    assert cfg["multi"] == ["a", "b", "c"]
    assert cfg.line("multi") == 9
    assert cfg.line("after") == 16


def test_later_setting_overrides_earlier() -> None:
    cfg = parse('memory = 64\nname = "a"\nmemory = 128\n')
    assert cfg["memory"] == 128
    assert cfg.line("memory") == 3
    assert list(cfg) == ["memory", "name"]


def test_plus_equals() -> None:
    cfg = parse(
        'extra = "console=hvc0"\n'
        'extra += " quiet"\n'
        "disk = ['a']\n"
        "disk += ['b', 'c']\n"
        'fresh += "x"\n'
        "fresh_list += [1]\n"
    )
    assert cfg["extra"] == "console=hvc0 quiet"
    assert cfg.line("extra") == 2
    assert cfg["disk"] == ["a", "b", "c"]
    assert cfg["fresh"] == "x"
    assert cfg["fresh_list"] == [1]


def test_setting_records_source_and_line() -> None:
    setting = parse('\n\nname = "x"').setting("name")
    assert (setting.key, setting.value, setting.source, setting.line) == (
        "name",
        "x",
        "hello.cfg",
        3,
    )
    assert setting.where == "hello.cfg:3"


# --- syntax errors: message and line -----------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('a = 1\nb = 2\nname = "x\n', "hello.cfg:3: unterminated string (missing closing '\"')"),
        ("name = 'x", "hello.cfg:1: unterminated string (missing closing ''')"),
        ('name = "x\\', "hello.cfg:1: unterminated string (missing closing '\"')"),
        ('name = "x\\\ny"', "hello.cfg:1: unterminated string (missing closing '\"')"),
        ("\n\n\n\nmemory\n", "hello.cfg:5: expected '=' after 'memory'"),
        ("memory 64\n", "hello.cfg:1: expected '=' after 'memory'"),
        ("memory : 64\n", "hello.cfg:1: unexpected character ':'"),
        ("memory\n= 64\n", "hello.cfg:1: expected '=' after 'memory'"),
        (
            "a = 1\n\n\n\n\n\ndisk = [ 'x',\n  'y'\n",
            "hello.cfg:7: unterminated list started here (missing ']')",
        ),
        ("d = [", "hello.cfg:1: unterminated list started here (missing ']')"),
        ("d = [[1],\n[2\n", "hello.cfg:2: unterminated list started here (missing ']')"),
        (
            "disk = [ 'x',\nname = 'y'\n",
            "hello.cfg:2: expected a value or ']' in the list for 'disk' (started on line 1),"
            " got 'name'",
        ),
        (
            "d = [ 'x' 'y' ]",
            "hello.cfg:1: expected ',' or ']' in the list for 'd' (started on line 1), got 'y'",
        ),
        (
            "d = [1,,2]",
            "hello.cfg:1: expected a value or ']' in the list for 'd' (started on line 1), got ','",
        ),
        (
            "d = [,]",
            "hello.cfg:1: expected a value or ']' in the list for 'd' (started on line 1), got ','",
        ),
        ("memory =\n", "hello.cfg:1: missing value for 'memory'"),
        ("memory = ;", "hello.cfg:1: missing value for 'memory'"),
        ("memory =", "hello.cfg:1: missing value for 'memory'"),
        ("memory = = 3", "hello.cfg:1: expected a value for 'memory', got '='"),
        (
            "type = pvh\n",
            "hello.cfg:1: the value of 'type' must be a quoted string, a number or a list,"
            ' got pvh; quote it: "pvh"',
        ),
        (
            "memory = 64 128\n",
            "hello.cfg:1: expected a new line or ';' after the value of 'memory', got '128'",
        ),
        (
            'name = "a" "b"\n',
            "hello.cfg:1: expected a new line or ';' after the value of 'name', got \"b\"",
        ),
        (
            "a = 1 b = 2",
            "hello.cfg:1: expected a new line or ';' after the value of 'a', got 'b'",
        ),
        ("= 3", "hello.cfg:1: expected a setting name, got '='"),
        ("3 = 3", "hello.cfg:1: expected a setting name, got '3'"),
        ("'name' = 3", "hello.cfg:1: expected a setting name, got 'name'"),
        ("[1] = 3", "hello.cfg:1: expected a setting name, got '['"),
        (
            "memory = 64M",
            "hello.cfg:1: invalid number '64M' (write decimal, 0x-prefixed lower-case hex or"
            " 0-prefixed octal, with no unit suffix; quote it if it is a string)",
        ),
        ("n = 0xFF", "hello.cfg:1: invalid number '0xFF'"),
        ("n = 1.5", "hello.cfg:1: invalid number '1.5'"),
        (
            "memory = -1",
            "hello.cfg:1: unexpected character '-' (xl.cfg is not Python: a value is a"
            ' "string", a number or a [list]; there are no expressions or negative numbers)',
        ),
        ("memory = 64 + 64", "hello.cfg:1: unexpected character '+'"),
        ("kernel = ('x')", "hello.cfg:1: unexpected character '('"),
        (
            "name = bar-a # the rest is a comment\n",
            "hello.cfg:1: the value of 'name' must be a quoted string, a number or a list,"
            ' got bar-a; quote it: "bar-a"',
        ),
        (
            "disk = [ x-y, 'z' ]",
            "hello.cfg:1: expected a value or ']' in the list for 'disk' (started on line 1),"
            " got 'x'",
        ),
        (
            "kernel = os.path",
            "hello.cfg:1: the value of 'kernel' must be a quoted string, a number or a list,"
            ' got os.path; quote it: "os.path"',
        ),
        ("a = {}", "hello.cfg:1: unexpected character '{'"),
        ("a = 1\x0c", "hello.cfg:1: unexpected character \\x0c"),
        ("a = 1\n$b = 2", "hello.cfg:2: unexpected character '$'"),
        ("é = 1", "hello.cfg:1: unexpected character 'é'"),
        (
            'a = "\\q"',
            "hello.cfg:1: invalid escape '\\q' in string (write \\\\ for a backslash)",
        ),
        (
            'a = "\\x4"',
            "hello.cfg:1: invalid escape in string: \\x must be followed by two hex digits",
        ),
        ('a = "\\xg0"', "hello.cfg:1: invalid escape in string: \\x must be"),
        ('a = "\\777"', "hello.cfg:1: invalid escape in string: \\777 is above \\377"),
        ('a = "x\\0"', "hello.cfg:1: strings cannot contain NUL characters"),
        ('a = "x\\x00"', "hello.cfg:1: strings cannot contain NUL characters"),
        ('a = "x\x00"', "hello.cfg:1: strings cannot contain NUL characters"),
        ("a = 1\na += 2", "hello.cfg:2: '+=' cannot be used with numbers (key 'a')"),
        ("a += 2", "hello.cfg:1: '+=' cannot be used with numbers (key 'a')"),
        ("a = 'x'\na += 2", "hello.cfg:2: '+=' cannot be used with numbers (key 'a')"),
        ("a = 'x'\na += ['y']", "hello.cfg:2: cannot add a list to the string 'a'"),
        ("a = ['x']\n\na += 'y'", "hello.cfg:3: cannot add a string to the list 'a'"),
        ("a = " + "[" * 40, "hello.cfg:1: lists nested too deeply in 'a'"),
    ],
)
def test_syntax_errors(text: str, message: str) -> None:
    assert parse_error(text).startswith(message)


def test_error_fields() -> None:
    with pytest.raises(XlCfgError) as info:
        parse("\nmemory\n")
    assert info.value.where == "hello.cfg:2"
    assert info.value.problem == "expected '=' after 'memory'"


def test_read_xl_cfg(tmp_path: Path) -> None:
    path = tmp_path / "guest.cfg"
    path.write_bytes(b'name = "g"\nkernel = "/boot/\xff"\n')
    cfg = read_xl_cfg(path)
    assert cfg.source == str(path)
    assert cfg["name"] == "g"
    assert cfg["kernel"] == "/boot/\udcff"  # undecodable bytes survive as in os.fsdecode
    with pytest.raises(XlCfgError, match=r"missing\.cfg: cannot read configuration file: "):
        read_xl_cfg(tmp_path / "missing.cfg")


# --- command-line overrides ---------------------------------------------------


def test_overrides() -> None:
    cfg = parse('name = "a"\nmemory = 128\nextra = "x"\ndisk = ["d1"]\n')
    new = apply_overrides(
        cfg, ["memory=64", 'name="b"', 'extra+=" y"', "disk+=['d2']", "vcpus=2;maxvcpus=4", ""]
    )
    assert dict(new) == {
        "name": "b",
        "memory": 64,
        "extra": "x y",
        "disk": ["d1", "d2"],
        "vcpus": 2,
        "maxvcpus": 4,
    }
    assert new.line("memory") is None
    assert new.where("memory") == "command line: 'memory=64'"
    assert new.where("disk") == "command line: 'disk+=['d2']'"
    assert new.line("name") is None and new.source == "hello.cfg"
    # The original is untouched and unset keys keep their file location.
    assert cfg["memory"] == 128 and cfg.line("memory") == 2
    assert apply_overrides(cfg, []).where("memory") == "hello.cfg:2"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("memory=64M", "command line: 'memory=64M': invalid number '64M'"),
        ('name="x', "command line: 'name=\"x': unterminated string (missing closing '\"')"),
        ("memory", "command line: 'memory': expected '=' after 'memory'"),
        ("memory=6 4", "command line: 'memory=6 4': expected a new line or ';'"),
        ("disk=['a'", "command line: 'disk=['a'': unterminated list started here"),
        ("name+=['x']", "command line: 'name+=['x']': cannot add a list to the string 'name'"),
        ("a=1\nb", "command line: 'a=1\\nb': expected '=' after 'b'"),
        # The hint quotes the whole value, not just the identifier it starts with.
        ("name=bar-a", "command line: 'name=bar-a': the value of 'name' must be a quoted"
                       ' string, a number or a list, got bar-a; quote it: "bar-a"'),
        ("extra=a b.c", 'got a b.c; quote it: "a b.c"'),
        ('name=a"b-c', 'got a"b-c; quote it: "a\\"b-c"'),
    ],
)
def test_override_errors(override: str, message: str) -> None:
    cfg = parse('name = "a"')
    with pytest.raises(XlCfgError) as info:
        apply_overrides(cfg, ["vcpus=1", override])
    assert str(info.value).startswith(message) or str(info.value).endswith(message)
    assert "\n" not in str(info.value)


# --- DomainConfig -------------------------------------------------------------


@pytest.fixture
def guest_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding a kernel and an initrd; the CWD is elsewhere."""
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "initrd.gz").write_bytes(b"initrd")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return tmp_path


def domain(text: str, directory: Path, overrides: list[str] | None = None) -> DomainConfig:
    path = directory / "hello.cfg"
    cfg = parse_xl_cfg(text, "hello.cfg")
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return DomainConfig.from_xl(cfg, path)


def domain_error(text: str, directory: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(XlCfgError) as info:
        domain(text, directory, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


MINIMAL = 'name = "g"\ntype = "pvh"\nkernel = "vmlinuz"\n'


def test_sample_domain(guest_dir: Path) -> None:
    dom = domain(SAMPLE, guest_dir)
    assert dom == DomainConfig(
        name="example.pvh",
        type="pvh",
        kernel=guest_dir / "vmlinuz",
        ramdisk=guest_dir / "initrd.gz",
        cmdline="root=/dev/xvda1 ro console=hvc0 earlyprintk=xen",
        memory_mib=128,
        maxmem_mib=256,
        vcpus=2,
        maxvcpus=4,
        on_poweroff="destroy",
        on_reboot="restart",
        on_crash="preserve",
        source=guest_dir / "hello.cfg",
        unknown_keys=(),
        ignored_keys=(),
        warnings=(),
        cpus=(0, 2, 3),  # "0-3,^1"
        disks=({"vdev": "xvda", "devid": 51712, "target": "/dev/vg/guest-volume",
                "format": "raw", "read_only": False, "cdrom": False, "discard": True},
               {"vdev": "xvdb", "devid": 51728, "target": "/srv/data.img",
                "format": "raw", "read_only": True, "cdrom": False, "discard": True}),
        nics=({"devid": 0, "mac": "00:16:3e:00:00:01", "bridge": "xenbr0", "vifname": None,
               "ip": None, "mtu": None, "rate": None},),
    )


def test_defaults(guest_dir: Path) -> None:
    dom = domain('name = "g"\nkernel = "vmlinuz"\n', guest_dir)
    assert dom.type == "pv"  # xl's default on x86; pyxen's builder refuses it
    assert dom.ramdisk is None
    assert dom.cmdline == ""
    assert (dom.memory_mib, dom.maxmem_mib) == (32, 32)  # libxl's default
    assert (dom.vcpus, dom.maxvcpus) == (1, 1)
    assert (dom.on_poweroff, dom.on_reboot, dom.on_crash) == ("destroy", "restart", "destroy")
    assert dom.unknown_keys == dom.ignored_keys == dom.warnings == ()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ('type = "pvh"', "pvh"),
        ('type = "pv"', "pv"),
        ('type = "hvm"', "hvm"),
        ('type = "p"', "pv"),  # xl matches prefixes, trying hvm, pv, pvh in turn
        ('type = "h"', "hvm"),
        ('builder = "hvm"', "hvm"),
        ('builder = "generic"', "pv"),
        ('builder = "gen"', "pv"),
        ('type = "hvm"\nbuilder = "hvm"', "hvm"),
        ("pvh = 1", "pvh"),
        ("pvh = 0", "pv"),
        ('pvh = 1\nbuilder = "hvm"', "hvm"),
    ],
)
def test_type(guest_dir: Path, settings: str, expected: str) -> None:
    kernel = "" if expected == "hvm" else 'kernel = "vmlinuz"\n'  # HVM boots from firmware
    assert domain(f'name = "g"\n{kernel}{settings}\n', guest_dir).type == expected


def test_hvm_with_a_kernel_boots_it_directly(guest_dir: Path) -> None:
    dom = domain('name = "g"\nkernel = "vmlinuz"\nramdisk = "initrd.gz"\ntype = "hvm"\n'
                 'root = "/dev/sda1"\nextra = "console=ttyS0"\n', guest_dir)
    assert dom.type == "hvm"
    assert (dom.kernel, dom.ramdisk) == (guest_dir / "vmlinuz", guest_dir / "initrd.gz")
    assert dom.cmdline == "root=/dev/sda1 console=ttyS0"
    assert dom.hvm is not None and dom.hvm["firmware"] is None


@pytest.mark.parametrize(("settings", "problem"), [
    ('kernel = "vmlinuz"\nfirmware = "/x/hvmloader"',
     "hello.cfg:4: firmware does not apply with kernel="),
    ('kernel = "vmlinuz"\nbios_path_override = "/x/bios.bin"',
     "hello.cfg:4: bios_path_override does not apply with kernel="),
    ('ramdisk = "initrd.gz"', "hello.cfg:3: ramdisk= needs kernel="),
])
def test_hvm_kernel_conflicts_are_refused_clearly(guest_dir: Path, settings: str,
                                                  problem: str) -> None:
    message = domain_error(f'name = "g"\ntype = "hvm"\n{settings}\n', guest_dir)
    assert message.startswith(problem), message


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("", ""),
        ('cmdline = "console=hvc0"', "console=hvc0"),
        ('root = "/dev/xvda1"', "root=/dev/xvda1"),
        ('extra = "quiet"', "quiet"),
        ('root = "/dev/xvda1"\nextra = "quiet"', "root=/dev/xvda1 quiet"),
        ('root = ""\nextra = ""', "root= "),
        ('extra = "a"\nextra += " b"', "a b"),
        ("extra = 3", "3"),
    ],
)
def test_cmdline(guest_dir: Path, settings: str, expected: str) -> None:
    dom = domain(f"{MINIMAL}{settings}\n", guest_dir)
    assert dom.cmdline == expected
    assert dom.warnings == ()


def test_cmdline_wins_over_root_and_extra(guest_dir: Path) -> None:
    dom = domain(f'{MINIMAL}root = "/dev/x"\ncmdline = "c"\nextra = "e"\n', guest_dir)
    assert dom.cmdline == "c"
    assert dom.warnings == ("hello.cfg:5: ignoring root= and extra= in favour of cmdline=",)


def test_paths(guest_dir: Path) -> None:
    # Next to the config file first.
    assert domain(MINIMAL, guest_dir).kernel == guest_dir / "vmlinuz"
    # Then the current directory (which holds its own vmlinuz).
    cwd = Path.cwd()
    (cwd / "bzImage").write_bytes(b"k")
    (cwd / "vmlinuz").write_bytes(b"k")
    assert domain('name="g"\nkernel="bzImage"', guest_dir).kernel == cwd / "bzImage"
    assert domain('name="g"\nkernel="vmlinuz"', guest_dir).kernel == guest_dir / "vmlinuz"
    # Subdirectories and absolute paths.
    (guest_dir / "boot").mkdir()
    (guest_dir / "boot" / "k").write_bytes(b"k")
    assert domain('name="g"\nkernel="boot/k"', guest_dir).kernel == guest_dir / "boot" / "k"
    absolute = str(guest_dir / "initrd.gz")
    dom = domain(f'name="g"\nkernel="vmlinuz"\nramdisk="{absolute}"', guest_dir)
    assert dom.ramdisk == Path(absolute)


def test_relative_config_path(guest_dir: Path) -> None:
    cfg = parse_xl_cfg(MINIMAL, "../hello.cfg")
    dom = DomainConfig.from_xl(cfg, Path("../hello.cfg"))  # CWD is guest_dir/elsewhere
    assert dom.kernel.resolve() == (guest_dir / "vmlinuz").resolve()
    assert dom.source == Path("../hello.cfg")


def test_a_given_directory_stands_for_the_current_one(guest_dir: Path, tmp_path: Path) -> None:
    """The daemon checks a client's config with the client's directory (config_ops)."""
    client_cwd = tmp_path / "client"
    client_cwd.mkdir()
    (client_cwd / "bzImage").write_bytes(b"k")
    cfg = parse_xl_cfg('name="g"\nkernel="bzImage"\ndisk=["disk.img,raw,xvda,rw"]\n',
                       "hello.cfg")
    dom = DomainConfig.from_xl(cfg, Path("../hello.cfg"), client_cwd)
    assert dom.kernel == client_cwd / "bzImage"
    assert dom.disks[0]["target"] == str(client_cwd / "disk.img")
    assert domain_error('name="g"\nkernel="bzImage"', guest_dir).endswith(
        f"(looked for {guest_dir}/bzImage or {guest_dir}/elsewhere/bzImage)")


def test_numbers_may_be_quoted_and_strings_numeric(guest_dir: Path) -> None:
    dom = domain(
        'name = 42\nkernel = "vmlinuz"\nmemory = "0x40"\nmaxmem = 0100\nvcpus = " 2"', guest_dir
    )
    assert dom.name == "42"
    assert (dom.memory_mib, dom.maxmem_mib, dom.vcpus) == (64, 64, 2)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("memory = 512", (512, 512)),
        ("maxmem = 512", (512, 512)),
        ("memory = 256\nmaxmem = 512", (256, 512)),
        ("memory = 256\nmaxmem = 256", (256, 256)),
    ],
)
def test_memory(guest_dir: Path, settings: str, expected: tuple[int, int]) -> None:
    dom = domain(f"{MINIMAL}{settings}\n", guest_dir)
    assert (dom.memory_mib, dom.maxmem_mib) == expected


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("vcpus = 4", (4, 4)),
        ("maxvcpus = 4", (1, 4)),
        ("vcpus = 2\nmaxvcpus = 8", (2, 8)),
        ("vcpus = 128", (128, 128)),
    ],
)
def test_vcpus(guest_dir: Path, settings: str, expected: tuple[int, int]) -> None:
    dom = domain(f"{MINIMAL}{settings}\n", guest_dir)
    assert (dom.vcpus, dom.maxvcpus) == expected


@pytest.mark.parametrize(
    "action",
    [
        "destroy",
        "restart",
        "rename-restart",
        "preserve",
        "coredump-destroy",
        "coredump-restart",
        "soft-reset",
    ],
)
def test_actions(guest_dir: Path, action: str) -> None:
    text = f'{MINIMAL}on_poweroff="{action}"\non_reboot="{action}"\non_crash="{action}"\n'
    dom = domain(text, guest_dir)
    assert dom.on_poweroff == dom.on_reboot == dom.on_crash == action


def test_unknown_and_ignored_keys(guest_dir: Path) -> None:
    text = f"{MINIMAL}memroy = 64\ndisk = []\nvif = ['bridge=xenbr0']\nFoo = 1\nvnuma = 'x'\n"
    dom = domain(text, guest_dir)
    assert dom.unknown_keys == ("memroy", "Foo")
    assert dom.ignored_keys == ("vnuma",)


def test_vif_key(guest_dir: Path) -> None:
    dom = domain(MINIMAL + "vif = ['bridge=br1, rate=10Mb/s', 'mac=00:16:3e:0a:0b:0c, devid=5',"
                           " '']\n", guest_dir)
    assert [(n["devid"], n["bridge"], n["rate"]) for n in dom.nics] == [
        (0, "br1", [62500, 50000]), (5, None, None), (2, None, None)]
    assert dom.nics[1]["mac"] == "00:16:3e:0a:0b:0c"
    assert all(n["mac"].startswith("00:16:3e:") for n in dom.nics)
    for spec, problem in (
            ("'backend=dd'", "driver domains"),
            ("'script=/etc/xen/scripts/vif-nat'", "hotplug scripts"),
            ("'type=ioemu'", "device model"),
            ("'mac=00:16:3e:00:00:01', 'mac=00:16:3e:00:00:01'", "used twice"),
            ("'colour=red'", "colour"),
    ):
        assert problem in domain_error(MINIMAL + f"vif = [{spec}]\n", guest_dir), spec


def test_disk_key(guest_dir: Path) -> None:
    dom = domain(MINIMAL + "disk = ['qcow2:img.q2,xvdb,r', 'vdev=hda, target=d.img']\n",
                 guest_dir)
    assert [(d["vdev"], d["devid"], d["format"], d["read_only"]) for d in dom.disks] == [
        ("xvdb", 51728, "qcow2", True), ("hda", 768, "raw", False)]
    assert all(d["target"].startswith("/") for d in dom.disks)
    for spec, problem in (
            ("'d.img,vhd,xvda'", "format vhd is not served"),
            ("'d.img,raw,xvda', 'e.img,raw,xvda'", "vdev xvda is used twice"),
            ("',,hdc:cdrom,r'", "empty cdrom drive"),
            ("'backend=dd, vdev=xvda, target=d.img'", "driver domains"),
            ("'vdev=xvda, script=block-iscsi, target=x'", "hotplug scripts"),
            ("'d.img,raw'", "vdev"),
    ):
        assert problem in domain_error(MINIMAL + f"disk = [{spec}]\n", guest_dir), spec
    assert "must be a list" in domain_error(MINIMAL + "disk = 'd.img,raw,xvda'\n", guest_dir)


def test_scheduling_keys(guest_dir: Path) -> None:
    dom = domain(MINIMAL + 'cpus = "0-2,^1"\ncpus_soft = "all"\ncpu_weight = 512\ncap = 50\n',
                 guest_dir)
    assert (dom.cpus, dom.cpus_soft, dom.cpu_weight, dom.cap) == ((0, 2), None, 512, 50)
    assert "cpu_weight" in domain_error(MINIMAL + "cpu_weight = 0\n", guest_dir)
    assert "per-vCPU lists" in domain_error(MINIMAL + 'cpus = ["0", "1"]\n', guest_dir)
    assert "leaves no CPU" in domain_error(MINIMAL + 'cpus = "1,^1"\n', guest_dir)


def test_watchdog_action_and_event_channel_limit(guest_dir: Path) -> None:
    dom = domain(MINIMAL + "on_watchdog = 'preserve'\nmax_event_channels = 64\n", guest_dir)
    assert (dom.on_watchdog, dom.max_event_channels) == ("preserve", 64)
    default = domain(MINIMAL, guest_dir)
    assert (default.on_watchdog, default.max_event_channels) == ("destroy", 1023)
    message = domain_error(MINIMAL + "max_event_channels = 0\n", guest_dir)
    assert "max_event_channels" in message


def test_overrides_reach_domain_config(guest_dir: Path) -> None:
    dom = domain(MINIMAL + "memory = 128\n", guest_dir, ["memory=64", 'name="other"'])
    assert (dom.name, dom.memory_mib) == ("other", 64)
    message = domain_error(MINIMAL, guest_dir, ["memory='lots'"])
    assert message == "command line: 'memory='lots'': memory must be a number of MiB, got \"lots\""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kernel = "vmlinuz"\n', 'hello.cfg: name is required: add name = "NAME"'),
        ('name = ""\nkernel = "vmlinuz"', "hello.cfg:1: the domain name is empty"),
        # xl's name rules (control/names.py), reported at the name's line.
        ('name = "a/b"\nkernel = "vmlinuz"', "hello.cfg:1: the domain name 'a/b' contains '/'"),
        ('name = "Domain-0"\nkernel = "vmlinuz"', "hello.cfg:1: 'Domain-0' is domain 0's name"),
        (f'name = "{"x" * 65}"\nkernel = "vmlinuz"', "hello.cfg:1: the domain name 'xxxx"),
        ('name = "a\\tb"\nkernel = "vmlinuz"', "hello.cfg:1: the domain name 'a\\tb' contains "
                                                 "unprintable characters"),
        (
            'name = ["a"]\nkernel = "vmlinuz"',
            "hello.cfg:1: name must be a single value, got a list",
        ),
        (
            'name = "g"',
            "hello.cfg: kernel is required: pyxen boots guests only by direct kernel boot;"
            ' add kernel = "/path/to/vmlinuz"',
        ),
        ('name = "g"\ntype = "pvh"', "hello.cfg: kernel is required"),
        ('name = "g"\ntype = "hvm"\nboot = "d"', 'hello.cfg:3: boot "d": only booting from'),
        ('name = "g"\ntype = "hvm"\nfirmware = "ovmf"', 'hello.cfg:3: firmware "ovmf" is not'),
        ('name = "g"\ntype = "hvm"\nviridian = 1', "hello.cfg:3: viridian (Hyper-V"),
        ('name = "g"\ntype = "hvm"\nserial = "vc"', 'hello.cfg:3: serial "vc": only'),
        ('name = "g"\nkernel = ""', "hello.cfg:2: kernel must not be empty"),
        ('name = "g"\n\nkernel = "nope"', "hello.cfg:3: kernel file not found: nope (looked for "),
        ('name = "g"\nkernel = "/no/such/kernel"', "hello.cfg:2: kernel file not found: "),
        ('name = "g"\nkernel = "elsewhere"', "hello.cfg:2: kernel file not found: "),  # a dir
        (MINIMAL + 'ramdisk = "missing.img"', "hello.cfg:4: ramdisk file not found: missing.img"),
        (MINIMAL + "kernel = ['a']", "hello.cfg:4: kernel must be a single value, got a list"),
        (
            'name = "g"\nkernel = "vmlinuz"\ntype = "kvm"',
            'hello.cfg:3: type must be "pvh", "pv" or "hvm", got "kvm"',
        ),
        (
            'name = "g"\nkernel = "vmlinuz"\ntype = "pvhx"',
            'hello.cfg:3: type must be "pvh", "pv" or "hvm", got "pvhx"',
        ),
        (
            'name = "g"\nkernel = "vmlinuz"\nbuilder = "linux"',
            'hello.cfg:3: builder must be "hvm" or "generic", got "linux"',
        ),
        (
            'name = "g"\nkernel = "vmlinuz"\ntype = "pvh"\nbuilder = "hvm"',
            'hello.cfg:4: builder="hvm" contradicts type="pvh"; remove builder',
        ),
        (
            'name = "g"\nkernel = "vmlinuz"\npvh = "yes"',
            'hello.cfg:3: pvh must be 0 or 1, got "yes"',
        ),
        (
            MINIMAL + "\nmemory = 'lots'",
            'hello.cfg:5: memory must be a number of MiB, got "lots"',
        ),
        (MINIMAL + "memory = 08", 'hello.cfg:4: memory must be a number of MiB, got "08"'),
        (MINIMAL + "memory = [64]", "hello.cfg:4: memory must be a number of MiB, got a list"),
        (MINIMAL + "memory = 0", "hello.cfg:4: memory must be between 1 and "),
        (MINIMAL + "memory = '-64'", "hello.cfg:4: memory must be between 1 and "),
        (MINIMAL + "memory = 0x100000000000", "hello.cfg:4: memory must be between 1 and "),
        (MINIMAL + "maxmem = 0", "hello.cfg:4: maxmem must be between 1 and "),
        (
            MINIMAL + "memory = 256\nmaxmem = 128",
            "hello.cfg:5: maxmem (128 MiB) must be at least memory (256 MiB)",
        ),
        (MINIMAL + "vcpus = 'two'", 'hello.cfg:4: vcpus must be a number of vCPUs, got "two"'),
        (MINIMAL + "vcpus = 0", "hello.cfg:4: vcpus must be between 1 and 128, got 0"),
        (MINIMAL + "vcpus = 129", "hello.cfg:4: vcpus must be between 1 and 128, got 129"),
        (MINIMAL + "maxvcpus = 129", "hello.cfg:4: maxvcpus must be between 1 and 128, got 129"),
        (
            MINIMAL + "vcpus = 4\nmaxvcpus = 2",
            "hello.cfg:5: maxvcpus (2) must be at least vcpus (4)",
        ),
        (
            MINIMAL + "on_crash = 'reboot'",
            "hello.cfg:4: on_crash must be one of destroy, restart, rename-restart, preserve,"
            ' coredump-destroy, coredump-restart, soft-reset; got "reboot"',
        ),
        (MINIMAL + "on_poweroff = 1", "hello.cfg:4: on_poweroff must be one of destroy"),
        (MINIMAL + "on_reboot = ['restart']", "hello.cfg:4: on_reboot must be a single value"),
        (MINIMAL + "cmdline = ['a']", "hello.cfg:4: cmdline must be a single value, got a list"),
    ],
)
def test_domain_errors(guest_dir: Path, text: str, message: str) -> None:
    assert domain_error(text, guest_dir).startswith(message)


# --- robustness ---------------------------------------------------------------

_GARBAGE_ALPHABET = [
    *"abcxyz_019 \t\r\n\n\n#;=,[]'\"\\+-.():{}$é\x00",
    *["name", "kernel", "memory", "type", "vcpus", "=", "+=", "0x", "[", "]", '"pvh"'],
    *['"vmlinuz"', "'x'", "\\x4", "\\101", "on_crash", "maxmem", "maxvcpus", "builder"],
]


def test_fuzz_only_xlcfgerror(guest_dir: Path) -> None:
    rng = random.Random(20240601)
    parsed = 0
    for _ in range(4000):
        text = "".join(rng.choice(_GARBAGE_ALPHABET) for _ in range(rng.randrange(0, 40)))
        try:
            cfg = parse_xl_cfg(text, "fuzz.cfg")
            parsed += 1
            DomainConfig.from_xl(cfg, guest_dir / "fuzz.cfg")
            apply_overrides(cfg, [text])
        except XlCfgError as err:
            assert "\n" not in str(err)
            assert str(err).startswith(("fuzz.cfg", "command line: "))
    assert parsed > 100  # the fuzzer reaches the meaning layer, not only the lexer


def test_fuzz_random_bytes() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
        try:
            parse_xl_cfg(data.decode("utf-8", "surrogateescape"), "bytes.cfg")
        except XlCfgError as err:
            assert "\n" not in str(err)
