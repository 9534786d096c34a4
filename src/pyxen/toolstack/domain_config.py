"""xl.cfg meaning: turn parsed settings into a validated :class:`DomainConfig`.

The syntax is :mod:`pyxen.toolstack.xlcfg`; this module applies xl's rules
(``tools/xl/xl_parse.c`` ``parse_config_data`` plus libxl's defaults) for the
keys pyxen implements.  Every problem raises :class:`XlCfgError` naming the
file, the line and the key.

Keys and rules:

``name``
    Required; xl's name rules (:mod:`pyxen.control.names`): non-empty, at
    most 64 printable characters, no ``/``, not ``Domain-0``.
``type``
    ``"pv"``, ``"pvh"`` or ``"hvm"``.  Like xl, any prefix is accepted and
    ``hvm`` is tried first, then ``pv``, then ``pvh`` (so ``"p"`` means pv).
    Deprecated ``builder="hvm"`` / ``builder="generic"`` (prefixes too) mean
    hvm / pv and must not contradict ``type``.  Legacy ``pvh=1`` means pvh
    when neither is given.  **Default is "pv", as xl on x86**; pyxen parses
    pv and hvm but its domain builder refuses them, so configs say
    ``type = "pvh"``.
``kernel``, ``ramdisk``
    Paths.  ``kernel`` is required (pyxen only does direct kernel boot).
    xl opens relative paths from the current directory; pyxen looks next to
    the configuration file first and then in the current directory, and
    fails at the setting's line if the file is in neither.
``cmdline``, ``root``, ``extra``
    Exactly xl's rule: ``cmdline`` if set (``root``/``extra`` are then
    ignored, with a warning); else ``"root=ROOT EXTRA"``, ``"root=ROOT"`` or
    ``"EXTRA"``; else empty.
``memory``, ``maxmem``
    MiB.  With neither, 32 (libxl's default).  ``maxmem`` defaults to
    ``memory`` and ``memory`` to ``maxmem``; ``maxmem`` must be >= ``memory``.
``vcpus``, ``maxvcpus``
    ``vcpus`` defaults to 1, ``maxvcpus`` to ``vcpus``;
    1 <= vcpus <= maxvcpus <= 128 (HVM_MAX_VCPUS).
``on_poweroff``, ``on_reboot``, ``on_crash``, ``on_watchdog``
    One of :data:`SHUTDOWN_ACTIONS`; defaults destroy, restart, destroy,
    destroy.
``max_event_channels``
    The highest event-channel port the guest may use (libxl's
    max_evtchn_port); default 1023.
``altp2m``
    The altp2m mode (HVM_PARAM_ALTP2M): ``disabled`` (the default),
    ``mixed``, ``external`` or ``limited``, or its number 0-3; the
    deprecated boolean ``altp2mhvm = 1`` means mixed
    (docs/features/altp2m.md).
``seclabel``
    The domain's security label, ``user:role:type``; its type is what the
    XSM policy (``pyxen hypervisor --flask-policy``) matches.  Default
    ``system_u:system_r:domU_t``.

Numbers may be written unquoted or quoted (xl reads both with ``strtol``, so
``memory = "0x40"`` is 64); strings may be written as numbers
(``name = 42`` is ``"42"``).  Where xl only warns and ignores a list given
for a single value, pyxen refuses it.

``disk``
    A list of xl disk specifications (``['format=raw, vdev=xvda,
    access=rw, target=disk.img']``, xl-disk-configuration(5)); each is
    served by blkback (toolstack/pv_specs.py says what it accepts).  A
    relative target is taken from the current directory, as xl does.

``vif``
    A list of xl vif specifications (``['bridge=pyxenbr0,
    mac=00:16:3e:01:02:03']``, xl-network-configuration(5)); entry N is
    device N unless it says ``devid=``; a missing MAC is a random one.
    Served by netback (toolstack/pv_specs.py says what it accepts).

Other keys are not errors: xl.cfg keys pyxen does not implement yet
(``vfb``, ``vkb``, ...) are listed in :attr:`DomainConfig.ignored_keys`,
keys xl does not know either in :attr:`DomainConfig.unknown_keys`, so the
CLI can warn about each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyxen.control.names import name_problem
from pyxen.control.shutdown_actions import action_setting
from pyxen.cpulist import parse_cpu_list
from pyxen.hv.argo.policy import DEFAULT_DOMU_LABEL, SECLABEL_RE
from pyxen.toolstack.hvm_config import HVM_KEYS, HvmConfigError, hvm_request
from pyxen.toolstack.xlcfg import XlCfgError, XlConfig, XlNumber, c_long

__all__ = [
    "HVM_MAX_VCPUS",
    "IMPLEMENTED_KEYS",
    "SHUTDOWN_ACTIONS",
    "XL_KNOWN_KEYS",
    "DomainConfig",
]

# xen/include/public/hvm/hvm_info_table.h: the most vCPUs an HVM/PVH guest can have.
HVM_MAX_VCPUS = 128

# libxl's default event_channels (max_evtchn_port).
DEFAULT_MAX_EVENT_CHANNELS = 1023

# libxl__domain_build_info_setdefault(): max_memkb defaults to 32 * 1024.
DEFAULT_MEMORY_MIB = 32

# Guest-physical addresses are 64-bit: 2**64 bytes is 2**44 MiB.
_MAX_MEMORY_MIB = 2**44 - 1

# xl_parse.c action_on_shutdown_names[].
SHUTDOWN_ACTIONS = (
    "destroy",
    "restart",
    "rename-restart",
    "preserve",
    "coredump-destroy",
    "coredump-restart",
    "soft-reset",
)

# libxl_altp2m_mode, in HVM_PARAM_ALTP2M order.
ALTP2M_MODES = ("disabled", "mixed", "external", "limited")

# Keys this module gives a meaning to.
IMPLEMENTED_KEYS = frozenset(
    {
        "name", "type", "builder", "pvh",
        "kernel", "ramdisk", "cmdline", "root", "extra",
        "memory", "maxmem", "vcpus", "maxvcpus",
        "on_poweroff", "on_reboot", "on_crash", "on_watchdog", "max_event_channels",
        "cpus", "cpus_soft", "cpu_weight", "cap", "pool", "seclabel", "disk", "vif",
        "altp2m", "altp2mhvm",
    }
)  # fmt: skip

# Keys documented in xl.cfg(5) (Xen 4.12 to 4.19) that pyxen ignores for now.
_UNIMPLEMENTED_XL_KEYS = frozenset(
    """
    period slice latency extratime vnuma
    on_soft_reset firmware pvshim pvshim_path pvshim_cmdline pvshim_extra
    uuid init_seclabel max_grant_frames max_maptrack_frames max_grant_version
    nomigrate driver_domain device_tree passthrough xend_suspend_evtchn_compat
    vmtrace_buf_kb vpmu vtpm p9 pvcalls vfb vkb vdispl vsnd channel usbctrl
    usbdev pci pci_permissive pci_msitranslate pci_seize pci_power_mgmt rdm
    rdm_mem_boundary dtdev ioports iomem irqs dm_restrict
    device_model_user bootloader bootloader_args e820_host hap oos shadow_memory bios
    pae acpi acpi_s3 acpi_s4 acpi_laptop_slate acpi_firmware smbios_firmware apic nx
    hpet nestedhvm cpuid ms_vm_genid tsc_mode localtime
    rtc_timeoffset vpt_align timer_mode mmio_hole xen_platform_pci viridian
    gfx_passthru videoram stdvga vga vnc vnclisten vncdisplay vncunused vncpasswd
    keymap sdl opengl display xauthority spice spicehost spiceport spicetls_port
    spicedisable_ticketing spicepasswd spiceagent_mouse spicevdagent
    spice_clipboard_sharing spiceusbredirection spice_image_compression
    spice_streaming_video nographic serial boot soundhw usb usbdevice usbversion
    vkb_device vendor_device hdtype device_model device_model_version
    device_model_override device_model_stubdomain_override
    device_model_stubdomain_seclabel device_model_args device_model_args_pv
    device_model_args_hvm stubdomain_kernel stubdomain_ramdisk stubdomain_memory
    stubdomain_cmdline vuart gic_version mca_caps tee msr_relaxed
    trap_unmapped_accesses nr_spis llc_colors virtio
    """.split()
)

XL_KNOWN_KEYS = IMPLEMENTED_KEYS | _UNIMPLEMENTED_XL_KEYS


@dataclass(frozen=True)
class DomainConfig:
    """What pyxen needs to build one domain, as an xl.cfg file describes it."""

    name: str
    type: str  # "pvh", "pv" or "hvm"; "pv" cannot be built
    kernel: Path | None  # None for HVM (firmware boot)
    ramdisk: Path | None
    cmdline: str
    memory_mib: int
    maxmem_mib: int
    vcpus: int
    maxvcpus: int
    on_poweroff: str
    on_reboot: str
    on_crash: str
    source: Path
    on_watchdog: str = "destroy"
    max_event_channels: int = DEFAULT_MAX_EVENT_CHANNELS
    cpus: tuple[int, ...] | None = None  # hard affinity of every vCPU (None: all)
    cpus_soft: tuple[int, ...] | None = None
    cpu_weight: int | None = None  # scheduler weight (credit, credit2)
    cap: int | None = None  # percent of one pCPU (credit, credit2); 0 = none
    pool: str | None = None  # the cpupool (None: Pool-0)
    seclabel: str = DEFAULT_DOMU_LABEL
    altp2m: int = 0  # HVM_PARAM_ALTP2M: ALTP2M_MODES.index(mode)
    disks: tuple[dict[str, Any], ...] = ()  # disk=: control-request disk objects
    nics: tuple[dict[str, Any], ...] = ()  # vif=: control-request interface objects
    unknown_keys: tuple[str, ...] = ()  # not xl.cfg keys at all (typos?)
    ignored_keys: tuple[str, ...] = ()  # xl.cfg keys pyxen does not implement yet
    warnings: tuple[str, ...] = ()  # one-line notes xl would print, for the CLI
    hvm: dict[str, Any] | None = None  # type "hvm": the request's hvm object (hvm_config)

    def action_for(self, reason: int) -> str:
        """The on_* action for a shutdown reason (SHUTDOWN_poweroff 0, reboot 1,
        crash 3, watchdog 4; any other: destroy)."""
        setting = action_setting(reason)
        return str(getattr(self, setting)) if setting else "destroy"

    @classmethod
    def from_xl(cls, cfg: XlConfig, path: Path, cwd: Path | None = None) -> DomainConfig:
        """Validate ``cfg`` (parsed from the file at ``path``) into a DomainConfig.

        Relative ``kernel``/``ramdisk`` paths are looked up next to ``path``
        first, then in ``cwd`` (default: the current directory), as are
        relative disk images.  Raises XlCfgError.
        """
        return _Builder(cfg, path, cwd or Path.cwd()).build()


class _Builder:
    def __init__(self, cfg: XlConfig, path: Path, cwd: Path) -> None:
        self.cfg = cfg
        self.path = path
        self.cwd = cwd
        self.warnings: list[str] = []

    def fail(self, key: str | None, problem: str) -> XlCfgError:
        where = self.cfg.where(key) if key is not None else self.cfg.source
        return XlCfgError(where, problem)

    def string(self, key: str) -> str | None:
        if key not in self.cfg:
            return None
        value = self.cfg[key]
        if isinstance(value, XlNumber):
            return value.text
        if isinstance(value, str):
            return value
        raise self.fail(key, f"{key} must be a single value, got a list")

    def number(self, key: str, what: str) -> int | None:
        if key not in self.cfg:
            return None
        value = self.cfg[key]
        if isinstance(value, int):
            return int(value)
        if isinstance(value, str):
            number = c_long(value)
            if number is not None:
                return number
            raise self.fail(key, f'{key} must be {what}, got "{_quote(value)}"')
        raise self.fail(key, f"{key} must be {what}, got a list")

    def in_range(self, key: str, value: int, low: int, high: int, unit: str = "") -> int:
        if not low <= value <= high:
            raise self.fail(key, f"{key} must be between {low} and {high}{unit}, got {value}")
        return value

    def build(self) -> DomainConfig:
        name = self.string("name")
        if name is None:
            raise self.fail(None, 'name is required: add name = "NAME"')
        problem = name_problem(name)
        if problem is not None:
            raise self.fail("name", problem)
        domain_type = self.domain_type()
        kernel = None if domain_type == "hvm" and "kernel" not in self.cfg else self.kernel()
        ramdisk_text = self.string("ramdisk")
        ramdisk = None if ramdisk_text is None else self.file("ramdisk", ramdisk_text)
        if ramdisk is not None and kernel is None:
            raise self.fail("ramdisk", "ramdisk= needs kernel=: an HVM guest booting from "
                                       "its firmware has no ramdisk")
        memory, maxmem = self.memory()
        vcpus, maxvcpus = self.vcpus()
        implemented = IMPLEMENTED_KEYS | (HVM_KEYS if domain_type == "hvm" else frozenset())
        keys = [key for key in self.cfg if key not in implemented]
        disks = self.disks()
        hvm = None
        if domain_type == "hvm":
            try:
                hvm = hvm_request({k: self.string(k) for k in HVM_KEYS}, disks,
                                  kernel is not None)
            except HvmConfigError as e:
                raise self.fail(e.key if e.key in self.cfg else None, str(e)) from None
            # Each disk is also a PV disk, as libxl offers it: a guest with PV drivers
            # unplugs the emulated one (Xen platform device) and uses blkfront.
        return DomainConfig(
            name=name,
            type=domain_type,
            kernel=kernel,
            ramdisk=ramdisk,
            cmdline=self.cmdline(),
            memory_mib=memory,
            maxmem_mib=maxmem,
            vcpus=vcpus,
            maxvcpus=maxvcpus,
            on_poweroff=self.action("on_poweroff", "destroy"),
            on_reboot=self.action("on_reboot", "restart"),
            on_crash=self.action("on_crash", "destroy"),
            on_watchdog=self.action("on_watchdog", "destroy"),
            max_event_channels=self.max_event_channels(),
            cpus=self.cpu_set("cpus"),
            cpus_soft=self.cpu_set("cpus_soft"),
            cpu_weight=self.optional_range("cpu_weight", "a weight", 1, 65535),
            cap=self.optional_range("cap", "a percentage of one CPU", 0, 65535),
            pool=self.string("pool"),
            seclabel=self.seclabel(),
            altp2m=self.altp2m(),
            disks=disks,
            nics=self.nics(),
            hvm=hvm,
            source=self.path,
            unknown_keys=tuple(k for k in keys if k not in XL_KNOWN_KEYS),
            ignored_keys=tuple(k for k in keys if k in XL_KNOWN_KEYS),
            warnings=tuple(self.warnings),
        )

    def disks(self) -> tuple[dict[str, Any], ...]:
        if "disk" not in self.cfg:
            return ()
        # The disk and vif grammars load only for a config that uses them
        # (start-up: most small guests have neither).
        from pyxen.toolstack.disk_spec import DiskSpecError, parse_disk_spec
        from pyxen.toolstack.pv_specs import served_disk

        value = self.cfg["disk"]
        if not isinstance(value, list):
            raise self.fail("disk", "disk must be a list: disk = ['DISKSPEC', ...]")
        out: list[dict[str, Any]] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail("disk", f"disk entry {i + 1} must be a string (a disk spec)")
            try:
                disk = served_disk(parse_disk_spec(item), str(self.cwd))
            except DiskSpecError as e:
                raise self.fail("disk", f"disk entry {i + 1}: {e}") from None
            if any(d["devid"] == disk["devid"] for d in out):
                raise self.fail("disk", f"disk entry {i + 1}: vdev {disk['vdev']} is used "
                                        "twice")
            out.append(disk)
        return tuple(out)

    def nics(self) -> tuple[dict[str, Any], ...]:
        if "vif" not in self.cfg:
            return ()
        from pyxen.toolstack.pv_specs import served_nic
        from pyxen.toolstack.vif_spec import VifSpecError, parse_vif_spec

        value = self.cfg["vif"]
        if not isinstance(value, list):
            raise self.fail("vif", "vif must be a list: vif = ['VIFSPEC', ...]")
        out: list[dict[str, Any]] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail("vif", f"vif entry {i + 1} must be a string (a vif spec)")
            try:
                spec = parse_vif_spec(item)
                nic = served_nic(spec, spec.devid if spec.devid is not None else i)
            except VifSpecError as e:
                raise self.fail("vif", f"vif entry {i + 1}: {e}") from None
            for other in out:
                if other["devid"] == nic["devid"] or other["mac"] == nic["mac"]:
                    raise self.fail("vif", f"vif entry {i + 1}: devid {nic['devid']} or mac "
                                           f"{nic['mac']} is used twice")
            out.append(nic)
        return tuple(out)

    def altp2m(self) -> int:
        """xl_parse.c: a number 0-3 or a mode name; else altp2mhvm (bool: mixed)."""
        value = self.cfg.get("altp2m")
        if isinstance(value, str) and value in ALTP2M_MODES:
            return ALTP2M_MODES.index(value)
        if value is not None:
            number = self.number("altp2m", "an altp2m mode (" + ", ".join(ALTP2M_MODES) + ")")
            assert number is not None
            return self.in_range("altp2m", number, 0, len(ALTP2M_MODES) - 1)
        on = self.number("altp2mhvm", "0 or 1")
        return 1 if on else 0

    def seclabel(self) -> str:
        label = self.string("seclabel")
        if label is None:
            return DEFAULT_DOMU_LABEL
        if not SECLABEL_RE.fullmatch(label):
            raise self.fail("seclabel", f"'{label}' is not a security label: use "
                                        "user:role:type, e.g. system_u:system_r:domU_t")
        return label

    def domain_type(self) -> str:
        # xl_parse.c matches a prefix: strncmp(buf, "hvm", strlen(buf)).
        chosen: str | None = None
        text = self.string("type")
        if text is not None:
            chosen = _prefix_of(text, ("hvm", "pv", "pvh"))
            if chosen is None:
                raise self.fail("type", f'type must be "pvh", "pv" or "hvm", got "{_quote(text)}"')
        builder = self.string("builder")
        if builder is not None:
            legacy = {"hvm": "hvm", "generic": "pv"}.get(
                _prefix_of(builder, ("hvm", "generic")) or ""
            )
            if legacy is None:
                raise self.fail(
                    "builder",
                    f'builder must be "hvm" or "generic", got "{_quote(builder)}"'
                    ' (builder is deprecated: use type = "pvh")',
                )
            if chosen is not None and chosen != legacy:
                raise self.fail(
                    "builder",
                    f'builder="{_quote(builder)}" contradicts type="{_quote(text or "")}";'
                    " remove builder",
                )
            chosen = legacy
        if chosen is None and self.number("pvh", "0 or 1"):
            chosen = "pvh"
        return chosen or "pv"

    def kernel(self) -> Path:
        text = self.string("kernel")
        if text is None:
            raise self.fail(
                None,
                "kernel is required: pyxen boots guests only by direct kernel boot;"
                ' add kernel = "/path/to/vmlinuz"',
            )
        return self.file("kernel", text)

    def file(self, key: str, text: str) -> Path:
        if not text:
            raise self.fail(key, f"{key} must not be empty")
        given = Path(text)
        if given.is_absolute():
            candidates = [given]
        else:
            here = Path(os.path.abspath(self.cwd / self.path)).parent
            candidates = [here / given, self.cwd / given]
        for candidate in candidates:
            if _is_file(candidate):
                return candidate
        looked = " or ".join(str(c) for c in dict.fromkeys(candidates))
        raise self.fail(key, f"{key} file not found: {_quote(text)} (looked for {_quote(looked)})")

    def cmdline(self) -> str:
        cmdline, root, extra = (self.string(k) for k in ("cmdline", "root", "extra"))
        if cmdline is not None:
            if root is not None or extra is not None:
                self.warnings.append(
                    f"{self.cfg.where('cmdline')}: ignoring root= and extra= in favour of cmdline="
                )
            return cmdline
        if root is not None and extra is not None:
            return f"root={root} {extra}"
        if root is not None:
            return f"root={root}"
        return extra or ""

    def memory(self) -> tuple[int, int]:
        what = "a number of MiB"
        memory = self.number("memory", what)
        maxmem = self.number("maxmem", what)
        if memory is not None:
            self.in_range("memory", memory, 1, _MAX_MEMORY_MIB, " MiB")
        if maxmem is not None:
            self.in_range("maxmem", maxmem, 1, _MAX_MEMORY_MIB, " MiB")
        if memory is None:
            memory = maxmem if maxmem is not None else DEFAULT_MEMORY_MIB
        if maxmem is None:
            maxmem = memory
        if maxmem < memory:
            raise self.fail(
                "maxmem", f"maxmem ({maxmem} MiB) must be at least memory ({memory} MiB)"
            )
        return memory, maxmem

    def vcpus(self) -> tuple[int, int]:
        what = "a number of vCPUs"
        vcpus = self.number("vcpus", what)
        maxvcpus = self.number("maxvcpus", what)
        if vcpus is None:
            vcpus = 1
        else:
            self.in_range("vcpus", vcpus, 1, HVM_MAX_VCPUS)
        if maxvcpus is None:
            return vcpus, vcpus
        self.in_range("maxvcpus", maxvcpus, 1, HVM_MAX_VCPUS)
        if maxvcpus < vcpus:
            raise self.fail("maxvcpus", f"maxvcpus ({maxvcpus}) must be at least vcpus ({vcpus})")
        return vcpus, maxvcpus

    def cpu_set(self, key: str) -> tuple[int, ...] | None:
        """xl's CPU list: "all", or numbers and ranges such as "0-3,6" (one set for every vCPU)."""
        if key in self.cfg and isinstance(self.cfg[key], list):
            raise self.fail(key, f'{key}: per-vCPU lists are not supported yet; give one '
                                 'string for every vCPU, such as "0-1"')
        text = self.string(key)
        if text is None or text.strip() == "all":
            return None
        if text.startswith("nodes:"):
            raise self.fail(key, f'{key}: "nodes:" lists are not supported yet; list CPUs')
        try:
            return tuple(parse_cpu_list(text))
        except ValueError as e:
            raise self.fail(key, f"{key}: {e}") from None

    def optional_range(self, key: str, what: str, low: int, high: int) -> int | None:
        value = self.number(key, what)
        return None if value is None else self.in_range(key, value, low, high)

    def max_event_channels(self) -> int:
        value = self.number("max_event_channels", "a number of event channels")
        if value is None:
            return DEFAULT_MAX_EVENT_CHANNELS
        return self.in_range("max_event_channels", value, 1, 0xFFFF_FFFF)

    def action(self, key: str, default: str) -> str:
        text = self.string(key)
        if text is None:
            return default
        if text not in SHUTDOWN_ACTIONS:
            choices = ", ".join(SHUTDOWN_ACTIONS)
            raise self.fail(key, f'{key} must be one of {choices}; got "{_quote(text)}"')
        return text


def _prefix_of(text: str, words: tuple[str, ...]) -> str | None:
    """The first of ``words`` that starts with ``text`` (xl's strncmp match)."""
    return next((word for word in words if word.startswith(text)), None)


def _is_file(path: Path) -> bool:
    try:
        return path.exists() and not path.is_dir()
    except (OSError, ValueError):  # name too long, embedded NUL, ...
        return False


def _quote(text: str) -> str:
    """``text`` for a one-line message: escapes anything unprintable."""
    return text if text.isprintable() else repr(text)[1:-1]
