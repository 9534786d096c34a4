"""The device-tree reader (boot/fdt.py), Xen's dom0less binding (boot/dom0less.py)
and the Xen options of a tree (toolstack/boot.py): no KVM needed; .dts inputs
are compiled with dtc (the tests skip without it)."""

from __future__ import annotations

import contextlib
import shutil
import struct
from pathlib import Path

import pytest

from pyxen.boot.dom0less import BindingError, read_binding
from pyxen.boot.fdt import FdtError, load_tree, parse_dtb
from pyxen.toolstack.boot import BootError, parse_xen_options, plan_boot

pytestmark = pytest.mark.skipif(shutil.which("dtc") is None,
                                reason="needs dtc (apt-get install device-tree-compiler)")
GIB = 1 << 30
KERNEL = '''module@0 { compatible = "multiboot,kernel", "multiboot,module";
                       xen,uefi-binary = "k.elf"; %s };'''


def _domain(body: str = "", name: str = "d1", kernel: str = "") -> str:
    return f'''{name} {{ compatible = "xen,domain"; #address-cells = <2>; #size-cells = <1>;
              memory = <0 131072>; cpus = <1>; {body} {KERNEL % kernel} }};'''


def _tree(tmp_path: Path, chosen: str, name: str = "t.dts") -> Path:
    (tmp_path / "k.elf").write_bytes(b"kernel")
    (tmp_path / "r.img").write_bytes(b"ramdisk")
    path = tmp_path / name
    path.write_text(f"/dts-v1/;\n/ {{ model = \"x\"; chosen {{ {chosen} }}; }};\n")
    return path


def _read(tmp_path: Path, chosen: str):  # type: ignore[no-untyped-def]
    path = _tree(tmp_path, chosen)
    return read_binding(load_tree(path), path.parent)


def _error(tmp_path: Path, chosen: str) -> str:
    with pytest.raises(BindingError) as e:
        _read(tmp_path, chosen)
    text = str(e.value)
    assert "\n" not in text
    return text


# -- the .dtb reader --------------------------------------------------------------------------

def test_reads_what_dtc_writes(tmp_path: Path) -> None:
    root = load_tree(_tree(tmp_path, _domain('vpl011; xen,enhanced = "no-xenstore";')))
    node = root.find("/chosen/d1")
    assert node is not None and node.path == "/chosen/d1"
    assert node.strings("compatible") == ["xen,domain"]
    assert node.cells("memory") == [0, 131072]
    assert node.u32("cpus") == 1
    assert node.raw("vpl011") == b""
    assert node.string("xen,enhanced") == "no-xenstore"
    assert [c.name for c in node.children] == ["module@0"]
    assert root.child("chosen") is not None and root.string("model") == "x"


def test_a_dtb_by_magic_whatever_its_name(tmp_path: Path) -> None:
    import subprocess

    src = _tree(tmp_path, _domain())
    blob = subprocess.run(["dtc", "-q", "-O", "dtb", str(src)], capture_output=True,
                          check=True).stdout
    (tmp_path / "t.bin").write_bytes(blob)
    assert load_tree(tmp_path / "t.bin").find("/chosen/d1") is not None


@pytest.mark.parametrize("corrupt, words", [
    (lambda b: b"\0\0\0\0" + b[4:], "magic"),
    (lambda b: b[:20], "shorter than its header"),
    (lambda b: b[:40], "truncated"),
    (lambda b: b[:8] + struct.pack(">I", 0xFFFF00) + b[12:], "outside the blob"),
    (lambda b: b[:20] + struct.pack(">I", 2) + b[24:], "version 2"),
])
def test_malformed_blobs(tmp_path: Path, corrupt, words: str) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    blob = subprocess.run(["dtc", "-q", "-O", "dtb", str(_tree(tmp_path, _domain()))],
                          capture_output=True, check=True).stdout
    with pytest.raises(FdtError, match=words):
        parse_dtb(corrupt(blob))


