"""Xen's dom0less device-tree binding: a tree of domains to start at boot.

Input is the tree from :mod:`pyxen.boot.fdt`; output is a ``BootTree``:
Xen's command line, the optional control domain (dom0) and one
``DomUNode`` per ``xen,domain`` node, in tree order.  This module reads
only the tree and checks that named files exist; it builds nothing.

The binding (Xen's docs/misc/arm/device-tree/booting.txt, 4.12 plus the
later ``xen,enhanced`` and ``xen,vcpu`` children), as pyxen reads it:

- Only ``/chosen`` matters: the rest of a tree describes Arm hardware,
  which pyxen does not need (it runs on the host it is on); it is ignored.
- ``/chosen`` properties: ``xen,xen-bootargs``, ``xen,dom0-bootargs``,
  ``bootargs`` (assigned to Xen or dom0 by Xen's rules, ``_cmdlines``),
  ``#address-cells``/``#size-cells``; common firmware properties
  (``stdout-path``, ``linux,initrd-*``, ``kaslr-seed``, ``rng-seed``...)
  are ignored with a warning; anything else is an error.
- ``/chosen`` children: ``xen,domain`` nodes (domUs) and boot modules
  (``multiboot,module`` and its specific forms, or Xen 4.4's legacy names)
  which are dom0's kernel and ramdisk.
- A domU: ``compatible`` containing ``"xen,domain"``; ``memory`` (64-bit,
  KiB, ``<hi lo>``; required); ``cpus`` (required, 1-128);
  ``#address-cells``/``#size-cells`` (for children's ``reg``);
  ``xen,enhanced`` (absent or "disabled": no PV interfaces; value-less,
  "enabled" or "legacy": xenstore and PV console; "no-xenstore": PV console,
  no xenstore); ``vpl011`` (Arm's emulated PL011 UART: accepted and ignored
  with a warning, so Arm trees boot unchanged: on x86 the guest has
  console_io, port 0xE9 and, with xen,enhanced, the PV console);
  ``phandle``/``linux,phandle``.  Children: module nodes and ``xen,vcpu``
  nodes (``id``, ``hard-affinity = "0-3"``).  Xen's later properties
  (``direct-map``, ``xen,static-mem``, ``capabilities``, ...) and children
  (passthrough device trees, static event channels, static shared memory)
  are errors saying pyxen does not support them.
- A module node names a file: there is no boot loader placing modules in
  memory, so ``xen,uefi-binary = "FILE"`` (the property Xen's UEFI boot
  uses instead of ``reg``) is required, relative to the tree's directory;
  a ``reg`` alone is an error saying to add it (with both, the file wins
  and ``reg`` is only checked for shape).  ``bootargs`` is the kernel's
  command line.  Kind: "multiboot,kernel" / "multiboot,ramdisk" (or Xen
  4.4's ``xen,linux-zimage``/``xen,linux-initrd``); unlabelled modules are
  the kernel, then the ramdisk, as in Xen (pyxen does not probe for an XSM
  policy; ``xen,xsm-policy`` is an error).

Invariants: every ``BindingError`` message is one line naming the node's
path and the property (or child) at fault and what to write instead;
warnings are one line each; names are the node names (unit address
included; the caller checks them by xl's name rules); paths in the result are
absolute and exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyxen.boot.fdt import Node, PropertyError
from pyxen.cpulist import parse_cpu_list

MAX_VCPUS = 128
MAX_MEMORY_KIB = 1 << 40  # 1 PiB: beyond anything the memory checks would allow
ENHANCED = {"": "enabled", "enabled": "enabled", "legacy": "enabled",
            "no-xenstore": "no-xenstore", "disabled": "disabled"}
# Properties of a domain node from later Xen releases that pyxen does not implement.
LATER_DOMAIN_PROPS = {
    "direct-map": "guest physical = host physical needs static memory",
    "xen,static-mem": "static memory banks",
    "domain-cpupool": "cpupool assignment from the tree (use pyxen cpupool-migrate)",
    "capabilities": "control/hardware/xenstore capabilities",
    "nr_spis": "an Arm interrupt controller setting",
    "llc-colors": "cache colouring",
    "sve": "an Arm vector extension setting",
    "trap-unmapped-accesses": "an Arm setting",
    "xen,domain-p2m-mem-mb": "an Arm p2m pool size",
    "max_grant_version": "grant table limits from the tree",
    "max_grant_frames": "grant table limits from the tree",
    "max_maptrack_frames": "grant table limits from the tree",
    "passthrough": "device passthrough",
    "xen,sci_type": "an Arm firmware interface",
    "v8r_el1_msa": "an Arm MPU setting",
    "multiboot,device-tree": "device passthrough",
}
LATER_CHILDREN = {
    "multiboot,device-tree": "partial device trees for passthrough",
    "xen,evtchn-v1": "static event channels",
    "xen,domain-shared-memory-v1": "static shared memory",
}
# /chosen properties a firmware or boot loader writes that mean nothing to pyxen.
FIRMWARE_CHOSEN = ("stdout-path", "linux,stdout-path", "linux,initrd-start",
                   "linux,initrd-end", "kaslr-seed", "rng-seed", "linux,uefi-system-table",
                   "linux,uefi-mmap-start", "linux,uefi-mmap-size",
                   "linux,uefi-mmap-desc-size", "linux,uefi-mmap-desc-ver")
IGNORED_ANYWHERE = ("phandle", "linux,phandle", "name")
MODULE_KINDS = {"multiboot,kernel": "kernel", "multiboot,ramdisk": "ramdisk",
                "xen,linux-zimage": "kernel", "xen,linux-initrd": "ramdisk"}
MODULE_GENERIC = ("multiboot,module", "xen,multiboot-module")


class BindingError(ValueError):
    """One line: the node, the property, what is wrong and what to write."""

    def __init__(self, path: str, prop: str, problem: str) -> None:
        super().__init__(f"{path}: {prop}: {problem}")


@dataclass(frozen=True)
class ModuleFile:
    node: str
    kind: str  # "kernel" or "ramdisk"
    path: Path
    bootargs: str | None


@dataclass(frozen=True)
class DomUNode:
    """One ``xen,domain`` node."""

    node: str  # its path, for messages
    name: str
    memory_kib: int
    cpus: int
    kernel: Path
    ramdisk: Path | None
    cmdline: str
    enhanced: str  # "enabled", "no-xenstore" or "disabled"
    vcpu_hard: tuple[tuple[int, frozenset[int]], ...] = ()  # (vcpu, CPUs) from xen,vcpu

    @property
    def memory_mib(self) -> int:
        return -(-self.memory_kib // 1024)


@dataclass(frozen=True)
class Dom0Node:
    kernel: Path
    ramdisk: Path | None
    cmdline: str


@dataclass(frozen=True)
class BootTree:
    xen_cmdline: str
    xen_cmdline_prop: str  # the /chosen property it came from, for messages
    dom0: Dom0Node | None
    domus: tuple[DomUNode, ...]
    warnings: tuple[str, ...]


def read_binding(root: Node, base_dir: Path) -> BootTree:
    """The system ``root`` describes; module files are relative to ``base_dir``."""
    return _Binding(base_dir).read(root)


class _Binding:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.warnings: list[str] = []

    def warn(self, node: Node, prop: str, text: str) -> None:
        self.warnings.append(f"{node.path}: {prop}: {text}")

    def read(self, root: Node) -> BootTree:
        chosen = root.child("chosen")
        if chosen is None:
            raise BindingError("/", "chosen", "no /chosen node: put the xen,domain nodes "
                                              "in /chosen { ... }")
        try:
            return self._chosen(chosen)
        except PropertyError as e:
            raise BindingError(e.node_path, e.prop, e.problem) from None

    def _chosen(self, chosen: Node) -> BootTree:
        known = ("xen,xen-bootargs", "xen,dom0-bootargs", "bootargs", "#address-cells",
                 "#size-cells", *IGNORED_ANYWHERE)
        for prop in chosen.props:
            if prop in FIRMWARE_CHOSEN:
                self.warn(chosen, prop, "a firmware property: ignored")
            elif prop not in known:
                raise BindingError(chosen.path, prop, "not a property of Xen's /chosen "
                                   "binding (xen,xen-bootargs, xen,dom0-bootargs, bootargs)")
        cells = _cells(chosen)
        domus: list[DomUNode] = []
        modules: list[Node] = []
        for child in chosen.children:
            if not child.has("compatible"):
                raise BindingError(child.path, "compatible", 'missing: write compatible = '
                                   '"xen,domain" for a domain, or "multiboot,kernel", '
                                   '"multiboot,module" for dom0\'s kernel')
            compatible = child.strings("compatible")
            if "xen,xsm-policy" in compatible:
                raise BindingError(child.path, "compatible", "xen,xsm-policy modules are not "
                                   "supported: pass a FLASK policy with pyxen loadpolicy")
            if "xen,domain" in compatible:
                domus.append(self._domu(child))
            elif _is_module(compatible):
                modules.append(child)
            else:
                raise BindingError(child.path, "compatible", f"{', '.join(compatible)!r} is "
                                   'not a Xen boot node: expected "xen,domain" or '
                                   '"multiboot,module"')
        dom0 = None
        files = self._modules(chosen, modules, cells)
        kernel = files.get("kernel")
        (xen, xen_prop), dom0_cmd = _cmdlines(chosen, kernel)
        if kernel is not None:
            ramdisk = files.get("ramdisk")
            dom0 = Dom0Node(kernel.path, ramdisk.path if ramdisk else None, dom0_cmd or "")
        elif "ramdisk" in files:
            raise BindingError(files["ramdisk"].node, "compatible", "a dom0 ramdisk without a "
                               'dom0 kernel: add a "multiboot,kernel" module node')
        if dom0 is None and not domus:
            raise BindingError(chosen.path, "compatible", 'no domain to boot: add a node '
                               'with compatible = "xen,domain" (or a dom0 kernel module)')
        names = [d.name for d in domus]
        for d in domus:
            if names.count(d.name) > 1:
                raise BindingError(d.node, "name", f"two domains are named {d.name!r}: "
                                   "rename one of the nodes")
        return BootTree(xen or "", xen_prop, dom0, tuple(domus), tuple(self.warnings))

    def _domu(self, node: Node) -> DomUNode:
        enhanced = "disabled"
        memory_kib = cpus = None
        for prop in node.props:
            if prop in ("compatible", "#address-cells", "#size-cells", *IGNORED_ANYWHERE):
                continue
            if prop == "memory":
                value = node.raw(prop) or b""
                if len(value) != 8:
                    raise BindingError(node.path, prop, "must be a 64-bit size in KiB, two "
                                       "cells: memory = <0x0 131072> for 128 MiB")
                memory_kib = int.from_bytes(value, "big")
                if not 1024 <= memory_kib <= MAX_MEMORY_KIB:
                    raise BindingError(node.path, prop, f"{memory_kib} KiB: give at least "
                                       "1024 (1 MiB)")
                if memory_kib % 1024:
                    self.warn(node, prop, f"{memory_kib} KiB rounded up to "
                              f"{-(-memory_kib // 1024)} MiB (pyxen sizes domains in MiB)")
            elif prop == "cpus":
                cpus = node.u32(prop)
                if not 1 <= cpus <= MAX_VCPUS:
                    raise BindingError(node.path, prop, f"{cpus} vCPUs: give 1 to {MAX_VCPUS}")
            elif prop == "xen,enhanced":
                value = node.raw(prop) or b""
                text = "" if value == b"" else node.string(prop)
                if text not in ENHANCED:
                    raise BindingError(node.path, prop, f"{text!r}: write \"enabled\", "
                                       '"no-xenstore", "legacy" or "disabled"')
                enhanced = ENHANCED[text]
            elif prop == "vpl011":
                self.warn(node, prop, "Arm's emulated PL011 UART: ignored on x86 (the guest "
                          "has console_io, port 0xE9 and, with xen,enhanced, the PV console)")
            elif prop in LATER_DOMAIN_PROPS:
                raise BindingError(node.path, prop, f"not supported by pyxen "
                                   f"({LATER_DOMAIN_PROPS[prop]}): remove it")
            else:
                raise BindingError(node.path, prop, "not a property of Xen's xen,domain "
                                   "binding (memory, cpus, xen,enhanced, vpl011)")
        if memory_kib is None:
            raise BindingError(node.path, "memory", "missing: give the domain's RAM in KiB, "
                               "e.g. memory = <0x0 131072>")
        if cpus is None:
            raise BindingError(node.path, "cpus", "missing: give the vCPU count, e.g. "
                               "cpus = <1>")
        cells = _cells(node)
        modules, vcpu_hard = [], []
        for child in node.children:
            if not child.has("compatible"):
                raise BindingError(child.path, "compatible", "missing: a domain's children "
                                   'are "multiboot,kernel"/"multiboot,ramdisk" modules and '
                                   '"xen,vcpu" nodes')
            compatible = child.strings("compatible")
            if _is_module(compatible):
                modules.append(child)
            elif "xen,vcpu" in compatible:
                vcpu_hard.append(self._vcpu(child, cpus))
            else:
                later = next((LATER_CHILDREN[c] for c in compatible if c in LATER_CHILDREN),
                             None)
                why = (f"not supported by pyxen ({later})" if later else
                       f"{', '.join(compatible)!r} is not a child Xen's binding knows")
                raise BindingError(child.path, "compatible", f"{why}: remove the node")
        ids = [v for v, _ in vcpu_hard]
        for v in ids:
            if ids.count(v) > 1:
                raise BindingError(node.path, "xen,vcpu", f"two nodes for vCPU {v}")
        files = self._modules(node, modules, cells)
        kernel = files.get("kernel")
        if kernel is None:
            raise BindingError(node.path, "kernel", 'no kernel: add a child with compatible = '
                               '"multiboot,kernel", "multiboot,module" and xen,uefi-binary '
                               '= "FILE"')
        ramdisk = files.get("ramdisk")
        return DomUNode(node.path, node.name, memory_kib, cpus, kernel.path,
                        ramdisk.path if ramdisk else None, kernel.bootargs or "", enhanced,
                        tuple(sorted(vcpu_hard)))

    def _vcpu(self, node: Node, cpus: int) -> tuple[int, frozenset[int]]:
        vcpu = hard = None
        for prop in node.props:
            if prop in ("compatible", *IGNORED_ANYWHERE):
                continue
            if prop == "id":
                vcpu = node.u32(prop)
                if vcpu >= cpus:
                    raise BindingError(node.path, prop, f"vCPU {vcpu} does not exist: the "
                                       f"domain has cpus = <{cpus}> (ids 0 to {cpus - 1})")
            elif prop == "hard-affinity":
                try:
                    hard = frozenset(parse_cpu_list(node.string(prop)))
                except ValueError as e:
                    raise BindingError(node.path, prop, f"{e} (write e.g. \"0-3\")") from None
            else:
                raise BindingError(node.path, prop, "not a property of a xen,vcpu node "
                                   "(id, hard-affinity)")
        if vcpu is None:
            raise BindingError(node.path, "id", "missing: which vCPU, e.g. id = <0>")
        if hard is None:
            raise BindingError(node.path, "hard-affinity", 'missing: the host CPUs, e.g. '
                               'hard-affinity = "0-1"')
        return vcpu, hard

    def _modules(self, parent: Node, nodes: list[Node], cells: tuple[int, int]
                 ) -> dict[str, ModuleFile]:
        """kernel and ramdisk among ``nodes`` (Xen's rule for unlabelled ones)."""
        found: dict[str, ModuleFile] = {}
        for node in nodes:
            compatible = node.strings("compatible")
            kinds = [MODULE_KINDS[c] for c in compatible if c in MODULE_KINDS]
            if len(set(kinds)) > 1:
                raise BindingError(node.path, "compatible", "both a kernel and a ramdisk: "
                                   "give one")
            if kinds:
                kind = kinds[0]
            elif "kernel" not in found:
                kind = "kernel"
            elif "ramdisk" not in found:
                kind = "ramdisk"
            else:
                self.warn(node, "compatible", "a third unlabelled module: ignored (as Xen)")
                continue
            if kind in found:
                raise BindingError(node.path, "compatible", f"a second {kind} module in "
                                   f"{parent.path} (the first is {found[kind].node})")
            found[kind] = self._module(node, kind, cells)
        return found

    def _module(self, node: Node, kind: str, cells: tuple[int, int]) -> ModuleFile:
        bootargs = None
        for prop in node.props:
            if prop in ("compatible", "xen,uefi-binary", *IGNORED_ANYWHERE):
                continue
            if prop == "reg":
                per = (cells[0] + cells[1]) * 4
                size = len(node.raw(prop) or b"")
                if per == 0 or size == 0 or size % per:
                    raise BindingError(node.path, prop, f"{size} bytes is not a list of "
                                       f"<address size> pairs of {cells[0]}+{cells[1]} cells "
                                       "(#address-cells/#size-cells of the parent)")
            elif prop == "bootargs":
                bootargs = node.string(prop)
            else:
                raise BindingError(node.path, prop, "not a property of a boot module (reg, "
                                   "bootargs, xen,uefi-binary)")
        if not node.has("xen,uefi-binary"):
            if node.has("reg"):
                raise BindingError(node.path, "reg", "pyxen has no boot loader to place "
                                   "modules in memory: name the file with xen,uefi-binary = "
                                   '"FILE" (relative to the tree\'s directory)')
            raise BindingError(node.path, "xen,uefi-binary", f'missing: name the {kind} '
                               'file, e.g. xen,uefi-binary = "hello.elf"')
        name = node.string("xen,uefi-binary")
        if not name:
            raise BindingError(node.path, "xen,uefi-binary", "empty: name a file")
        path = (self.base_dir / name).absolute()
        if not path.is_file():
            raise BindingError(node.path, "xen,uefi-binary", f"{name!r}: no such file "
                               f"({path})")
        return ModuleFile(node.path, kind, path, bootargs)


def _is_module(compatible: list[str]) -> bool:
    return any(c in MODULE_KINDS or c in MODULE_GENERIC for c in compatible)


def _cells(node: Node) -> tuple[int, int]:
    """#address-cells/#size-cells of ``node`` (the device tree defaults 2 and 1)."""
    address = node.u32("#address-cells") if node.has("#address-cells") else 2
    size = node.u32("#size-cells") if node.has("#size-cells") else 1
    if address > 4 or size > 4:
        raise BindingError(node.path, "#address-cells", f"<{address}>/<{size}>: at most 4 "
                           "cells each")
    return address, size


def _cmdlines(chosen: Node, kernel: ModuleFile | None
              ) -> tuple[tuple[str | None, str], str | None]:
    """((Xen's command line, its property), dom0's) by Xen's rules for /chosen.

    xen,xen-bootargs is Xen's and xen,dom0-bootargs dom0's.  Plain bootargs
    is Xen's when dom0's line comes from elsewhere (the kernel module's own
    bootargs, or xen,dom0-bootargs) and Xen has no xen,xen-bootargs;
    otherwise it is dom0's.  With no dom0 kernel it is Xen's (pyxen's rule:
    there is no dom0 to give it to).
    """
    def text(prop: str) -> str | None:
        return chosen.string(prop) if chosen.has(prop) else None

    xen, dom0, plain = text("xen,xen-bootargs"), text("xen,dom0-bootargs"), text("bootargs")
    xen_or_plain = (xen, "xen,xen-bootargs") if xen is not None else (plain, "bootargs")
    if kernel is None:
        return xen_or_plain, None
    if kernel.bootargs is not None:
        return xen_or_plain, kernel.bootargs
    if dom0 is not None:
        return xen_or_plain, dom0
    return (xen, "xen,xen-bootargs"), plain