def test_a_garbled_structure_block(tmp_path: Path) -> None:
    import subprocess

    blob = bytearray(subprocess.run(["dtc", "-q", "-O", "dtb", str(_tree(tmp_path, _domain()))],
                                    capture_output=True, check=True).stdout)
    off = struct.unpack_from(">I", blob, 8)[0]
    struct.pack_into(">I", blob, off, 7)  # the root's BEGIN_NODE becomes token 7
    with pytest.raises(FdtError, match="does not start with the root"):
        parse_dtb(bytes(blob))
    for cut in range(off, len(blob), 7):  # every truncation is an FdtError, never another error
        with contextlib.suppress(FdtError):
            parse_dtb(bytes(blob[:cut]))


def test_dtc_errors_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.dts"
    path.write_text("/dts-v1/;\n/ { chosen { x = <1 ; }; };\n")
    with pytest.raises(FdtError) as e:
        load_tree(path)
    assert str(e.value).startswith("dtc: ") and "\n" not in str(e.value)


# -- the binding ------------------------------------------------------------------------------

def test_a_domain(tmp_path: Path) -> None:
    tree = _read(tmp_path, _domain(
        '''cpus2 { compatible = "xen,vcpu"; id = <0>; hard-affinity = "0-1"; };
           ramdisk@1 { compatible = "multiboot,ramdisk", "multiboot,module";
                       xen,uefi-binary = "r.img"; };''', kernel='bootargs = "a=1 b";'))
    (d,) = tree.domus
    assert (d.name, d.memory_kib, d.memory_mib, d.cpus) == ("d1", 131072, 128, 1)
    assert d.kernel == (tmp_path / "k.elf").absolute()
    assert d.ramdisk == (tmp_path / "r.img").absolute()
    assert d.cmdline == "a=1 b"
    assert d.enhanced == "disabled"  # absent: no PV interfaces, as in Xen
    assert d.vcpu_hard == ((0, frozenset({0, 1})),)
    assert tree.dom0 is None and tree.warnings == ()


@pytest.mark.parametrize("prop, want", [
    ("", "disabled"), ("xen,enhanced;", "enabled"), ('xen,enhanced = "enabled";', "enabled"),
    ('xen,enhanced = "legacy";', "enabled"), ('xen,enhanced = "no-xenstore";', "no-xenstore"),
    ('xen,enhanced = "disabled";', "disabled"),
])
def test_enhanced(tmp_path: Path, prop: str, want: str) -> None:
    assert _read(tmp_path, _domain(prop)).domus[0].enhanced == want


def test_unlabelled_modules_are_kernel_then_ramdisk(tmp_path: Path) -> None:
    tree = _read(tmp_path, '''d { compatible = "xen,domain"; memory = <0 65536>; cpus = <2>;
        m1 { compatible = "multiboot,module"; xen,uefi-binary = "k.elf"; };
        m2 { compatible = "multiboot,module"; xen,uefi-binary = "r.img"; }; };''')
    assert tree.domus[0].kernel.name == "k.elf" and tree.domus[0].ramdisk is not None


def test_vpl011_is_accepted_with_a_warning(tmp_path: Path) -> None:
    tree = _read(tmp_path, _domain("vpl011;"))
    assert len(tree.warnings) == 1 and "/chosen/d1: vpl011: " in tree.warnings[0]


def test_memory_rounds_up_to_mib_with_a_warning(tmp_path: Path) -> None:
    tree = _read(tmp_path, _domain().replace("<0 131072>", "<0 131073>"))
    assert tree.domus[0].memory_mib == 129 and "rounded up" in tree.warnings[0]


@pytest.mark.parametrize("chosen, words", [
    (_domain().replace("<0 131072>", "<131072>"), "/chosen/d1: memory: must be a 64-bit"),
    (_domain().replace("memory = <0 131072>;", ""), "/chosen/d1: memory: missing"),
    (_domain().replace("<0 131072>", "<0 512>"), "/chosen/d1: memory: 512 KiB"),
    (_domain().replace("cpus = <1>;", ""), "/chosen/d1: cpus: missing"),
    (_domain().replace("cpus = <1>;", "cpus = <0>;"), "/chosen/d1: cpus: 0 vCPUs"),
    (_domain().replace("cpus = <1>;", "cpus = <1 2>;"), "/chosen/d1: cpus: must be one"),
    (_domain("colour = <1>;"), "/chosen/d1: colour: not a property"),
    (_domain("direct-map;"), "/chosen/d1: direct-map: not supported by pyxen"),
    (_domain('xen,enhanced = "yes";'), "/chosen/d1: xen,enhanced: 'yes'"),
    (_domain('xen,enhanced = <1>;'), "/chosen/d1: xen,enhanced: must be a string"),
    (_domain().replace('xen,uefi-binary = "k.elf";', "reg = <0 0x1000 0x100>;"),
     "/chosen/d1/module@0: reg: pyxen has no boot loader"),
    (_domain().replace('xen,uefi-binary = "k.elf";', ""),
     "/chosen/d1/module@0: xen,uefi-binary: missing"),
    (_domain().replace('"k.elf"', '"nope.elf"'), "/chosen/d1/module@0: xen,uefi-binary: "
                                                  "'nope.elf': no such file"),
    (_domain(kernel="reg = <0 1>;"), "/chosen/d1/module@0: reg: 8 bytes"),
    (_domain(kernel="size = <1>;"), "/chosen/d1/module@0: size: not a property of a boot"),
    (_domain(KERNEL.replace("module@0", "module@1") % ""), "/chosen/d1/module@0: compatible: "
                                                           "a second kernel"),
    (_domain('v { compatible = "xen,vcpu"; id = <1>; hard-affinity = "0"; };'),
     "/chosen/d1/v: id: vCPU 1 does not exist"),
    (_domain('v { compatible = "xen,vcpu"; id = <0>; hard-affinity = "x"; };'),
     "/chosen/d1/v: hard-affinity: 'x' is not a CPU"),
    (_domain('v { compatible = "xen,vcpu"; id = <0>; };'), "/chosen/d1/v: hard-affinity: "
                                                           "missing"),
    (_domain('e { compatible = "xen,evtchn-v1"; };'), "/chosen/d1/e: compatible: not supported"),
    (_domain("p { x = <1>; };"), "/chosen/d1/p: compatible: missing"),
    ('d1 { compatible = "xen,domain"; memory = <0 65536>; cpus = <1>; };',
     "/chosen/d1: kernel: no kernel"),
    ("", "/chosen: compatible: no domain to boot"),
    ("foo = <1>;" + _domain(), "/chosen: foo: not a property"),
    ('x { compatible = "acme,widget"; };' + _domain(), "/chosen/x: compatible: 'acme,widget'"),
    ('x { compatible = "xen,xsm-policy", "multiboot,module"; };' + _domain(),
     "/chosen/x: compatible: xen,xsm-policy"),
    ('r { compatible = "multiboot,ramdisk", "multiboot,module"; xen,uefi-binary = "r.img"; };'
     + _domain(), "/chosen/r: compatible: a dom0 ramdisk without"),
])
def test_binding_errors(tmp_path: Path, chosen: str, words: str) -> None:
    assert words in _error(tmp_path, chosen)


def test_no_chosen(tmp_path: Path) -> None:
    path = tmp_path / "t.dts"
    path.write_text("/dts-v1/;\n/ { };\n")
    with pytest.raises(BindingError, match="/: chosen: no /chosen node"):
        read_binding(load_tree(path), tmp_path)


def test_firmware_properties_are_warned_about(tmp_path: Path) -> None:
    tree = _read(tmp_path, 'stdout-path = "serial0";' + _domain())
    assert tree.warnings == ("/chosen: stdout-path: a firmware property: ignored",)


# -- dom0 and the command lines (Xen's rules for /chosen) ---------------------------------

DOM0 = '''k { compatible = "multiboot,kernel", "multiboot,module";
             xen,uefi-binary = "k.elf"; %s };'''


@pytest.mark.parametrize("props, kernel_args, xen, dom0", [
    ('xen,xen-bootargs = "X"; xen,dom0-bootargs = "D"; bootargs = "B";', "", "X", "D"),
    ('xen,dom0-bootargs = "D"; bootargs = "B";', "", "B", "D"),
    ('bootargs = "B";', 'bootargs = "K";', "B", "K"),
    ('xen,xen-bootargs = "X"; bootargs = "B";', 'bootargs = "K";', "X", "K"),
    ('bootargs = "B";', "", "", "B"),
    ('xen,xen-bootargs = "X"; bootargs = "B";', "", "X", "B"),
    ("", "", "", ""),
])
def test_dom0_command_lines(tmp_path: Path, props: str, kernel_args: str, xen: str,
                            dom0: str) -> None:
    tree = _read(tmp_path, props + DOM0 % kernel_args)
    assert tree.dom0 is not None and tree.domus == ()
    assert (tree.xen_cmdline, tree.dom0.cmdline) == (xen, dom0)


def test_without_dom0_plain_bootargs_is_xens(tmp_path: Path) -> None:
    tree = _read(tmp_path, 'bootargs = "argo=1";' + _domain())
    assert (tree.xen_cmdline, tree.xen_cmdline_prop) == ("argo=1", "bootargs")


def test_legacy_module_names(tmp_path: Path) -> None:
    tree = _read(tmp_path, '''k { compatible = "xen,linux-zimage", "xen,multiboot-module";
        xen,uefi-binary = "k.elf"; };
        r { compatible = "xen,linux-initrd", "xen,multiboot-module";
            xen,uefi-binary = "r.img"; };''')
    assert tree.dom0 is not None and tree.dom0.ramdisk is not None


# -- Xen's options -------------------------------------------------------------------------

def test_xen_options() -> None:
    opts = parse_xen_options("dom0_mem=256M argo=1,mac-permissive=1 console=dtuart sched=null "
                             "dom0_max_vcpus=2", "W", need_dom0=True, avail_bytes=16 * GIB)
    assert opts.dom0 is not None and opts.dom0.size.bytes == 256 << 20
    assert opts.argo is not None and opts.argo.enabled and opts.argo.mac_permissive
    assert (opts.sched, opts.dom0_max_vcpus) == ("null", 2)
    assert opts.warnings == ["W: Xen option 'console=dtuart' is not one pyxen implements "
                             "(dom0_mem, dom0_max_vcpus, argo, sched): ignored"]


def test_dom0_default_size_and_warning() -> None:
    opts = parse_xen_options("", "W", need_dom0=True, avail_bytes=16 * GIB)
    assert opts.dom0 is not None and opts.dom0.size.bytes == 16 * GIB - (128 << 20)
    assert "no dom0_mem" in opts.warnings[0]
    assert parse_xen_options("", "W", need_dom0=False).dom0 is None


@pytest.mark.parametrize("cmdline, words", [
    ("dom0_mem=10%+1G", "W: dom0_mem: '10%+1G': the size comes first"),
    ("argo=maybe", "W: argo option 'maybe'"),
    ("sched=fifo", "W: sched=fifo: choose one of"),
    ("dom0_max_vcpus=0", "W: dom0_max_vcpus=0"),
])
def test_bad_xen_options(cmdline: str, words: str) -> None:
    with pytest.raises(BootError) as e:
        parse_xen_options(cmdline, "W", need_dom0=True, avail_bytes=16 * GIB)
    assert str(e.value).startswith(words) and "\n" not in str(e.value)


def test_plan_names_the_file_and_property(tmp_path: Path) -> None:
    path = _tree(tmp_path, 'xen,xen-bootargs = "dom0_mem=100%";' + DOM0 % "")
    with pytest.raises(BootError) as e:
        plan_boot(path, avail_bytes=16 * GIB)
    assert str(e.value).startswith(f"{path}: /chosen: xen,xen-bootargs: dom0_mem: '100%'")
    path = _tree(tmp_path, _domain(name="Domain-0"), "n.dts")
    with pytest.raises(BootError, match="/chosen/Domain-0: name: 'Domain-0' is domain 0's"):
        plan_boot(path)
    path = _tree(tmp_path, DOM0 % "" + _domain(name="dom0"), "d.dts")
    with pytest.raises(BootError, match="/chosen/dom0: name: 'dom0' names the tree's dom0"):
        plan_boot(path, avail_bytes=16 * GIB)


def test_cli_bad_tree_is_one_line_and_status_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from pyxen.toolstack.cli import main

    path = _tree(tmp_path, _domain().replace("cpus = <1>;", "cpus = <1 2>;"))
    assert main(["--run-dir", str(tmp_path / "run"), "--log-dir", str(tmp_path / "log"),
                 "boot", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"pyxen boot: {path}: /chosen/d1: cpus: must be one 32-bit cell, e.g. <1> "
                   "(it is 8 bytes)\n")
